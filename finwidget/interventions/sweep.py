"""Sweeping interventions over every head: which heads does the prediction depend on?

:func:`sweep_heads` applies one intervention per head (zero-ablation by default), for
every head or a chosen set, on one statement or many, through the exact fast path of
:class:`~finwidget.interventions.cached_run.CachedRun` (each head's run resumes at its
layer; sets are batched where the device benefits). The result is a tidy DataFrame;
:func:`summarize_sweep` turns a many-statement sweep into one row per head.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import pandas as pd
import torch

from finwidget.errors import InputError
from finwidget.interventions.applying import check_values_fit
from finwidget.interventions.cached_run import CachedRun, encode_statements, statement_texts
from finwidget.interventions.head_outputs import HeadOutputs
from finwidget.interventions.modes import mode_named
from finwidget.interventions.spec import HeadIntervention, InterventionSet
from finwidget.model_parts import ModelGeometry
from finwidget.task import EarningsTask, model_device

SWEEP_COLUMNS = ["layer", "head", "mode", "logit_diff", "clean_logit_diff", "change", "flipped"]


def _heads_to_sweep(geometry: ModelGeometry, heads) -> list[tuple[int, int]]:
    if heads is None:
        return [(layer, head) for layer in range(geometry.num_layers) for head in range(geometry.num_heads)]
    chosen = []
    for item in heads:
        try:
            layer, head = item
        except (TypeError, ValueError):
            raise InputError(f"heads must be (layer, head) pairs, got {item!r}") from None
        chosen.append(geometry.check_head(layer, head))
    if not chosen:
        raise InputError("heads is empty; pass None for every head or at least one (layer, head)")
    return list(dict.fromkeys(chosen))


def _statement_chunks(task, statements, batch_size, device) -> list[dict[str, torch.Tensor]]:
    texts = statement_texts(statements)
    if texts is not None:
        return [task.encode(texts[i:i + batch_size], device=device) for i in range(0, len(texts), batch_size)]
    batch = encode_statements(task, statements, device, "statements")
    n = batch["input_ids"].shape[0]
    return [{k: v[i:i + batch_size] for k, v in batch.items()} for i in range(0, n, batch_size)]


def sweep_heads(
    model,
    task: EarningsTask,
    statements_or_batch,
    mode: str = "zero",
    heads: Iterable[tuple[int, int]] | None = None,
    progress: bool = True,
    value: float | None = None,
    reference=None,
    batch_size: int = 8,
    max_batch_tokens: int | None = None,
) -> pd.DataFrame:
    """Apply ``mode`` to each head in turn and report the task's answer.

    Args:
        model: a Hugging Face causal LM.
        task: the :class:`~finwidget.task.EarningsTask` (prompt and answer words).
        statements_or_batch: a statement (str), a list of statements (str or demo
            ``Statement``), or an encoded left-padded batch.
        mode: ``"zero" | "constant" | "mean" | "scale"`` (``"resample"`` needs a source per
            statement: use ``CachedRun.logit_diffs`` directly).
        heads: ``(layer, head)`` pairs to sweep; None: every head.
        progress: show a ``tqdm.auto`` progress bar.
        value: the constant or scale factor for ``"constant"``/``"scale"``.
        reference: statements (or a batch, or :class:`HeadOutputs`) to average over for ``"mean"``.
        batch_size: statements per cached run.
        max_batch_tokens: tokens per call when batching heads (default: by device).

    Returns:
        DataFrame with one row per head (and statement): ``layer, head, mode,
        logit_diff`` (with the head changed), ``clean_logit_diff``, ``change``
        (``logit_diff - clean_logit_diff``), ``flipped`` (the predicted label changed),
        plus ``statement`` (index into the statements) when there is more than one.
    """
    if mode_named(mode).needs_source:
        raise InputError(f"sweep_heads does not take mode={mode!r}; use CachedRun(...).logit_diffs with source=")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
    geometry = ModelGeometry.of(model)
    chosen = _heads_to_sweep(geometry, heads)
    # a bad mode or value fails before any model work
    check_values_fit([HeadIntervention(layer, head, mode, value=value) for layer, head in chosen], model)
    device = model_device(model)
    chunks = _statement_chunks(task, statements_or_batch, batch_size, device)
    if mode_named(mode).needs_reference:
        if reference is None:
            raise InputError(f"mode {mode!r} needs {mode_named(mode).what_it_needs()}")
        if not isinstance(reference, HeadOutputs):
            reference = HeadOutputs.record(
                model, encode_statements(task, reference, device, "reference"),
                layers=sorted({layer for layer, _ in chosen}),
            )
    from tqdm.auto import tqdm

    bar = tqdm(total=len(chosen) * len(chunks), desc="sweeping heads", unit="head", disable=not progress)
    frames = []
    first_statement = 0
    try:
        for batch in chunks:
            run = CachedRun(model, task, batch)
            frame = sweep_run(run, chosen, mode, value, reference, progress=bar, max_batch_tokens=max_batch_tokens)
            frame["statement"] += first_statement
            frames.append(frame)
            first_statement += run.batch_size
    finally:
        bar.close()
    result = pd.concat(frames, ignore_index=True)
    if first_statement == 1:
        return cast(pd.DataFrame, result[SWEEP_COLUMNS]).reset_index(drop=True)
    result = result.sort_values(["statement", "layer", "head"], kind="stable").reset_index(drop=True)
    return cast(pd.DataFrame, result[SWEEP_COLUMNS + ["statement"]])


def sweep_run(
    run: CachedRun,
    heads: list[tuple[int, int]],
    mode: str = "zero",
    value: float | None = None,
    reference=None,
    progress=None,
    max_batch_tokens: int | None = None,
) -> pd.DataFrame:
    """The sweep of one cached run: ``mode`` applied to each of ``heads`` (checked
    ``(layer, head)`` pairs) alone, through ``run``'s exact fast path.

    ``progress``: anything with ``update(n)`` (a tqdm bar), told as heads finish.
    Returns the ``sweep_heads`` columns plus ``statement`` (the row in ``run``'s batch),
    ordered by head, then statement.
    """
    sets = [InterventionSet([HeadIntervention(layer, head, mode, value=value)]) for layer, head in heads]
    diffs = run.logit_diffs(sets, reference=reference, max_batch_tokens=max_batch_tokens, progress=progress)
    rows_per_head = run.batch_size
    frame = pd.DataFrame({
        "layer": [layer for layer, _ in heads for _ in range(rows_per_head)],
        "head": [head for _, head in heads for _ in range(rows_per_head)],
        "mode": mode,
        "logit_diff": diffs.reshape(-1).numpy().astype("float64"),
        "clean_logit_diff": run.clean_logit_diff.repeat(len(heads)).numpy().astype("float64"),
        "statement": list(range(rows_per_head)) * len(heads),
    })
    frame["change"] = frame["logit_diff"] - frame["clean_logit_diff"]
    frame["flipped"] = (frame["logit_diff"] > 0) != (frame["clean_logit_diff"] > 0)
    return cast(pd.DataFrame, frame[SWEEP_COLUMNS + ["statement"]])


def summarize_sweep(sweep: pd.DataFrame) -> pd.DataFrame:
    """One row per head of a sweep: ``mean_change``, ``mean_abs_change``, ``flip_rate``,
    ``n_statements``; sorted by ``mean_abs_change`` (largest effect first)."""
    missing = {"layer", "head", "change", "flipped"} - set(sweep.columns)
    if missing:
        raise InputError(f"not a sweep_heads result: missing columns {sorted(missing)}")
    grouped = sweep.assign(abs_change=sweep["change"].abs()).groupby(["layer", "head"], sort=True)
    summary = pd.DataFrame({
        "mean_change": grouped["change"].mean(),
        "mean_abs_change": grouped["abs_change"].mean(),
        "flip_rate": grouped["flipped"].mean(),
        "n_statements": grouped["change"].size(),
    }).reset_index()
    return summary.sort_values("mean_abs_change", ascending=False, kind="stable").reset_index(drop=True)
