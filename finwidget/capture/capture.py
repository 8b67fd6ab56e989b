"""Capture what every attention head did, without the eager path.

    with capture_attention(model) as cap:
        model(**batch)                       # or model.generate(...)
    cap.attention(layer=3, head=5)           # [T, T] float32, recomputed on demand
    cap.attention_weights["layer_3"][0, 5]   # the same, through the guide's tensor-like view

While the block runs, the model keeps its own attention implementation (SDPA by
default); finwidget only keeps the post-RoPE queries ``[B, H, T, D]`` and keys
``[B, Hkv, T, D]`` of each captured layer, linear in ``T``. Attention probabilities are
recomputed from them when asked for, one head / one row / one layer at a time, with the
causal mask, left padding, sliding windows and the grouped-query mapping
``kv_head = head // (H // Hkv)`` (shape letters: :mod:`finwidget.model_parts`).

Models whose attention does not go through transformers' attention registry fall back
to ``output_attentions=True`` (eager attention, all weights kept), with a warning that
states the cost.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch

from finwidget.capture.attention_math import DEFAULT_CHUNK_CELLS, attention_rows
from finwidget.capture.indexing import positions
from finwidget.capture.recording import LayerRecording, key_validity_from_mask, mask_matches_causal_padding
from finwidget.capture.registry import (
    ModelRouting,
    active_routing,
    attention_modules,
    uses_attention_registry,
)
from finwidget.errors import CaptureStateError, InputError, LocationError, LocationTypeError
from finwidget.model_parts import ModelGeometry, check_index, is_integer

if TYPE_CHECKING:
    from typing_extensions import Self

    from finwidget.capture.fallback import AttentionWeightsRecorder

METHODS = ("auto", "registry", "output_attentions")


def _model_dtype(model) -> torch.dtype:
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


class AttentionCapture:
    """Records post-RoPE queries/keys of a model's forward passes; answers attention on demand.

    Use :func:`capture_attention` to make one. After the ``with`` block:

    Attributes:
        num_layers, num_heads, num_kv_heads, head_dim: the model's attention geometry (from its config).
        layers: the captured layer indices.
        batch_size, seq_len: ``B`` and ``T`` of the recorded sequence.
        attention_mask: ``[B, T]`` long 0/1 padding mask (1 = real token), or None without padding.
        nbytes: bytes kept by the capture.
        method: "registry" (queries/keys recorded) or "output_attentions" (fallback, weights kept).

    Probabilities are those before attention dropout (models in eval mode have none).
    For float16/bfloat16 models they are computed in float32 from the stored queries
    and keys, so they can differ from the eager path's low-precision result (by ~1e-2
    for bfloat16 on sharp heads): they are the exact softmax of what the model stored.

    Each forward pass that starts a new sequence (no KV cache in front of it) replaces
    the previous recording; ``generate`` decode steps extend it. After ``generate``, the
    capture covers every position the model ran: the prompt and all generated tokens
    but the last one, which was sampled and never fed back in.
    """

    def __init__(self, model, layers=None, store_on="cpu", store_dtype: torch.dtype | None = None,
                 method: str = "auto"):
        if not isinstance(model, torch.nn.Module):
            raise InputError(f"capture_attention needs a torch model, got {type(model).__name__}")
        if method not in METHODS:
            raise InputError(f"method must be one of {METHODS}, got {method!r}")
        self.model = model
        modules = attention_modules(model)
        self.geometry = ModelGeometry.of(model, num_layers=len(modules))
        self.num_layers = self.geometry.num_layers
        self.num_heads = self.geometry.num_heads
        self.num_kv_heads = self.geometry.num_kv_heads
        self.head_dim = self.geometry.head_dim
        self.layers = self._check_layers(layers)
        self.store_device = self._check_store_on(store_on)
        if store_dtype is not None and (not isinstance(store_dtype, torch.dtype) or not store_dtype.is_floating_point):
            raise InputError(f"store_dtype must be a floating torch dtype (e.g. torch.float16) or None, "
                             f"got {store_dtype!r}")
        self.store_dtype = store_dtype
        self.method = self._choose_method(method)
        self._state = "new"   # new -> open -> closed -> released
        self._routing: ModelRouting | None = None
        self._weights: AttentionWeightsRecorder | None = None  # fallback recorder
        self._recordings = {layer: LayerRecording(layer, self.store_device, store_dtype) for layer in self.layers}
        self._mask_layer = self._pick_mask_layer(modules)
        self._key_valid: torch.Tensor | None = None   # [B, T] bool, None = no padding
        self._mask_problem: str | None = None
        # Memory cap of recomputation: score cells (float32) computed at once; settable.
        self.chunk_cells: int = DEFAULT_CHUNK_CELLS

    # ------------------------------------------------------------------ validation
    def _check_layers(self, layers) -> list[int]:
        if layers is None:
            return list(range(self.num_layers))
        if is_integer(layers):
            layers = [layers]
        if isinstance(layers, (str, bytes, dict, set)):
            raise InputError(f"layers must be None, an int or a list of ints, got {type(layers).__name__}")
        try:
            layers = list(layers)
        except TypeError:
            raise InputError(f"layers must be None, an int or a list of ints, got {layers!r}") from None
        chosen = [self.geometry.check_layer(layer, negative=True) for layer in layers]
        if not chosen:
            raise InputError("layers is empty; pass None for every layer or at least one layer index")
        return sorted(set(chosen))

    def _check_store_on(self, store_on) -> torch.device | None:
        if store_on == "model":
            return None
        try:
            device = torch.device(store_on)
        except (RuntimeError, TypeError):
            raise InputError(f"store_on must be 'cpu', 'model' or a torch device, got {store_on!r}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"store_on={store_on!r}, but CUDA is not available here; use 'cpu' or 'model'")
        return device

    def _choose_method(self, method: str) -> str:
        if method == "output_attentions":
            return method
        ok, why = uses_attention_registry(self.model)
        if ok:
            missing = [layer for layer in self.layers if layer not in attention_modules(self.model)]
            if not missing:
                return "registry"
            why = f"no attention module with layer_idx {missing} was found"
        if method == "registry":
            raise CaptureStateError(f"cannot record through the attention registry: {why}")
        return "output_attentions"

    def _pick_mask_layer(self, modules) -> int:
        """The captured layer whose mask is read for padding: the first without a sliding window."""
        for layer in self.layers:
            module = modules.get(layer)
            if module is None or getattr(module, "sliding_window", None) is None:
                return layer
        return self.layers[0]

    # ------------------------------------------------------------------ the with-block
    def __enter__(self) -> Self:
        if self._state != "new":
            raise CaptureStateError(
                f"this capture was already {'entered' if self._state == 'open' else 'used and closed'}; "
                "start a new one with capture_attention(model)"
            )
        from finwidget.capture.fallback import AttentionWeightsRecorder, fallback_active

        if fallback_active(self.model):
            raise CaptureStateError(
                "an output_attentions capture is already open on this model; another capture cannot nest "
                "inside it (close that one first)"
            )
        if self.method == "registry":
            self._routing = ModelRouting.attach(self.model, self._on_attention, self.layers)
        else:
            if active_routing(self.model) is not None:
                raise CaptureStateError(
                    "a registry capture is already open on this model; an output_attentions capture cannot "
                    "nest inside it (close the other capture first)"
                )
            warnings.warn(self._fallback_cost_message(), stacklevel=2)
            self._weights = AttentionWeightsRecorder(self.model, self.layers, self.store_device)
            self._weights.attach()
        self._state = "open"
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return False

    def close(self) -> None:
        """Stop recording and restore the model (what leaving the with-block does). Idempotent."""
        if self._state != "open":
            return
        self._state = "closed"
        if self._routing is not None:
            self._routing.detach(self._on_attention)
            self._routing = None
        if self._weights is not None:
            self._weights.detach()

    def release(self) -> None:
        """Free the recorded tensors; the capture cannot be read afterwards."""
        self.close()
        for recording in self._recordings.values():
            recording.release()
        if self._weights is not None:
            self._weights.release()
        self._state = "released"

    def _fallback_cost_message(self) -> str:
        _, why = uses_attention_registry(self.model)
        per_token2 = len(self.layers) * self.num_heads * 4
        cost = ", ".join(f"{per_token2 * t * t / 2**20:,.0f} MiB at {t} tokens" for t in (512, 2048, 8192))
        reason = f" ({why})" if why else ""
        return (
            f"finwidget: recording attention with output_attentions=True{reason}. This runs eager attention "
            f"(slower than SDPA) and keeps layers x heads x T x T float32 weights per sequence: {cost} "
            f"for {len(self.layers)} layers x {self.num_heads} heads."
        )

    # ------------------------------------------------------------------ recording (called by the model)
    def _on_attention(self, layer, module, query, key, mask, kwargs) -> None:
        recording = self._recordings[layer]
        if layer == self._mask_layer:
            batch, _, q_len, _ = query.shape
            kv_len = key.shape[2]
            q_offset = 0 if kv_len == q_len else recording.length
            valid, problem = key_validity_from_mask(mask, batch, q_len, kv_len)
            if problem is None:
                window = kwargs.get("sliding_window", getattr(module, "sliding_window", None))
                if not mask_matches_causal_padding(mask, valid, q_offset, q_len, kv_len, window):
                    problem = ("the model ran with a custom attention mask that is not causal + padding "
                               "(e.g. packed sequences); recomputing attention for it is not supported")
            if kv_len != q_len and problem is None and self._mask_problem is None \
                    and not recording.continues(key):
                problem = ("the KV cache was reordered between decode steps (beam search), so earlier "
                           "queries no longer line up with their sequences; generate with num_beams=1, or "
                           "run one forward pass over the final sequences inside a new capture")
            elif kv_len != q_len and problem is None:
                problem = self._mask_problem          # a problem found earlier in this sequence stays
            self._key_valid = None if valid is None else valid.cpu()
            self._mask_problem = problem
        recording.record(module, query, key, kwargs)

    # ------------------------------------------------------------------ shape of what was recorded
    def _check_readable(self) -> None:
        if self._state == "released":
            raise CaptureStateError("this capture was released (its tensors were freed); capture again")
        if self._state == "new":
            raise CaptureStateError("this capture has not run: use it as `with capture_attention(model) as cap:`")

    def _check_complete(self) -> None:
        self._check_readable()
        if self.method == "output_attentions":
            self._fallback_recorder().check_complete()
            return
        broken = [r.broken for r in self._recordings.values() if r.broken is not None]
        if broken:
            raise CaptureStateError(f"cannot read the capture: {broken[0]}")
        lengths = {r.length for r in self._recordings.values()}
        batches = {r.batch_size for r in self._recordings.values()}
        if lengths == {0}:
            raise CaptureStateError(
                "nothing was recorded: run the model inside the with-block. If you did, this model's attention "
                "does not go through transformers' attention registry; use method='output_attentions'"
            )
        if len(lengths) > 1 or len(batches) > 1:
            raise CaptureStateError(
                "the recorded forward pass did not finish (an exception interrupted it): captured layers "
                f"hold different lengths {sorted(lengths)}; run the model again inside a new capture"
            )

    def _fallback_recorder(self) -> AttentionWeightsRecorder:
        """The ``output_attentions`` recorder, which exists once a fallback capture has opened."""
        if self._weights is None:
            raise CaptureStateError("this capture has not run: use it as `with capture_attention(model) as cap:`")
        return self._weights

    @property
    def batch_size(self) -> int:
        self._check_complete()
        size = (self._fallback_recorder().batch_size if self.method == "output_attentions"
                else self._recordings[self.layers[0]].batch_size)
        assert size is not None, "a complete capture recorded at least one forward pass"
        return size

    @property
    def seq_len(self) -> int:
        self._check_complete()
        if self.method == "output_attentions":
            return self._fallback_recorder().length
        return self._recordings[self.layers[0]].length

    @property
    def attention_mask(self) -> torch.Tensor | None:
        """``[B, T]`` long, 1 for real tokens and 0 for padding, or None when nothing is padded."""
        self._check_complete()
        valid = self._fallback_recorder().key_valid if self.method == "output_attentions" else self._key_valid
        return None if valid is None else valid.long()

    @property
    def nbytes(self) -> int:
        """Bytes of tensors the capture keeps (queries + keys, or attention weights for the fallback)."""
        if self.method == "output_attentions":
            return self._weights.nbytes if self._weights is not None else 0
        return sum(r.nbytes for r in self._recordings.values())

    # ------------------------------------------------------------------ heads
    def kv_head_of(self, head: int) -> int:
        """The key/value head query head ``head`` reads: ``head // (H // Hkv)``."""
        return self.geometry.kv_head_of(self.geometry.check_query_head(head))

    def query_heads_of(self, kv_head: int) -> list[int]:
        """The query heads that share key/value head ``kv_head``."""
        return self.geometry.query_heads_of(self.geometry.check_kv_head(kv_head))

    def _check_layer(self, layer) -> int:
        layer = self.geometry.check_layer(layer, negative=True)
        if layer not in self._recordings:
            raise LocationError(f"layer {layer} was not captured; captured layers: {self.layers} "
                                "(pass layers=None to capture_attention to capture every layer)")
        return layer

    # ------------------------------------------------------------------ raw tensors
    def queries(self, layer: int, head=None) -> torch.Tensor:
        """Post-RoPE queries of ``layer``: ``[B, H, T, D]`` (stored dtype), or ``[B, T, D]`` for one head."""
        layer = self._check_layer(layer)
        self._require_qk()
        self._check_complete()
        queries = self._recordings[layer].queries()
        if head is None:
            return queries
        return queries[:, self.geometry.check_query_head(head)]

    def keys(self, layer: int, kv_head=None) -> torch.Tensor:
        """Post-RoPE keys of ``layer``: ``[B, Hkv, T, D]`` (stored dtype), or ``[B, T, D]`` for one KV head.

        ``kv_head`` counts key/value heads (0..Hkv-1), not query heads.
        """
        layer = self._check_layer(layer)
        self._require_qk()
        self._check_complete()
        keys = self._recordings[layer].keys()
        if kv_head is None:
            return keys
        return keys[:, self.geometry.check_kv_head(kv_head)]

    def _require_qk(self) -> None:
        if self.method == "output_attentions":
            raise CaptureStateError("this capture used the output_attentions fallback, which keeps attention "
                                    "weights, not queries and keys")

    # ------------------------------------------------------------------ attention on demand
    def attention(self, layer: int, head=None, query=None, batch: int = 0, kv_head=None,
                  chunk_cells: int | None = None) -> torch.Tensor:
        """Attention probabilities (float32) recomputed for one layer.

        Args:
            layer: layer index (must be captured).
            head: None for every query head, an int for one (its dimension dropped), or a
                slice / list of query heads.
            query: None for every query row, an int for one row (dimension dropped), or a
                slice / list of positions. Positions count from the start of the padded sequence.
            batch: which sequence of the batch.
            kv_head: instead of ``head``: every query head that reads this key/value head.
            chunk_cells: cap on score cells computed at once (memory bound); default
                ``self.chunk_cells`` (32 Mi cells = 128 MiB of float32 scores).

        Returns:
            ``[H, Tq, T]`` for ``head=None``; ``[Tq, T]`` for an int head; ``[T]`` for an int
            head and an int query. Rows of padding queries are zero.
        """
        layer = self._check_layer(layer)
        self._check_complete()
        batch = check_index(batch, self.batch_size, "batch row")
        if kv_head is not None:
            if head is not None:
                raise InputError("pass either head (query-head index) or kv_head (key/value-head index), not both")
            head = self.query_heads_of(kv_head)
        heads, drop_head = positions(head, self.num_heads, "query head", self.geometry.heads_hint())
        rows, drop_query = positions(query, self.seq_len, "query position",
                                     f"the recorded sequence has {self.seq_len} tokens")
        result = self._rows(layer, batch, heads, rows, chunk_cells)
        if drop_query:
            result = result[:, 0]
        if drop_head:
            result = result[0]
        return result

    def recorded_queries_keys(self, layer: int, batch: int = 0):
        """``(queries [H, T, d], keys [Hkv, T, d], scaling)`` of one layer and sequence, as
        recorded (post-RoPE, store dtype), when that layer's attention is plain causal
        softmax of ``scaling * q @ k.T`` (what ``attention`` recomputes); None when it is
        not (output_attentions fallback, a sliding window, a form the recomputation refuses)
        so a caller takes the general path. For code that reduces attention rows on the fly
        (e.g. ``head_specialization``) without building them through ``attention``."""
        layer = self._check_layer(layer)
        self._check_complete()
        batch = check_index(batch, self.batch_size, "batch row")
        if self.method == "output_attentions" or self._mask_problem is not None:
            return None
        recording = self._recordings[layer]
        if recording.unsupported is not None or recording.sliding_window is not None or recording.scaling is None:
            return None
        return recording.queries()[batch], recording.keys()[batch], float(recording.scaling)

    def head_matrix(self, layer: int, head: int, batch: int = 0) -> torch.Tensor:
        """One head's full ``[T, T]`` float32 attention matrix."""
        if not is_integer(head):
            raise LocationTypeError(f"head must be an int query-head index, got {head!r}")
        return self.attention(layer, head=head, batch=batch)

    def _rows(self, layer: int, batch: int, heads: torch.Tensor, rows: torch.Tensor,
              chunk_cells: int | None) -> torch.Tensor:
        """``[nh, nq, T]`` float32 for one sequence."""
        if self.method == "output_attentions":
            return self._fallback_recorder().rows(layer, batch, heads, rows)
        if self._mask_problem is not None:
            raise CaptureStateError(f"cannot recompute attention: {self._mask_problem}")
        recording = self._recordings[layer]
        if recording.unsupported is not None:
            raise CaptureStateError(f"layer {layer} uses {recording.unsupported}, which finwidget's recomputation "
                                    "does not model; use method='output_attentions'")
        key_valid = None if self._key_valid is None else self._key_valid[batch]
        queries, keys = recording.queries()[batch], recording.keys()[batch]
        assert recording.scaling is not None, "every recorded call sets the layer's scaling"
        return attention_rows(
            queries, keys, heads, rows, recording.scaling,
            key_valid=key_valid, sliding_window=recording.sliding_window,
            chunk_cells=int(chunk_cells or self.chunk_cells),
        )

    # ------------------------------------------------------------------ the guide's view
    @property
    def attention_weights(self):
        """Mapping ``'layer_{i}'`` -> :class:`LazyLayerAttention`, a ``[B, H, T, T]`` tensor-like view
        that computes only what is indexed."""
        from finwidget.capture.lazy import LayerAttentionMap

        self._check_complete()
        return LayerAttentionMap(self)

    def __repr__(self) -> str:
        if self._state in ("new", "released"):
            return f"<AttentionCapture {self._state}, layers={self.layers}>"
        try:
            shape = f"B={self.batch_size}, T={self.seq_len}"
        except CaptureStateError:
            shape = "nothing recorded"
        return (f"<AttentionCapture {self._state} method={self.method} layers={len(self.layers)}/{self.num_layers}"
                f" heads={self.num_heads} kv_heads={self.num_kv_heads} {shape} kept={self.nbytes / 2**20:.1f} MiB>")


def capture_attention(model, layers=None, store_on="cpu", store_dtype: torch.dtype | None = None,
                      method: str = "auto") -> AttentionCapture:
    """Record what a model's attention heads do, for use in a ``with`` block.

    Args:
        model: a Hugging Face causal LM (any model whose attention goes through
            transformers' attention registry; others fall back to output_attentions).
        layers: None (every layer), an int, or a list of layer indices to record.
        store_on: where the recorded queries/keys are kept: "cpu" (default), "model"
            (the model's own device), or a torch device.
        store_dtype: None keeps the model's dtype; e.g. ``torch.float16`` halves memory
            for a float32 model. Attention is recomputed in float32 either way.
        method: "auto" (registry when possible, else the output_attentions fallback),
            "registry", or "output_attentions".

    Returns:
        an :class:`AttentionCapture`; enter it with ``with``. The model's attention
        implementation is restored when the block ends, however it ends.
    """
    return AttentionCapture(model, layers=layers, store_on=store_on, store_dtype=store_dtype, method=method)
