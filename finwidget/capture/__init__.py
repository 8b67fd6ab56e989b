"""Recording what attention heads do, without the eager path.

- :func:`capture_attention` / :class:`AttentionCapture`: record post-RoPE queries and keys
  through transformers' attention registry while the model runs its own (SDPA) kernels;
  attention probabilities recomputed on demand (one head, one row, one layer, all).
- :class:`AttentionHook`: the guide's context manager, ``.attention_weights['layer_{i}']``.
- :class:`LazyLayerAttention`: the ``[B, H, T, T]`` tensor-like view computed on indexing.
- :func:`attention_rows`: the recomputation itself, for callers holding their own Q/K.
"""

from finwidget.capture.attention_math import attention_rows, kv_head_for
from finwidget.capture.capture import AttentionCapture, capture_attention
from finwidget.capture.hook import AttentionHook
from finwidget.capture.lazy import LayerAttentionMap, LazyLayerAttention

__all__ = [
    "AttentionCapture",
    "AttentionHook",
    "LayerAttentionMap",
    "LazyLayerAttention",
    "attention_rows",
    "capture_attention",
    "kv_head_for",
]
