"""What one attention layer ran on, kept between the model's forward passes.

A :class:`LayerRecording` holds the post-RoPE queries ``[B, H, T, d]`` and keys
``[B, Hkv, T, d]`` of one layer for the sequence the model processed last. A forward
pass whose keys are exactly its own queries' positions (no KV cache in front of them)
starts a new sequence; a pass that continues a KV cache (a ``generate`` decode step)
appends its queries and its new keys along ``T``.

:func:`key_validity_from_mask` reads which keys are padding from the mask the
attention function was given, whatever form the implementation uses.
"""

from __future__ import annotations

import torch

from finwidget.errors import CaptureStateError


class LayerRecording:
    """Post-RoPE queries and keys of one layer, accumulated along the sequence.

    Attributes:
        layer: the layer index.
        length: number of positions recorded (``T``).
        batch_size: ``B`` of the recorded sequence.
        scaling: the factor the model multiplied ``q @ k.T`` by.
        sliding_window: window size if the layer uses sliding-window attention, else None.
        unsupported: why attention cannot be recomputed for this layer (None if it can).
        broken: why the recorded sequence cannot be read (a cache the capture cannot follow).
    """

    def __init__(self, layer: int, store_device: torch.device | None, store_dtype: torch.dtype | None):
        self.layer = layer
        self.store_device = store_device
        self.store_dtype = store_dtype
        self.length = 0
        self.batch_size: int | None = None
        self.scaling: float | None = None
        self.sliding_window: int | None = None
        self.unsupported: str | None = None
        self.broken: str | None = None    # why the recorded sequence cannot be read, if it cannot
        self._query_chunks: list[torch.Tensor] = []
        self._key_chunks: list[torch.Tensor] = []

    # ------------------------------------------------------------------ recording
    def record(self, module, query: torch.Tensor, key: torch.Tensor, kwargs: dict) -> None:
        """Record one call of the layer's attention function.

        Args:
            query: ``[B, H, q, d]`` post-RoPE queries of this call.
            key: ``[B, Hkv, kv, d]`` post-RoPE keys the call attends over (cache + new).
        """
        batch, _, q_len, _ = query.shape
        kv_len = key.shape[2]
        if kv_len == q_len:
            self._reset()
        elif self.broken is not None:
            return
        elif kv_len != self.length + q_len or batch != self.batch_size:
            # Not raised here: the model's own work goes on; reading the capture raises.
            self.broken = (
                f"layer {self.layer}: a forward pass attended over {kv_len} keys for {q_len} new queries, "
                f"but the capture had recorded {self.length} positions of a batch of {self.batch_size}. "
                "The call continues a KV cache that was filled outside the capture, or uses a static, "
                "sliding-window or cropped (assisted-decoding) cache; start the capture before the first "
                "forward pass of the sequence and use the default dynamic cache"
            )
            return
        new_keys = key[:, :, kv_len - q_len:]
        self._query_chunks.append(self._store(query))
        self._key_chunks.append(self._store(new_keys, must_copy=new_keys.shape[2] != kv_len))
        self.length += q_len
        self.batch_size = batch
        self._read_settings(module, kwargs)

    def continues(self, key: torch.Tensor) -> bool:
        """Whether a decode step's cache still holds, at the last recorded position, the keys
        recorded there. False when the cache was reordered between steps (beam search)."""
        if self.length == 0 or key.shape[2] <= self.length - 1:
            return False
        last = self._key_chunks[-1][:, :, -1]
        now = key[:, :, self.length - 1].detach().to(device=last.device, dtype=last.dtype)
        return now.shape == last.shape and torch.equal(now, last)

    def _reset(self) -> None:
        self.broken = None
        self._query_chunks.clear()
        self._key_chunks.clear()
        self.length = 0

    def _store(self, tensor: torch.Tensor, must_copy: bool = False) -> torch.Tensor:
        tensor = tensor.detach()
        stored = tensor.to(device=self.store_device or tensor.device, dtype=self.store_dtype or tensor.dtype)
        if must_copy and stored.data_ptr() == tensor.data_ptr():
            # A slice of a bigger cache tensor: copy so the whole cache is not kept alive.
            stored = stored.clone()
        return stored

    def _read_settings(self, module, kwargs: dict) -> None:
        scaling = kwargs.get("scaling")
        if scaling is None:
            scaling = getattr(module, "scaling", None)
        if scaling is None:
            scaling = self._query_chunks[-1].shape[-1] ** -0.5
        self.scaling = float(scaling)
        window = kwargs.get("sliding_window", getattr(module, "sliding_window", None))
        self.sliding_window = int(window) if window is not None else None
        reasons = []
        if kwargs.get("softcap") is not None:
            reasons.append("logit soft-capping")
        if kwargs.get("s_aux") is not None:
            reasons.append("attention sinks (s_aux)")
        if kwargs.get("position_bias") is not None:
            reasons.append("a position bias added to the scores")
        is_causal = kwargs.get("is_causal")
        if is_causal is None:
            is_causal = getattr(module, "is_causal", True)
        if not is_causal:
            reasons.append("non-causal (bidirectional) attention")
        self.unsupported = ", ".join(reasons) or None

    # ------------------------------------------------------------------ reading
    def queries(self) -> torch.Tensor:
        """``[B, H, T, d]`` post-RoPE queries (stored dtype)."""
        self._check_recorded()
        if len(self._query_chunks) > 1:
            self._query_chunks[:] = [torch.cat(self._query_chunks, dim=2)]
        return self._query_chunks[0]

    def keys(self) -> torch.Tensor:
        """``[B, Hkv, T, d]`` post-RoPE keys (stored dtype)."""
        self._check_recorded()
        if len(self._key_chunks) > 1:
            self._key_chunks[:] = [torch.cat(self._key_chunks, dim=2)]
        return self._key_chunks[0]

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored queries and keys."""
        return sum(t.numel() * t.element_size() for t in self._query_chunks + self._key_chunks)

    def _check_recorded(self) -> None:
        if self.length == 0:
            raise CaptureStateError(
                f"layer {self.layer}: nothing was recorded; run the model inside the capture's with-block"
            )

    def release(self) -> None:
        self._reset()
        self.batch_size = None


def key_validity_from_mask(mask, batch: int, q_len: int, kv_len: int) -> tuple[torch.Tensor | None, str | None]:
    """Which keys are real tokens (not padding), read from an attention function's mask.

    Args:
        mask: what the attention function received: None (plain causal, no padding),
            a ``[B|1, 1|H, q, kv]`` bool mask (True = attend), a float additive mask
            (0 = attend, very negative = blocked), or a ``[B, kv]`` 2D padding mask
            (flash-attention implementations).

    Returns:
        ``([B, kv] bool on the mask's device, or None, problem)``: None validity means no
        padding; ``problem`` is a message when the mask's form cannot be read.
    """
    if mask is None:
        return None, None
    if not isinstance(mask, torch.Tensor):
        return None, f"the attention mask is a {type(mask).__name__}, which finwidget cannot read"
    if mask.dim() == 2:
        valid = mask[:, -kv_len:].bool()
    elif mask.dim() == 4:
        allowed = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2
        # A real key is visible to at least one query (itself, or the newest query when decoding).
        valid = allowed.any(dim=2).any(dim=1)
    else:
        return None, f"the attention mask has {mask.dim()} dimensions, which finwidget cannot read"
    valid = valid.expand(batch, kv_len)
    if bool(valid.all()):
        return None, None
    return valid, None


def mask_matches_causal_padding(
    mask, key_valid: torch.Tensor | None, q_offset: int, q_len: int, kv_len: int, sliding_window: int | None
) -> bool:
    """True when a 4D mask is exactly causal (+ sliding window) + key padding.

    Rows of queries that see no key at all (padding queries) are not compared: the
    model's output there is discarded and implementations fill them differently.
    """
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4:
        return True
    allowed = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2
    allowed = allowed.any(dim=1)                                          # [B|1, q, kv]
    query_positions = torch.arange(q_offset, q_offset + q_len, device=mask.device)
    key_positions = torch.arange(kv_len, device=mask.device)
    expected = key_positions[None, :] <= query_positions[:, None]
    if sliding_window is not None:
        expected = expected & (key_positions[None, :] > query_positions[:, None] - sliding_window)
    expected = expected[None]
    if key_valid is not None:
        expected = expected & key_valid.to(mask.device)[:, None, :]
    allowed, expected = torch.broadcast_tensors(allowed, expected)
    seen = expected.any(dim=-1, keepdim=True)
    return bool(((allowed == expected) | ~seen).all())
