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
        recorded = _plain_softmax_inputs(source, layer, batch, cols)
        if recorded is not None:
            sums = _layer_sums_from_scores(*recorded, n, mask_matrix, names, max_bytes)
        else:
            sums = _layer_sums_from_rows(source, layer, batch, cols, n, mask_matrix, names, max_bytes)
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


_SUM_NAMES = ("self_attention", "sink_attention", "previous_token", "entropy")


def _empty_sums(num_heads: int, names) -> dict[str, torch.Tensor]:
    return {name: torch.zeros(num_heads, dtype=torch.float64)
            for name in (*_SUM_NAMES, *(f"{k}_attention" for k in names))}


def _layer_sums_from_rows(source, layer, batch, cols, n, mask_matrix, names, max_bytes) -> dict[str, torch.Tensor]:
    """``{measure: [H] float64}``: each measure summed over query rows ``1..n-1`` of one
    layer, from attention rows the source computes (any source: the general path)."""
    sums = _empty_sums(source.num_heads, names)
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
    return sums


def _plain_softmax_inputs(source, layer: int, batch: int, cols):
    """``(queries [H, n, d], keys [Hkv, n, d], scaling)`` of the layout's tokens when the
    source recorded them and the layer is plain causal softmax over one unbroken run of
    tokens (then the rows can be reduced as they are computed); else None."""
    recorded_qk = getattr(source, "recorded_queries_keys", None)
    if recorded_qk is None or not cols.contiguous or cols.count < 2:
        return None
    recorded = recorded_qk(layer, batch)
    if recorded is None:
        return None
    queries, keys, scaling = recorded
    if queries.shape[0] % keys.shape[0]:
        return None
    first = int(cols.columns[0])
    # Keys before `first` are the row's left padding: masked, so they hold no attention.
    return queries[:, first:first + cols.count], keys[:, first:first + cols.count], scaling


#: a finite stand-in for -inf in masked scores: exp() of it is 0 and 0 * it is 0 (not NaN)
_MASKED = -1e30


def _layer_sums_from_scores(queries, keys, scaling: float, n: int, mask_matrix, names,
                            max_bytes) -> dict[str, torch.Tensor]:
    """The same sums as :func:`_layer_sums_from_rows`, reduced while the scores are computed,
    with a forward pass's attention work: per block of query rows one ``q @ k.T`` (every
    query head of a KV group against its shared keys, no copies), one ``exp``, and row
    reductions of the unnormalized ``e = exp(s - max)``, divided by the row sums ``Z``
    afterwards. Entropy comes from the scores instead of ``p log p``:
    ``H = log Z - sum(e * (s - max)) / Z`` (no logarithm per cell).

    queries ``[H, n, d]``, keys ``[Hkv, n, d]`` (post-RoPE, of the layout's tokens).
    """
    num_heads, num_kv_heads, head_dim = queries.shape[0], keys.shape[0], queries.shape[-1]
    group = num_heads // num_kv_heads
    sums = _empty_sums(num_heads, names)
    device = queries.device
    keys = keys.float()
    # two [H, rows, keys] float32 tensors live at once (scores and exponentials)
    step = max(1, rows_per_chunk(num_heads, n, max_bytes) // 2)
    # [n, 1 + k]: a column of ones (the row sums Z) and one column per token set, so one
    # matmul reads the exponentials once for both
    reducer = torch.ones((n, 1), dtype=torch.float32, device=device)
    if mask_matrix is not None:
        reducer = torch.cat([reducer, mask_matrix.to(device)], dim=1)
    for start in range(1, n, step):
        stop = min(n, start + step)
        rows = stop - start
        # the scaling goes on the queries ([rows, d]), not on the scores ([rows, stop])
        grouped = (queries[:, start:stop].float() * scaling).reshape(num_kv_heads, group, rows, head_dim)
        scores = torch.matmul(grouped, keys[:, None, :stop].transpose(-1, -2))  # [Hkv, g, rows, stop]
        scores = scores.view(num_heads, rows, stop)
        if rows > 1:  # causal cut: only columns after the block's first row can be in a row's future
            positions = torch.arange(start, stop, device=device)
            future = torch.arange(start + 1, stop, device=device)[None, :] > positions[:, None]
            scores[:, :, start + 1:].masked_fill_(future, _MASKED)
        scores.sub_(scores.amax(dim=-1, keepdim=True))
        exps = torch.exp(scores)
        reduced = exps @ reducer[:stop]                                       # [H, rows, 1 + k]
        total = reduced[..., 0]                                               # [H, rows] = Z
        shifted_dot = torch.linalg.vecdot(exps, scores)                       # [H, rows] = sum e * (s - max)
        entropy = torch.log(total) - shifted_dot / total
        window = torch.log(torch.arange(start, stop, device=device, dtype=torch.float32) + 1.0)
        sums["entropy"] += (entropy / window).sum(-1).double().cpu()
        sums["self_attention"] += (exps.diagonal(offset=start, dim1=1, dim2=2) / total).sum(-1).double().cpu()
        sums["previous_token"] += (exps.diagonal(offset=start - 1, dim1=1, dim2=2) / total).sum(-1).double().cpu()
        sums["sink_attention"] += (exps[:, :, 0] / total).sum(-1).double().cpu()
        if mask_matrix is not None:
            mass = (reduced[..., 1:] / total[..., None]).sum(1).double().cpu()  # [H, k]
            for k, name in enumerate(names):
                sums[f"{name}_attention"] += mass[:, k]
    return sums


def _span_masks(layout: StatementLayout | None, n: int) -> dict[str, torch.Tensor]:
    """``{"financial"|"number"|"year": [n] bool}`` token masks, empty without a layout."""
    if layout is None:
        return {}
    return {
        "financial": torch.from_numpy(layout.token_mask(layout.financial_spans())[:n]),
        "number": torch.from_numpy(layout.token_mask(layout.select(kinds=["number"]))[:n]),
        "year": torch.from_numpy(layout.token_mask(layout.select(kinds=["year"]))[:n]),
    }
