"""Where the answer position looks: attention from one position to every span, per head.

The answer ("increase"/"decrease") is predicted at the last token of the prompt, so
``position=-1`` (the last of the layout's tokens) is the prediction position.
Attention to a span is the sum over its key tokens.
"""

from __future__ import annotations

from typing import cast

import pandas as pd
import torch

from finwidget.analysis.source import as_attention_source, check_layers, layer_rows, token_columns
from finwidget.errors import InputError
from finwidget.model_parts import check_index, is_integer
from finwidget.statement.layout import StatementLayout

PREDICTION_COLUMNS = ["layer", "head", "span", "text", "kind", "category", "line_item", "year", "attention", "rank"]


def resolve_position(position: int, num_tokens: int) -> int:
    """A layout token index (negative counts from the end) -> its non-negative index."""
    return check_index(position, num_tokens, "position",
                       f"the statement has {num_tokens} tokens (-1 is the answer position)")


def span_attention_from(attention, layout: StatementLayout, position: int = -1, layers=None,
                        batch: int = 0) -> tuple[list[int], torch.Tensor]:
    """``(layers, [L, H, S] float32)``: attention from ``position`` to each span, per layer and head."""
    source = as_attention_source(attention)
    layers = check_layers(source, layers)
    cols = token_columns(source, batch, layout)
    pos = resolve_position(position, cols.count)
    spans = torch.as_tensor(layout.token_to_span[: cols.count])
    inside = spans >= 0
    out = torch.zeros(len(layers), source.num_heads, layout.num_spans, dtype=torch.float32)
    for k, layer in enumerate(layers):
        row = layer_rows(source, layer, batch, cols, pos, pos + 1)[:, 0, :].cpu()  # [H, n]
        out[k].index_add_(1, spans[inside], row[:, inside])
    return layers, out


def check_top_k(top_k) -> int | None:
    """``top_k`` as a positive int (None: keep everything); floats, bools, 0 and negatives are refused."""
    if top_k is None:
        return None
    if not is_integer(top_k) or int(top_k) < 1:
        raise InputError(f"top_k must be a positive int (or None for every span), got {type(top_k).__name__} "
                         f"{str(top_k)[:80]}")
    return int(top_k)


def prediction_attention(
    attention,
    layout: StatementLayout,
    position: int = -1,
    layers=None,
    batch: int = 0,
    top_k: int | None = None,
) -> pd.DataFrame:
    """Attention from ``position`` (default: the answer position) to each span, per (layer, head).

    Args:
        attention: an ``AttentionCapture`` (or anything ``as_attention_source`` takes).
        layout: ``read_statement`` of the prompt the model ran.
        position: token index among the layout's tokens; -1 is the answer position.
        layers: layers to read (default: every captured layer).
        batch: which sequence of the captured batch.
        top_k: keep only the ``top_k`` spans of each (layer, head).

    Returns:
        DataFrame, one row per (layer, head, span): ``layer``, ``head``, ``span`` (index in
        ``layout.spans``), ``text``, ``kind``, ``category``, ``line_item``, ``year``,
        ``attention`` (sum over the span's tokens), ``rank`` (1 = most attended span of
        that head), sorted by layer, head, rank.
    """
    top_k = check_top_k(top_k)
    layers, values = span_attention_from(attention, layout, position, layers, batch)
    num_layers, num_heads, num_spans = values.shape
    order = torch.argsort(values, dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(1, num_spans + 1).expand_as(order).contiguous())
    frame = pd.DataFrame({
        "layer": torch.tensor(layers).repeat_interleave(num_heads * num_spans).numpy(),
        "head": torch.arange(num_heads).repeat_interleave(num_spans).repeat(num_layers).numpy(),
        "span": torch.arange(num_spans).repeat(num_layers * num_heads).numpy(),
        "attention": values.reshape(-1).numpy(),
        "rank": ranks.reshape(-1).numpy(),
    })
    span_info = cast(pd.DataFrame, layout.to_dataframe()[["index", "text", "kind", "category", "line_item", "year"]])
    frame = frame.merge(span_info.rename(columns={"index": "span"}), on="span", how="left")
    if top_k is not None:
        frame = cast(pd.DataFrame, frame[frame["rank"] <= top_k])
    frame = frame.sort_values(["layer", "head", "rank"], kind="stable").reset_index(drop=True)
    return cast(pd.DataFrame, frame[PREDICTION_COLUMNS])


def top_spans(frame: pd.DataFrame, k: int = 5, by=("layer",)) -> pd.DataFrame:
    """The ``k`` most attended spans per group of a ``prediction_attention`` table,
    averaging attention over the other rows in the group (e.g. over heads for ``by=("layer",)``)."""
    keys = list(by) + ["span", "text", "kind", "category", "line_item", "year"]
    mean = cast(pd.Series, frame.groupby(keys, dropna=False, sort=False)["attention"].mean()).reset_index()
    mean = mean.sort_values(list(by) + ["attention"], ascending=[True] * len(by) + [False], kind="stable")
    return mean.groupby(list(by), sort=True).head(k).reset_index(drop=True)
