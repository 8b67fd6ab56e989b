"""The output_attentions fallback, for models whose attention bypasses transformers' registry.

While the capture is open the model runs eager attention with ``output_attentions=True``
(set on its config, so plain ``model(**batch)`` and ``model.generate(...)`` calls return
weights), and a forward hook on the model keeps the weights of the captured layers:
``[B, H, q, kv]`` per call, assembled into ``[B, H, T, T]`` float32. This is what BertViz
and most tools do, with its cost (eager attention, layers x heads x T x T numbers kept);
it exists so that such models work at all. Everything is restored on close.
"""

from __future__ import annotations

import inspect

import torch

from finwidget.errors import CaptureStateError

# id(model) of models with an output_attentions capture open (they do not nest)
_ACTIVE: set[int] = set()


def fallback_active(model) -> bool:
    """Whether an output_attentions capture is open on ``model``."""
    return id(model) in _ACTIVE


class AttentionWeightsRecorder:
    """Keeps the attention weights a model returns with ``output_attentions=True``."""

    def __init__(self, model, layers: list[int], store_device: torch.device | None):
        self.model = model
        self.layers = layers
        self.store_device = store_device
        self.length = 0
        self.batch_size: int | None = None
        self.key_valid: torch.Tensor | None = None   # [B, T] bool, None = no padding
        self._chunks: dict[int, list[tuple[int, torch.Tensor]]] = {layer: [] for layer in layers}
        self._full: dict[int, torch.Tensor] = {}
        self._handle = None
        self._saved: list[tuple[object, str, object]] = []
        self._problem: str | None = None
        self._calls_seen = 0

    # ------------------------------------------------------------------ attach / detach
    def attach(self) -> None:
        try:
            configs = _configs_with_attention_settings(self.model)
            for config in configs:
                flag = _output_attentions_attribute(config)
                self._saved.append((config, flag, getattr(config, flag)))
                if hasattr(config, "_attn_implementation_internal"):
                    self._saved.append((config, "_attn_implementation_internal",
                                        config._attn_implementation_internal))
            can_set = getattr(type(self.model), "_can_set_attn_implementation", None)
            if callable(getattr(self.model, "set_attn_implementation", None)) and callable(can_set) and can_set():
                self.model.set_attn_implementation("eager")
            for config in configs:
                # The private flag: the public setter refuses unless the config already says "eager".
                setattr(config, _output_attentions_attribute(config), True)
            self._handle = self.model.register_forward_hook(self._on_forward, with_kwargs=True)
            _ACTIVE.add(id(self.model))
        except BaseException:
            self.detach()
            raise

    def detach(self) -> None:
        _ACTIVE.discard(id(self.model))
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        for config, name, value in reversed(self._saved):
            setattr(config, name, value)
        self._saved.clear()

    # ------------------------------------------------------------------ recording
    def _on_forward(self, module, args, kwargs, output) -> None:
        self._calls_seen += 1
        attentions = getattr(output, "attentions", None)
        if attentions is None and isinstance(output, dict):
            attentions = output.get("attentions")
        if not attentions:
            self._problem = (f"{type(self.model).__name__} returned no attention weights even with "
                             "output_attentions=True")
            return
        mask = _attention_mask_argument(self.model, args, kwargs)
        first = attentions[self.layers[0]]
        batch, _, q_len, kv_len = first.shape
        if kv_len == q_len:
            for chunks in self._chunks.values():
                chunks.clear()
            self._full.clear()
            self.length = 0
        elif kv_len != self.length + q_len or batch != self.batch_size:
            self._problem = ("a forward pass continued a KV cache filled outside the capture (or a static cache); "
                             "start the capture before the sequence's first forward pass")
            return
        for layer in self.layers:
            weights = attentions[layer].detach()
            weights = weights.to(device=self.store_device or weights.device, dtype=torch.float32)
            self._chunks[layer].append((self.length, weights))
        self._full.clear()
        self.length += q_len
        self.batch_size = batch
        self._problem = None
        if mask is not None and mask.dim() == 2:
            valid = mask[:, -kv_len:].bool().cpu()
            self.key_valid = None if bool(valid.all()) else valid
        else:
            self.key_valid = None

    # ------------------------------------------------------------------ reading
    def check_complete(self) -> None:
        if self._problem is not None:
            raise CaptureStateError(f"cannot read attention: {self._problem}")
        if self.length == 0:
            raise CaptureStateError("nothing was recorded: run the model inside the with-block")

    @property
    def device(self) -> torch.device:
        return self._chunks[self.layers[0]][0][1].device

    def full(self, layer: int) -> torch.Tensor:
        """``[B, H, T, T]`` float32 weights of ``layer`` (decode-step rows padded with zeros on the right)."""
        if layer not in self._full:
            chunks = self._chunks[layer]
            first = chunks[0][1]
            full = torch.zeros((first.shape[0], first.shape[1], self.length, self.length), dtype=torch.float32,
                               device=first.device)
            for start, weights in chunks:
                full[:, :, start:start + weights.shape[2], :weights.shape[3]] = weights
            self._chunks[layer] = [(0, full)]
            self._full[layer] = full
        return self._full[layer]

    def rows(self, layer: int, batch: int, heads: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``[nh, nq, T]`` float32; rows of padding queries are zero (as in the recomputed path)."""
        full = self.full(layer)
        result = full[batch].index_select(0, heads.to(full.device)).index_select(1, rows.to(full.device))
        if self.key_valid is not None:
            padding_rows = ~self.key_valid[batch].to(full.device).index_select(0, rows.to(full.device))
            result = result.masked_fill(padding_rows[None, :, None], 0.0)
        return result

    @property
    def nbytes(self) -> int:
        return sum(w.numel() * w.element_size() for chunks in self._chunks.values() for _, w in chunks)

    def release(self) -> None:
        for chunks in self._chunks.values():
            chunks.clear()
        self._full.clear()
        self.length = 0


def _configs_with_attention_settings(model) -> list:
    seen: dict[int, object] = {}
    queue = [getattr(m, "config", None) for m in model.modules()]
    while queue:
        config = queue.pop()
        if config is None or id(config) in seen or not hasattr(config, "output_attentions"):
            continue
        seen[id(config)] = config
        for key in getattr(config, "sub_configs", {}) or {}:
            queue.append(getattr(config, key, None))
    return list(seen.values())


def _output_attentions_attribute(config) -> str:
    return "_output_attentions" if hasattr(config, "_output_attentions") else "output_attentions"


def _attention_mask_argument(model, args, kwargs):
    if "attention_mask" in kwargs:
        return kwargs["attention_mask"]
    try:
        bound = inspect.signature(model.forward).bind_partial(*args)
    except TypeError:
        return None
    return bound.arguments.get("attention_mask")
