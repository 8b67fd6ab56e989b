"""Financial clustering: do financial terms attend to each other more than chance?

For every query token of a financial span (a term or line item name with a financial
category), ``financial_to_financial`` is its attention mass on financial-span tokens;
``uniform_baseline`` is what uniform attention over its causal window would give (the
fraction of financial tokens among tokens ``0..i``); ``lift`` is their ratio (of the
means over query tokens). Token 0 is left out as a query.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from finwidget.analysis.source import (
    as_attention_source,
    check_layers,
    layer_rows,
    rows_per_chunk,
    token_columns,
)
from finwidget.model_parts import check_index
from finwidget.statement.layout import StatementLayout

CLUSTERING_COLUMNS = ["layer", "head", "financial_to_financial", "financial_to_numbers", "uniform_baseline",
                      "lift", "n_query_tokens"]


def financial_clustering(
    attention,
    layout: StatementLayout,
    layers=None,
    batch: int = 0,
    max_bytes: int | None = None,
) -> pd.DataFrame:
    """Per (layer, head): attention from financial tokens to financial tokens vs uniform.

    Returns:
        DataFrame with ``layer``, ``head``, ``financial_to_financial`` (mean mass on
        financial tokens), ``financial_to_numbers`` (mean mass on number tokens),
        ``uniform_baseline``, ``lift`` (= financial_to_financial / uniform_baseline, NaN
        when there is no financial token), ``n_query_tokens``.
    """
    source = as_attention_source(attention)
    layers = check_layers(source, layers)
    cols = token_columns(source, batch, layout)
    n = cols.count
    financial = torch.from_numpy(layout.token_mask(layout.financial_spans())[:n])
    numbers = torch.from_numpy(layout.token_mask(layout.select(kinds=["number"]))[:n])
    query_tokens = [int(i) for i in torch.nonzero(financial).flatten() if i > 0]
    targets = torch.stack([financial.float(), numbers.float()], dim=1)  # [n, 2]
    window = torch.arange(1, n + 1, dtype=torch.float64)
    share = torch.cumsum(financial.double(), 0) / window
    baseline = float(share[query_tokens].mean()) if query_tokens else math.nan

    records = []
    for layer in layers:
        to_fin = torch.zeros(source.num_heads, dtype=torch.float64)
        to_num = torch.zeros(source.num_heads, dtype=torch.float64)
        step = rows_per_chunk(source.num_heads, n, max_bytes)
        for run_start, run_stop in _runs(query_tokens):
            for start in range(run_start, run_stop, step):
                stop = min(run_stop, start + step)
                block = layer_rows(source, layer, batch, cols, start, stop)  # [H, c, n]
                mass = (block @ targets.to(block.device)).sum(1).double().cpu()  # [H, 2]
                to_fin += mass[:, 0]
                to_num += mass[:, 1]
        count = len(query_tokens)
        for head in range(source.num_heads):
            mass = float(to_fin[head] / count) if count else math.nan
            records.append({
                "layer": layer,
                "head": head,
                "financial_to_financial": mass,
                "financial_to_numbers": float(to_num[head] / count) if count else math.nan,
                "uniform_baseline": baseline,
                "lift": mass / baseline if count and baseline > 0 else math.nan,
                "n_query_tokens": count,
            })
    return pd.DataFrame.from_records(records, columns=CLUSTERING_COLUMNS)


def _runs(tokens: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs ``[(start, stop)]`` of sorted token indices."""
    runs = []
    for t in tokens:
        if runs and runs[-1][1] == t:
            runs[-1] = (runs[-1][0], t + 1)
        else:
            runs.append((t, t + 1))
    return runs


def financial_attention_matrix(attention, layout: StatementLayout, layer: int, head: int | None = None,
                               batch: int = 0) -> pd.DataFrame:
    """Span-level attention among financial spans for one layer (one head, or the mean over heads).

    Rows are query spans, columns key spans (labelled by text); a cell is the mean over the
    query span's tokens of the summed attention to the key span's tokens. Upper-triangle
    cells (later spans) are 0 by causality.
    """
    source = as_attention_source(attention)
    (layer,) = check_layers(source, [layer])
    if head is not None:
        head = check_index(head, source.num_heads, "head", f"this model has {source.num_heads} query heads per layer")
    cols = token_columns(source, batch, layout)
    spans = layout.financial_spans()
    n = cols.count
    to_span = torch.as_tensor(layout.token_to_span[:n])
    chosen = [s.index for s in spans]
    matrix = np.zeros((len(spans), len(spans)), dtype=np.float32)
    for qi, span in enumerate(spans):
        block = layer_rows(source, layer, batch, cols, span.token_start, min(span.token_end, n))  # [H, c, n]
        row = (block.mean(1).mean(0) if head is None else block[head].mean(0)).cpu()  # [n]
        for ki, key_span in enumerate(chosen):
            matrix[qi, ki] = float(row[to_span == key_span].sum())
    labels = [f"{s.text} [{s.index}]" for s in spans]
    return pd.DataFrame(matrix, index=labels, columns=labels)


def span_group(span) -> str:
    """The group a span counts in for category-level views: its lexicon category for words
    and line item names, "number", "year", or "other"."""
    if span.kind == "number":
        return "number"
    if span.kind == "year":
        return "year"
    if span.kind in ("word", "line_item_name") and span.category:
        return span.category
    return "other"


def category_attention(attention, layout: StatementLayout, layer: int, head: int | None = None,
                       batch: int = 0, max_bytes: int | None = None) -> pd.DataFrame:
    """Attention between groups of spans (categories, numbers, years, other) in one layer.

    A cell ``[query group, key group]`` is the mean over the query group's tokens of the
    attention mass (one head, or averaged over heads) on the key group's tokens.
    Token 0 is left out as a query. Rows: query groups, columns: key groups, both in the
    order of ``GROUP_ORDER`` (groups absent from the statement left out).
    """
    source = as_attention_source(attention)
    (layer,) = check_layers(source, [layer])
    cols = token_columns(source, batch, layout)
    n = cols.count
    labels = [span_group(s) for s in layout.spans]
    present = [g for g in GROUP_ORDER if g in labels]
    present += [g for g in dict.fromkeys(labels) if g not in present]  # categories a user added
    group_index = {g: k for k, g in enumerate(present)}
    token_group = torch.tensor([group_index[labels[s]] if s >= 0 else -1 for s in layout.token_to_span[:n]])
    inside = token_group >= 0
    one_hot = torch.zeros(n, len(present), dtype=torch.float32)  # [n, G] token -> its group
    one_hot[torch.nonzero(inside).flatten(), token_group[inside]] = 1.0
    totals = torch.zeros(len(present), len(present), dtype=torch.float64)
    counts = torch.zeros(len(present), dtype=torch.float64)
    step = rows_per_chunk(source.num_heads, n, max_bytes)
    for start in range(1, n, step):
        stop = min(n, start + step)
        block = layer_rows(source, layer, batch, cols, start, stop)
        rows = block.mean(0) if head is None else block[head]  # [c, n]
        by_key = (rows @ one_hot.to(rows.device)).double().cpu()  # [c, G]
        q_groups = token_group[start:stop]
        keep = q_groups >= 0
        totals.index_add_(0, q_groups[keep], by_key[keep])
        counts += torch.bincount(q_groups[keep], minlength=len(present)).double()
    matrix = (totals / counts.clamp(min=1)[:, None]).numpy()
    return pd.DataFrame(matrix, index=present, columns=present)


GROUP_ORDER = ("income_statement", "balance_sheet", "cash_flow", "per_share", "ratio", "temporal", "numeric",
               "number", "year", "other")
