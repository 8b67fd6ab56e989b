"""Attention probabilities recomputed from recorded post-RoPE queries and keys.

The model computed, for query head ``h`` of a layer,

    softmax(q_h @ k_g.T * scaling + mask)    with g = h // (H // Hkv)

where ``q``/``k`` are taken after the rotary embedding, ``scaling`` is the attention
module's ``scaling`` (``head_dim ** -0.5`` for Qwen2), and ``mask`` allows key ``j`` for
the query at position ``i`` when ``j <= i`` (causal), key ``j`` is not padding, and, for a
sliding-window layer, ``i - j < sliding_window``. Everything here works in float32 and
computes only the heads and query rows asked for, a bounded number of score cells at a
time.
"""

from __future__ import annotations

from typing import overload

import torch

# Score cells (float32) computed at once when several heads are asked for:
# 32 Mi cells = 128 MiB of scores, plus the same again for the softmax.
DEFAULT_CHUNK_CELLS = 32 * 1024 * 1024


@overload
def kv_head_for(head: int, num_heads: int, num_kv_heads: int) -> int: ...
@overload
def kv_head_for(head: torch.Tensor, num_heads: int, num_kv_heads: int) -> torch.Tensor: ...
def kv_head_for(head: int | torch.Tensor, num_heads: int, num_kv_heads: int) -> int | torch.Tensor:
    """The key/value head that query head ``head`` reads (grouped-query attention).

    ``head // (num_heads // num_kv_heads)``, as ``repeat_kv`` lays the heads out:
    query heads ``0 .. n_rep-1`` share KV head 0, the next ``n_rep`` share KV head 1, ...
    """
    return head // (num_heads // num_kv_heads)


def allowed_keys(
    query_positions: torch.Tensor,
    key_length: int,
    key_valid: torch.Tensor | None,
    sliding_window: int | None,
) -> torch.Tensor:
    """Which keys each query may attend to.

    Args:
        query_positions: ``[n]`` long, absolute positions of the query rows.
        key_length: number of keys ``T`` (positions ``0 .. T-1``).
        key_valid: ``[T]`` bool, False for padding keys, or None (no padding).
        sliding_window: window size of a sliding-window layer, or None.

    Returns:
        ``[n, T]`` bool, True where the key is visible to the query.
    """
    key_positions = torch.arange(key_length, device=query_positions.device)
    allowed = key_positions[None, :] <= query_positions[:, None]
    if sliding_window is not None:
        allowed &= key_positions[None, :] > (query_positions[:, None] - sliding_window)
    if key_valid is not None:
        allowed &= key_valid[None, :]
    return allowed


def _rows_without_keys(query_positions: torch.Tensor, key_valid: torch.Tensor | None,
                      sliding_window: int | None) -> torch.Tensor | None:
    """``[n]`` bool: queries that may see no key at all (left padding), or None if there are none."""
    if key_valid is None:
        return None
    seen = torch.cumsum(key_valid.long(), 0)                                     # valid keys at <= j
    upto = seen[query_positions]
    if sliding_window is not None:
        start = query_positions - sliding_window                                  # last excluded key
        upto = upto - torch.where(start >= 0, seen[start.clamp(min=0)], torch.zeros_like(upto))
    empty = upto == 0
    return empty if bool(empty.any()) else None


