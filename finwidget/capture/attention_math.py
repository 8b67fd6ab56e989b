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

import torch

# Score cells (float32) computed at once when several heads are asked for:
# 32 Mi cells = 128 MiB of scores, plus the same again for the softmax.
DEFAULT_CHUNK_CELLS = 32 * 1024 * 1024


def kv_head_for(head: int | torch.Tensor, num_heads: int, num_kv_heads: int):
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
        chunk_cells: at most this many score cells are computed at once.
        out: optional ``[nh, nq, T]`` float32 tensor to write into.

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
    allowed = allowed_keys(query_positions, key_length, None if key_valid is None else key_valid.to(device),
                           sliding_window)
    blocked = ~allowed
    # Queries that see no key (left padding) would give NaN rows; they are zeroed below.
    empty_rows = None
    if key_valid is not None:
        empty_rows = ~allowed.any(dim=1)
        if not bool(empty_rows.any()):
            empty_rows = None

    kv_of_head = kv_head_for(heads.to(device), num_heads, num_kv_heads)
    rows_per_chunk = max(1, chunk_cells // max(1, key_length))
    heads_per_chunk = max(1, rows_per_chunk // n_rows)
    rows_per_chunk = min(n_rows, rows_per_chunk)
    for h0 in range(0, n_heads, heads_per_chunk):
        h1 = min(n_heads, h0 + heads_per_chunk)
        head_keys = keys[kv_of_head[h0:h1]].float()                     # [nh', T, d]
        head_queries = queries[heads[h0:h1].to(device)].float()         # [nh', T, d]
        for r0 in range(0, n_rows, rows_per_chunk):
            r1 = min(n_rows, r0 + rows_per_chunk)
            q_rows = head_queries[:, query_positions[r0:r1]]            # [nh', nq', d]
            scores = torch.matmul(q_rows, head_keys.transpose(1, 2))    # [nh', nq', T]
            scores.mul_(scaling)
            scores.masked_fill_(blocked[r0:r1], float("-inf"))
            torch.softmax(scores, dim=-1, out=out[h0:h1, r0:r1])
            if empty_rows is not None:
                out[h0:h1, r0:r1].masked_fill_(empty_rows[r0:r1, None], 0.0)
    return out
