"""Attribution patching: every head's intervention effect, estimated from one backward pass.

The effect of replacing head ``h``'s output ``z`` (its slice of the ``o_proj`` input,
``[T, D]`` per statement; shape letters: :mod:`finwidget.model_parts`) by ``z'`` on the
logit difference ``LD`` is, to first order, ``sum_t grad_z LD[t] . (z'[t] - z[t])``. One forward and one backward pass give
``grad_z LD`` for every head of every layer at once; the estimate for all heads then
costs a few dot products. ``z'`` is what the mode's object
(:mod:`~finwidget.interventions.modes`) replaces the output with: 0 (zero ablation), a
constant, the reference mean, ``factor * z`` (scale), or, for patching, the head's output
on a corrupted statement (the ``resample`` mode's replacement).

The estimate is exact for changes the network responds to linearly and drifts where
it does not (e.g. a head whose removal saturates a later softmax). Compare it with
the real sweep (:func:`rank_agreement`) before trusting it on a new model.
"""

from __future__ import annotations

from typing import cast

import pandas as pd
import torch

from finwidget.errors import InputError
from finwidget.interventions.applying import check_values_fit
from finwidget.interventions.cached_run import encode_statements
from finwidget.interventions.head_outputs import HeadOutputs
from finwidget.interventions.modes import RESAMPLE, mode_named
from finwidget.interventions.spec import HeadIntervention
from finwidget.model_parts import ModelGeometry, embed_tokens, hook_head_outputs, remove_hooks
from finwidget.task import EarningsTask, check_finite_answer, eval_mode, model_device


class _GradientRecording:
    """Context: o_proj inputs kept in the autograd graph; the input embeddings made a
    leaf that requires grad, so the graph exists even for frozen weights."""

    def __init__(self, model, layers):
        self.model = model
        self.layers = list(layers)
        self.head_outputs: dict[int, torch.Tensor] = {}
        self._handles = []

    def __enter__(self):
        def embed_leaf(module, args, output):
            return output.detach().requires_grad_(True)

        def keeper(layer):
            def hook(module, args):
                self.head_outputs[layer] = args[0]
            return hook

        self._handles.append(embed_tokens(self.model).register_forward_hook(embed_leaf))
        try:
            self._handles += hook_head_outputs(self.model, self.layers, keeper)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        handles, self._handles = self._handles, []
        remove_hooks(handles)
        return False


def head_output_gradients(model, task: EarningsTask, batch) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor], torch.Tensor]:
    """One forward + one backward pass on ``batch``.

    Returns ``(outputs, gradients, logit_diff)``: per layer, the head outputs
    ``[B, T, H*d]`` and the gradient of each row's logit difference with respect to
    them (same shape, float32), and the ``[B]`` clean logit differences. Weights'
    ``.grad`` are not touched.
    """
    geometry = ModelGeometry.of(model)
    layers = range(geometry.num_layers)
    with eval_mode(model), torch.enable_grad(), _GradientRecording(model, layers) as recording:
        out = model(**batch, use_cache=False, logits_to_keep=1)
        logit_diff = task.logit_diff(out.logits[:, -1, :])
        check_finite_answer(logit_diff.detach(), "in the clean run (no intervention)")
        outputs = [recording.head_outputs[layer] for layer in layers]
        gradients = torch.autograd.grad(logit_diff.sum(), outputs)
    return (
        {layer: outputs[layer].detach() for layer in layers},
        {layer: gradients[layer].detach().float() for layer in layers},
        logit_diff.detach().float().cpu(),
    )


