"""The guide's ``AttentionHook``: a context manager whose ``.attention_weights`` hold every layer.

    with AttentionHook(model) as hook:
        output = model.generate(input_ids, max_new_tokens=20, output_attentions=True)
    analyzer = FinancialAttentionAnalyzer(hook.attention_weights, ...)

It is :func:`~finwidget.capture.capture_attention` under the guide's name. The model
keeps running SDPA: ``output_attentions=True`` passed to ``generate`` or the forward is
harmless (it neither forces eager attention nor keeps eager weights; transformers'
implementations that cannot return weights simply return none). The weights come
from ``hook.attention_weights['layer_{i}']``, recomputed from the recorded queries and
keys when indexed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from finwidget.capture.capture import AttentionCapture, capture_attention

if TYPE_CHECKING:
    from typing_extensions import Self


class AttentionHook:
    """Records attention of ``model`` inside a ``with`` block (the guide's API).

    Args: as :func:`capture_attention` (``layers``, ``store_on``, ``store_dtype``, ``method``).

    Attributes:
        capture: the underlying :class:`AttentionCapture` (geometry, ``attention()``, ...).
        attention_weights: mapping ``'layer_{i}'`` -> lazily computed ``[B, H, T, T]`` tensor.
    """

    def __init__(self, model, layers=None, store_on="cpu", store_dtype: torch.dtype | None = None,
                 method: str = "auto"):
        self.model = model
        self.capture: AttentionCapture = capture_attention(
            model, layers=layers, store_on=store_on, store_dtype=store_dtype, method=method
        )

    def __enter__(self) -> Self:
        self.capture.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        return self.capture.__exit__(exc_type, exc, tb)

    @property
    def attention_weights(self):
        return self.capture.attention_weights

    def remove(self) -> None:
        """Stop recording and restore the model (same as leaving the with-block)."""
        self.capture.close()

    def __repr__(self) -> str:
        return f"AttentionHook({self.capture!r})"
