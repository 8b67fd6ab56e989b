"""What each head does: one row of measurements per (layer, head), and a head-type label.

All measurements average over the query rows of one statement's real tokens, leaving
out its first token (which can attend only to itself). For query ``i`` (0-based among
real tokens) the causal window holds tokens ``0..i``.

Columns of ``head_specialization``:

- ``layer``, ``head``: query-head index (Qwen2 GQA: it reads KV head ``head // (H // Hkv)``).
- ``kv_head``: the key/value head it reads.
- ``self_attention``: mean ``A[i, i]`` (diagonal).
- ``sink_attention``: mean ``A[i, 0]`` (the first real token, the usual "attention sink").
- ``previous_token``: mean ``A[i, i-1]``.
- ``entropy``: mean normalized entropy ``H(A[i, :]) / log(i + 1)``, 0 = one key, 1 = uniform.
- ``financial_attention``, ``number_attention``, ``year_attention``: mean attention mass on the
  tokens of financial spans (terms and line item names whose category is a
  financial one), of numbers, of years.
- ``financial_share``, ``number_share``, ``year_share``: the same under uniform attention
  over the causal window (the fraction of those tokens in ``0..i``), the baseline.
- ``financial_lift``, ``number_lift``, ``year_lift``: attention / share (1 = no preference).
- ``head_type``: see ``HeadTypeThresholds``.

Without a layout the span columns are NaN and the label uses the positional and
entropy rules only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from finwidget.analysis.metrics import row_entropy
from finwidget.analysis.source import (
    as_attention_source,
    check_layers,
    layer_rows,
    rows_per_chunk,
    token_columns,
)
from finwidget.statement.layout import StatementLayout

HEAD_TYPES = ("self", "sink", "previous-token", "financial", "numeric", "temporal", "diffuse", "mixed")
_CONTENT = (("financial", "financial"), ("number", "numeric"), ("year", "temporal"))


@dataclass(frozen=True)
class HeadTypeThresholds:
    """Rules that turn a head's measurements into its ``head_type``, applied in order:

    1. positional: the largest of ``self_attention`` ("self"), ``sink_attention`` ("sink")
       and ``previous_token`` ("previous-token"), if it is at least ``positional``;
    2. content: among financial / numeric / temporal attention with mass at least
       ``content_mass`` *and* lift at least ``content_lift``, the one with the largest lift;
    3. "diffuse" if ``entropy`` is at least ``diffuse_entropy``;
    4. otherwise "mixed".
    """

    positional: float = 0.5
    content_mass: float = 0.3
    content_lift: float = 2.0
    diffuse_entropy: float = 0.8


def classify_head(row: dict, thresholds: HeadTypeThresholds = HeadTypeThresholds()) -> str:
    """The head type of one row of ``head_specialization`` (see ``HeadTypeThresholds``)."""
    positional = {
        "self": row["self_attention"],
        "sink": row["sink_attention"],
        "previous-token": row["previous_token"],
    }
    name, best = max(positional.items(), key=lambda kv: kv[1])
    if best >= thresholds.positional:
        return name
    content = []
    for prefix, label in _CONTENT:
        mass, lift = row.get(f"{prefix}_attention"), row.get(f"{prefix}_lift")
        if mass is None or lift is None or not np.isfinite(mass) or not np.isfinite(lift):
            continue
        if mass >= thresholds.content_mass and lift >= thresholds.content_lift:
            content.append((lift, label))
    if content:
        return max(content)[1]
    if row["entropy"] >= thresholds.diffuse_entropy:
        return "diffuse"
    return "mixed"


def head_specialization(
    attention,
    layout: StatementLayout | None = None,
    layers=None,
    batch: int = 0,
    max_bytes: int | None = None,
    thresholds: HeadTypeThresholds = HeadTypeThresholds(),
) -> pd.DataFrame:
    """One row per (layer, head) of measurements and a head-type label.

    Args:
        attention: an ``AttentionCapture`` (or anything ``as_attention_source`` takes).
        layout: ``read_statement`` of the prompt the model ran, for the span columns.
        layers: layers to measure (default: every captured layer).
        batch: which sequence of the captured batch.
        max_bytes: cap on the float32 attention one chunk holds (default 64 MiB); the
            rows of a layer are processed in chunks of ``max_bytes / (H * T * 4)``.
        thresholds: the head-type rules.

    Returns:
        DataFrame with the columns listed in this module's docstring.
    """
    source = as_attention_source(attention)
    layers = check_layers(source, layers)
    cols = token_columns(source, batch, layout)
    n = cols.count
    masks = _span_masks(layout, n)
    # Uniform baseline per query row i: fraction of marked tokens in 0..i.
    window = torch.arange(1, n + 1, dtype=torch.float64)
    shares = {k: (torch.cumsum(m.double(), 0) / window) for k, m in masks.items()}
    queries = torch.arange(1, n)  # the first token is left out
    kv_group = source.num_heads // getattr(source, "num_kv_heads", source.num_heads)

    names = list(masks)
    # [n, k] float32: one column per token set, so a matmul gives each row's mass on each set
    mask_matrix = torch.stack([masks[k].float() for k in names], dim=1) if names else None

    records = []
    for layer in layers:
        sums = {name: torch.zeros(source.num_heads, dtype=torch.float64) for name in
                ("self_attention", "sink_attention", "previous_token", "entropy",
                 *(f"{k}_attention" for k in names))}
        step = rows_per_chunk(source.num_heads, n, max_bytes)
        for start in range(1, n, step):
            stop = min(n, start + step)
            block = layer_rows(source, layer, batch, cols, start, stop)  # [H, c, n] float32
            device = block.device
            # row r of the block is token start + r: its own column is on the diagonal at offset start
            sums["self_attention"] += block.diagonal(offset=start, dim1=1, dim2=2).sum(-1).double().cpu()
            sums["previous_token"] += block.diagonal(offset=start - 1, dim1=1, dim2=2).sum(-1).double().cpu()
            sums["sink_attention"] += block[:, :, 0].sum(-1).double().cpu()
            # [H, c]: -sum p log p / log(i + 1), the grid's entropy (finwidget.analysis.metrics)
            sums["entropy"] += row_entropy(block, range(start, stop)).sum(-1).double().cpu()
            if mask_matrix is not None:
                mass = (block @ mask_matrix.to(device)).sum(1).double().cpu()  # [H, k]
                for k, name in enumerate(names):
                    sums[f"{name}_attention"] += mass[:, k]
        count = max(1, queries.numel())
        for head in range(source.num_heads):
            row = {"layer": layer, "head": head, "kv_head": head // kv_group}
            for name, total in sums.items():
                row[name] = float(total[head] / count) if n > 1 else math.nan
            for name in ("financial", "number", "year"):
                if name in masks:
                    share = float(shares[name][1:].mean()) if n > 1 else math.nan
                    row[f"{name}_share"] = share
                    row[f"{name}_lift"] = row[f"{name}_attention"] / share if share > 0 else math.nan
                else:
                    row[f"{name}_attention"] = row[f"{name}_share"] = row[f"{name}_lift"] = math.nan
            row["head_type"] = classify_head(row, thresholds)
            records.append(row)
    columns = ["layer", "head", "kv_head", "self_attention", "sink_attention", "previous_token", "entropy",
               "financial_attention", "number_attention", "year_attention",
               "financial_share", "number_share", "year_share",
               "financial_lift", "number_lift", "year_lift", "head_type"]
    return pd.DataFrame.from_records(records, columns=columns)


def _span_masks(layout: StatementLayout | None, n: int) -> dict[str, torch.Tensor]:
    """``{"financial"|"number"|"year": [n] bool}`` token masks, empty without a layout."""
    if layout is None:
        return {}
    return {
        "financial": torch.from_numpy(layout.token_mask(layout.financial_spans())[:n]),
        "number": torch.from_numpy(layout.token_mask(layout.select(kinds=["number"]))[:n]),
        "year": torch.from_numpy(layout.token_mask(layout.select(kinds=["year"]))[:n]),
    }
