"""Token-level attention to span-level attention.

Keys are *summed* over a span's tokens (the attention a query pays to "1,234" is
what it pays to all of its tokens together, so rows still sum to at most 1).
Queries are *averaged* (``query_reduce="mean"``) or maxed (``"max"``) over a span's
tokens (what "Net income" looks at is the typical, or the strongest, row of its
tokens). Tokens outside every span (``token_to_span == -1``) are left out.
"""

from __future__ import annotations

import numpy as np
import torch

from finwidget.errors import InputError
from finwidget.statement.layout import StatementLayout


def aggregate_to_spans(token_values, layout: StatementLayout, query_reduce: str = "mean"):
    """Sum over key tokens of each span; mean or max over query tokens of each span.

    Args:
        token_values: ``[Tk]`` (one attention row) or ``[Tq, Tk]`` (a matrix), torch
            tensor or numpy array, with ``Tk == Tq == layout.num_tokens`` (the valid,
            unpadded tokens of the prompt).
        layout: from ``read_statement``.
        query_reduce: "mean" or "max" over the query tokens of a span.

    Returns:
        ``[S]`` or ``[S, S]`` float32 (query span, key span), the same array type as
        the input (torch on the input's device, or numpy).
    """
    if query_reduce not in ("mean", "max"):
        raise InputError(f"query_reduce must be 'mean' or 'max', got {query_reduce!r}")
    as_numpy = isinstance(token_values, np.ndarray)
    values = torch.from_numpy(np.asarray(token_values)) if as_numpy else token_values
    if not isinstance(values, torch.Tensor):
        raise InputError(f"token_values must be a torch tensor or numpy array, got {type(token_values).__name__}")
    if values.dim() not in (1, 2):
        raise InputError(f"token_values must be [Tk] or [Tq, Tk], got shape {tuple(values.shape)}")
    n = layout.num_tokens
    if values.shape[-1] != n or (values.dim() == 2 and values.shape[0] != n):
        raise InputError(
            f"token_values has shape {tuple(values.shape)} but the layout has {n} tokens; pass the "
            "attention over the prompt's valid (unpadded) tokens"
        )
    values = values.float()
    spans = torch.as_tensor(layout.token_to_span, device=values.device)
    inside = spans >= 0
    num_spans = layout.num_spans
    index = spans[inside]

    if values.dim() == 1:
        out = torch.zeros(num_spans, dtype=torch.float32, device=values.device)
        out.index_add_(0, index, values[inside])
    else:
        by_key = torch.zeros(values.shape[0], num_spans, dtype=torch.float32, device=values.device)
        by_key.index_add_(1, index, values[:, inside])
        rows = by_key[inside]
        if query_reduce == "mean":
            out = torch.zeros(num_spans, num_spans, dtype=torch.float32, device=values.device)
            out.index_add_(0, index, rows)
            counts = torch.bincount(index, minlength=num_spans).clamp(min=1).to(out.dtype)
            out = out / counts[:, None]
        else:
            out = torch.full((num_spans, num_spans), float("-inf"), dtype=torch.float32, device=values.device)
            out.scatter_reduce_(0, index[:, None].expand_as(rows), rows, reduce="amax", include_self=True)
            out[torch.isinf(out)] = 0.0
    return out.numpy() if as_numpy else out
