"""Attention across layers for one position: the raw flow per layer, and attention rollout.

``attention_flow`` is the guide's ``trace_attention_flow``: for each layer, the attention
row of the chosen position averaged over heads, ``mean_h A_l[h, pos, :]``.

``attention_rollout`` composes layers (Abnar & Zuidema, 2020). Each layer's
head-averaged attention is mixed with the identity for the residual connection,
``R_l = (1 - residual_weight) * mean_h A_l + residual_weight * I`` (rows still sum to 1),
and the position's row is carried down from the last layer to the first:
``r = e_pos R_{L-1} R_{L-2} ... R_l``. The row after reaching layer ``l`` says how much of
the position's final representation traces back to each token's input to layer ``l``.
Only rows are ever multiplied (``r @ R_l`` in query chunks), so memory stays ``O(T)``
per chunk row, never ``T x T`` for every head.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from finwidget.analysis.prediction import resolve_position
from finwidget.analysis.source import (
    as_attention_source,
    check_layers,
    layer_rows,
    rows_per_chunk,
    token_columns,
)
from finwidget.errors import InputError
from finwidget.statement.aggregate import aggregate_to_spans
from finwidget.statement.layout import StatementLayout


def attention_flow(attention, position: int = -1, layout: StatementLayout | None = None, layers=None,
                   batch: int = 0) -> pd.DataFrame:
    """Head-averaged attention from ``position`` in every layer.

    Args:
        position: token index among the row's real tokens (the layout's, when given);
            -1 is the last (the answer position).
        layout: when given, keys are spans (attention summed over each span's tokens).

    Returns:
        DataFrame with ``layer``, ``key`` (token index, or span index with a layout),
        ``text`` (token or span text with a layout, else None), ``attention``.
    """
    source = as_attention_source(attention)
    layers = check_layers(source, layers)
    cols = token_columns(source, batch, layout)
    pos = resolve_position(position, cols.count)
    frames = []
    for layer in layers:
        row = layer_rows(source, layer, batch, cols, pos, pos + 1)[:, 0, :].mean(0).cpu()  # [n]
        frames.append(_row_frame(layer, row, layout))
    return pd.concat(frames, ignore_index=True)


def trace_attention_flow(attention, target_token_pos: int, layout: StatementLayout | None = None,
                         batch: int = 0) -> dict[str, torch.Tensor]:
    """The guide's ``trace_attention_flow``: ``{'layer_i': [T] float32}`` head-averaged rows
    (over the row's real tokens, or spans when ``layout`` is given)."""
    frame = attention_flow(attention, target_token_pos, layout=layout, batch=batch)
    return {f"layer_{layer}": torch.tensor(group["attention"].to_numpy())
            for layer, group in frame.groupby("layer", sort=True)}


def attention_rollout(
    attention,
    position: int = -1,
    layout: StatementLayout | None = None,
    residual_weight: float = 0.5,
    batch: int = 0,
    max_bytes: int | None = None,
) -> pd.DataFrame:
    """Attention rollout of ``position`` down through every captured layer.

    Needs every layer 0..L-1 captured (a gap would skip a layer's mixing).

    Returns:
        DataFrame with ``layer`` (rollout down to this layer's input), ``key`` (token or
        span index), ``text``, ``attention`` (sums to 1 over keys for each layer).
    """
    if not 0.0 <= residual_weight <= 1.0:
        raise InputError(f"residual_weight must be in [0, 1], got {residual_weight!r}")
    source = as_attention_source(attention)
    layers = check_layers(source, None)
    if layers != list(range(source.num_layers)):
        raise InputError(
            f"attention rollout composes every layer, but only layers {layers} were captured; "
            "capture all layers (capture_attention(model, layers=None))"
        )
    cols = token_columns(source, batch, layout)
    n = cols.count
    pos = resolve_position(position, n)
    carried = torch.zeros(n, dtype=torch.float64)
    carried[pos] = 1.0
    step = rows_per_chunk(source.num_heads, n, max_bytes)
    frames = []
    for layer in reversed(layers):
        mixed = residual_weight * carried
        live = torch.nonzero(carried).flatten()
        if live.numel():
            first, last = int(live[0]), int(live[-1]) + 1
            for start in range(first, last, step):
                stop = min(last, start + step)
                block = layer_rows(source, layer, batch, cols, start, stop).mean(0).double().cpu()  # [c, n]
                mixed += (1.0 - residual_weight) * (carried[start:stop] @ block)
        carried = mixed
        frames.append(_row_frame(layer, carried.float(), layout))
    return pd.concat(frames[::-1], ignore_index=True)


def _row_frame(layer: int, row: torch.Tensor, layout: StatementLayout | None) -> pd.DataFrame:
    if layout is None:
        return pd.DataFrame({"layer": layer, "key": range(row.numel()), "text": None,
                             "attention": row.numpy()})
    by_span = aggregate_to_spans(row, layout)
    return pd.DataFrame({"layer": layer, "key": range(layout.num_spans),
                         "text": [s.text for s in layout.spans], "attention": np.asarray(by_span)})