def attention_rows(
    queries: torch.Tensor,
    keys: torch.Tensor,
    heads: torch.Tensor,
    query_positions: torch.Tensor,
    scaling: float,
    key_valid: torch.Tensor | None = None,
    sliding_window: int | None = None,
    chunk_cells: int = DEFAULT_CHUNK_CELLS,
    out: torch.Tensor | None = None,
    rows_per_block: int = 256,
) -> torch.Tensor:
    """Attention probabilities of some query heads at some query positions, one sequence.

    Args:
        queries: ``[H, T, d]`` post-RoPE queries of one sequence (any float dtype).
        keys: ``[Hkv, T, d]`` post-RoPE keys of the same sequence.
        heads: ``[nh]`` long, query-head indices to compute.
        query_positions: ``[nq]`` long, query rows to compute (absolute positions).
        scaling: the factor the model multiplied ``q @ k.T`` by.
        key_valid: ``[T]`` bool, False for padding keys, or None.
        sliding_window: window of a sliding-window layer, or None.
        chunk_cells: at most about this many score cells are computed at once.
        out: optional ``[nh, nq, T]`` float32 tensor to write into.
        rows_per_block: query rows handled together. A block of rows only computes scores
            for the keys its rows can see (up to its last position, from its first
            window start), and applies the mask only where it cuts through the block.

    Returns:
        ``[nh, nq, T]`` float32 probabilities. Rows of queries that may see no key at
        all (padding queries) are all zero.
    """
    num_heads, key_length = queries.shape[0], keys.shape[1]
    num_kv_heads = keys.shape[0]
    n_heads, n_rows = int(heads.numel()), int(query_positions.numel())
    device = queries.device
    if out is None:
        out = torch.empty((n_heads, n_rows, key_length), dtype=torch.float32, device=device)
    if n_heads == 0 or n_rows == 0:
        return out
    query_positions = query_positions.to(device)
    heads = heads.to(device)
    if key_valid is not None:
        key_valid = key_valid.to(device)
        invalid_keys = (~key_valid).nonzero().flatten()
        if invalid_keys.numel() == 0:
            key_valid = None
    empty_rows = _rows_without_keys(query_positions, key_valid, sliding_window)

    kv_of_head = kv_head_for(heads, num_heads, num_kv_heads)
    rows_per_chunk = max(1, min(n_rows, rows_per_block, chunk_cells // max(1, key_length)))
    heads_per_chunk = max(1, chunk_cells // max(1, rows_per_chunk * key_length))
    for h0 in range(0, n_heads, heads_per_chunk):
        h1 = min(n_heads, h0 + heads_per_chunk)
        for r0 in range(0, n_rows, rows_per_chunk):
            r1 = min(n_rows, r0 + rows_per_chunk)
            rows = query_positions[r0:r1]
            first, last = int(rows.min()), int(rows.max())
            c0 = 0 if sliding_window is None else max(0, first - sliding_window + 1)
            c1 = last + 1
            # Select rows / visible columns first (views and small copies), then heads.
            q_rows = queries.index_select(1, rows).index_select(0, heads[h0:h1]).float()       # [nh', n, d]
            k_cols = keys[:, c0:c1].index_select(0, kv_of_head[h0:h1]).float()               # [nh', c, d]
            scores = torch.matmul(q_rows, k_cols.transpose(1, 2))               # [nh', n, c]
            scores.mul_(scaling)
            # Causal cut: only columns after the block's first row can be in a row's future.
            if last > first:
                cols = torch.arange(first + 1, c1, device=device)
                future = cols[None, :] > rows[:, None]
                scores[:, :, first + 1 - c0:].masked_fill_(future, float("-inf"))
            # Window cut: only columns up to the block's last window start can be too old.
            if sliding_window is not None:
                edge = min(c1, last - sliding_window + 1)
                if edge > c0:
                    cols = torch.arange(c0, edge, device=device)
                    too_old = cols[None, :] <= (rows[:, None] - sliding_window)
                    scores[:, :, :edge - c0].masked_fill_(too_old, float("-inf"))
            if key_valid is not None:
                padding = invalid_keys[(invalid_keys >= c0) & (invalid_keys < c1)] - c0
                if padding.numel():
                    scores.index_fill_(2, padding, float("-inf"))
            block = out[h0:h1, r0:r1]
            torch.softmax(scores, dim=-1, out=block[:, :, c0:c1])
            if c0 > 0:
                block[:, :, :c0] = 0.0
            if c1 < key_length:
                block[:, :, c1:] = 0.0
            if empty_rows is not None:
                block.masked_fill_(empty_rows[r0:r1, None], 0.0)
    return out