def attribution_patching(
    model,
    task: EarningsTask,
    statements,
    corrupted=None,
    mode: str = "zero",
    value: float | None = None,
    reference=None,
) -> pd.DataFrame:
    """Estimate every head's effect on the logit difference from one forward + backward pass.

    Args:
        model: a Hugging Face causal LM.
        task: the :class:`~finwidget.task.EarningsTask`.
        statements: statement(s) or an encoded batch (the clean run).
        corrupted: for patching: statements of the same token lengths whose head outputs
            are patched into the clean run (one per clean statement). Then ``mode`` is ignored.
        mode: any mode but ``"resample"`` (``"zero" | "constant" | "mean" | "scale"``) when not
            patching; patching is ``corrupted=``.
        value: the constant or factor for ``"constant"``/``"scale"``.
        reference: statements / batch / :class:`HeadOutputs` for ``"mean"``.

    Returns:
        DataFrame, one row per head (and statement): ``layer, head, mode,
        estimated_change, clean_logit_diff`` (+ ``statement`` when several), where
        ``mode`` is ``"patch"`` when patching. Compare with ``sweep_heads``'s ``change``.
    """
    geometry = ModelGeometry.of(model)
    device = model_device(model)
    batch = encode_statements(task, statements, device, "statements")
    if corrupted is None:
        replacing = mode_named(mode)
        if replacing.needs_source:
            raise InputError(f"attribution_patching does not take mode={mode!r}; pass corrupted= to patch "
                             "each head's output from other statements")
        if replacing.takes_value and value is None:
            raise InputError(f"mode {mode!r} needs value= ({replacing.value_meaning})")
        # the value is checked as an intervention's would be: finite and inside the model's dtype
        check_values_fit([HeadIntervention(0, 0, mode, value=value)], model)
        if replacing.needs_reference and reference is None:
            raise InputError(f"mode {mode!r} needs {replacing.what_it_needs()}")
        recorded_from = reference
    else:
        mode, replacing = "patch", RESAMPLE
        corrupted_batch = encode_statements(task, corrupted, device, "corrupted")
        if not torch.equal(corrupted_batch["attention_mask"].cpu(), batch["attention_mask"].cpu()):
            raise InputError(
                "corrupted statements must have the same token lengths as the clean ones (clean: "
                f"{batch['attention_mask'].sum(1).tolist()}, corrupted: "
                f"{corrupted_batch['attention_mask'].sum(1).tolist()})"
            )
        recorded_from = HeadOutputs.record(model, corrupted_batch, what="corrupted")
    if replacing.reads_recorded_outputs and not isinstance(recorded_from, HeadOutputs):
        recorded_from = HeadOutputs.record(model, encode_statements(task, recorded_from, device, "reference"))

    outputs, gradients, clean = head_output_gradients(model, task, batch)
    mask = batch["attention_mask"].to(device).float()
    n_heads, d = geometry.num_heads, geometry.head_dim
    rows = []
    for layer in range(geometry.num_layers):
        z = outputs[layer].float()  # [B, T, H*D], every head of the layer at once
        recorded = replacing.recorded(recorded_from, layer) if replacing.reads_recorded_outputs else None
        replacement = replacing.replace(z, value, None if recorded is None else recorded.to(z.device).float())
        delta = replacement - z
        contribution = (gradients[layer].to(z.device) * delta) * mask.to(z.device).unsqueeze(-1)
        per_head = contribution.view(*contribution.shape[:2], n_heads, d).sum(dim=(1, 3))  # [B, H]
        rows.append(per_head.cpu())
    estimates = torch.stack(rows)  # [L, B, H]
    if not bool(torch.isfinite(estimates).all()):
        check_finite_answer(estimates.permute(0, 2, 1).reshape(-1, estimates.shape[1]),
                            f"in attribution patching's estimate (mode {mode!r})")
    n_statements = estimates.shape[1]
    frame = pd.DataFrame({
        "layer": [l for l in range(geometry.num_layers) for _ in range(n_statements) for _ in range(n_heads)],
        "head": [h for _ in range(geometry.num_layers) for _ in range(n_statements) for h in range(n_heads)],
        "mode": mode,
        "estimated_change": estimates.reshape(-1).numpy().astype("float64"),
        "clean_logit_diff": clean.repeat_interleave(n_heads).repeat(geometry.num_layers).numpy().astype("float64"),
        "statement": [s for _ in range(geometry.num_layers) for s in range(n_statements) for _ in range(n_heads)],
    })
    if n_statements == 1:
        return frame.drop(columns="statement")
    return frame.sort_values(["statement", "layer", "head"], kind="stable").reset_index(drop=True)


def rank_agreement(estimate: pd.DataFrame, sweep: pd.DataFrame, statistic: str = "mean_abs") -> float:
    """Spearman rank correlation between an attribution estimate and a real sweep.

    Args:
        estimate: :func:`attribution_patching`'s result (``estimated_change``).
        sweep: the real effects (``change``), e.g. :func:`sweep_heads`'s result, with the
            same heads (and statements).
        statistic: ``"mean_abs"`` ranks heads by their mean absolute effect over statements
            (how much the prediction depends on the head, whatever the direction);
            ``"mean"`` by the mean signed effect; ``"per_statement"`` ranks every
            (head, statement) effect with its sign.
    """
    from scipy.stats import spearmanr

    keys = ["layer", "head"] + (["statement"] if "statement" in estimate.columns and "statement" in sweep.columns else [])
    joined = estimate[keys + ["estimated_change"]].merge(sweep[keys + ["change"]], on=keys, how="inner")
    if statistic == "per_statement":
        a, b = joined["estimated_change"], joined["change"]
    elif statistic in ("mean_abs", "mean"):
        values = joined[["estimated_change", "change"]]
        if statistic == "mean_abs":
            values = values.abs()
        grouped = cast(pd.DataFrame, values.groupby([joined["layer"], joined["head"]]).mean())
        a, b = grouped["estimated_change"], grouped["change"]
    else:
        raise InputError(f"statistic must be 'mean_abs', 'mean' or 'per_statement', got {statistic!r}")
    if len(a) < 3:
        raise InputError(f"need at least 3 heads in common to rank, got {len(a)}")
    return float(spearmanr(a, b).statistic)  # pyright: ignore[reportAttributeAccessIssue] - scipy's result type
