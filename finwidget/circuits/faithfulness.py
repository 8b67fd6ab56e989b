"""Faithfulness of a circuit: ablate everything outside it, then the circuit itself.

For statements ``b`` with clean answer ``M_b`` (the logit difference), heads are ablated
with ``mode`` (``"mean"``: each head's output replaced by its average over reference
statements; ``"zero"``). With ``A_b`` the answer when *every* head is ablated (the
baseline: what the model says with no head information; embeddings and MLPs still run),
``O_b`` when every head outside the circuit is ablated and ``C_b`` when the circuit's heads
are ablated, and ``s_b = sign(M_b - A_b)``:

    kept_when_outside_ablated    = sum_b s_b (O_b - A_b) / sum_b s_b (M_b - A_b)
    removed_when_circuit_ablated = 1 - sum_b s_b (C_b - A_b) / sum_b s_b (M_b - A_b)

i.e. the share of the clean answer's distance from the all-ablated baseline that the
circuit alone keeps, and the share that ablating the circuit takes away (1.0: the answer
falls all the way to the baseline). Pooling the sums over statements keeps a statement
whose baseline happens to sit near its answer from dominating. The raw shares of the clean
logit difference itself (``sum s O / sum s M`` with ``s = sign(M)``, and ``1 -`` that for
``C``) are reported next to them by :func:`faithfulness_table`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from finwidget.circuits.graph import FaithfulnessReport
from finwidget.errors import InputError
from finwidget.interventions import CachedRun, InterventionSet
from finwidget.model_parts import ModelGeometry


def _ablation_runs(model, task, statements, heads, reference, mode: str):
    if mode not in ("mean", "zero"):
        raise InputError(f"faithfulness mode must be 'mean' or 'zero', got {mode!r}")
    if mode == "mean" and reference is None:
        raise InputError("faithfulness with mode='mean' needs reference= (statements to average each head's "
                         "output over, or HeadOutputs); or use mode='zero'")
    geometry = ModelGeometry.of(model)
    circuit = sorted({geometry.check_head(l, h) for l, h in heads})
    if not circuit:
        raise InputError("the circuit has no heads; nothing to measure")
    everything = [(l, h) for l in range(geometry.num_layers) for h in range(geometry.num_heads)]
    outside = [head for head in everything if head not in circuit]
    run = CachedRun(model, task, statements)
    sets = [InterventionSet.ablating(group, mode=mode) if group else InterventionSet([])
            for group in (outside, circuit, everything)]
    diffs = run.logit_diffs(sets, reference=reference if mode == "mean" else None)  # [3, B]
    return run.clean_logit_diff, diffs[0], diffs[1], diffs[2]


def faithfulness_of_circuits(model, task, statements, circuits: Sequence[Sequence[tuple[int, int]]], *,
                             reference=None, mode: str = "mean", max_batch_tokens: int | None = None
                             ) -> list[dict[str, float]]:
    """The shares (``kept``, ``removed``, ``kept_raw``, ``removed_raw``; see the module docstring)
    of each circuit in ``circuits`` (lists of ``(layer, head)``), from one cached clean run and
    one batched call: ``2 * len(circuits) + 1`` ablated forward passes in all (the all-ablated
    baseline is shared)."""
    if mode not in ("mean", "zero"):
        raise InputError(f"faithfulness mode must be 'mean' or 'zero', got {mode!r}")
    if mode == "mean" and reference is None:
        raise InputError("faithfulness with mode='mean' needs reference= (statements to average each head's "
                         "output over, or HeadOutputs); or use mode='zero'")
    geometry = ModelGeometry.of(model)
    everything = [(l, h) for l in range(geometry.num_layers) for h in range(geometry.num_heads)]
    sets = [InterventionSet.ablating(everything, mode=mode)]
    for heads in circuits:
        circuit = sorted({geometry.check_head(l, h) for l, h in heads})
        if not circuit:
            raise InputError("the circuit has no heads; nothing to measure")
        outside = [head for head in everything if head not in circuit]
        sets.append(InterventionSet.ablating(outside, mode=mode) if outside else InterventionSet([]))
        sets.append(InterventionSet.ablating(circuit, mode=mode))
    run = CachedRun(model, task, statements)
    diffs = run.logit_diffs(sets, reference=reference if mode == "mean" else None,
                            max_batch_tokens=max_batch_tokens)  # [1 + 2n, B]
    return [_shares(run.clean_logit_diff, diffs[1 + 2 * i], diffs[2 + 2 * i], diffs[0]) for i in range(len(circuits))]


def faithfulness_table(model, task, statements, heads: Sequence[tuple[int, int]], *, reference=None,
                       mode: str = "mean") -> pd.DataFrame:
    """One row per statement: ``clean, outside_ablated, circuit_ablated, all_ablated`` logit
    differences (see the module docstring), plus the pooled shares in ``DataFrame.attrs``:
    ``kept``, ``removed`` (baseline-relative) and ``kept_raw``, ``removed_raw``."""
    clean, outside, circuit, everything = _ablation_runs(model, task, statements, heads, reference, mode)
    frame = pd.DataFrame({"statement": range(len(clean)), "clean": clean.numpy(), "outside_ablated": outside.numpy(),
                          "circuit_ablated": circuit.numpy(), "all_ablated": everything.numpy()})
    frame.attrs.update(_shares(clean, outside, circuit, everything))
    return frame


def _shares(clean, outside, circuit, everything) -> dict[str, float]:
    sign = torch.where(clean - everything >= 0, 1.0, -1.0)
    span = float((sign * (clean - everything)).sum())
    raw_sign = torch.where(clean >= 0, 1.0, -1.0)
    raw_span = float((raw_sign * clean).sum())
    if span <= 0 or raw_span <= 0:
        raise InputError("the clean answers sit at the all-ablated baseline (or at 0): faithfulness is undefined")
    return {
        "kept": float((sign * (outside - everything)).sum()) / span,
        "removed": 1.0 - float((sign * (circuit - everything)).sum()) / span,
        "kept_raw": float((raw_sign * outside).sum()) / raw_span,
        "removed_raw": 1.0 - float((raw_sign * circuit).sum()) / raw_span,
    }


def measure_faithfulness(model, task_or_tokenizer, statements, heads: Sequence[tuple[int, int]], *,
                         reference=None, mode: str = "mean") -> FaithfulnessReport:
    """Faithfulness of the circuit made of ``heads`` (``[(layer, head), ...]``) on one or many
    ``statements`` (texts, demo statements or an encoded batch); see the module docstring."""
    from finwidget.circuits.find import as_task

    task = as_task(task_or_tokenizer)
    shares = _shares(*_ablation_runs(model, task, statements, heads, reference, mode))
    n = 1 if isinstance(statements, str) or hasattr(statements, "text") else len(statements["input_ids"]) \
        if isinstance(statements, dict) else len(statements)
    return FaithfulnessReport(mode, shares["kept"], shares["removed"], statements=n,
                              kept_raw=shares["kept_raw"], removed_raw=shares["removed_raw"])
