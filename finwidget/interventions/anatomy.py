"""Where heads live in a Hugging Face decoder model, read from the model itself.

Every number (layers, query heads, key/value heads, head size, hidden size) comes
from ``model.config``; nothing is specific to Qwen2-7B. A query head ``h`` of layer
``l`` is the slice ``h * head_dim : (h + 1) * head_dim`` of the input of
``layers[l].self_attn.o_proj``, the concatenated per-head attention outputs
``[batch, tokens, heads * head_dim]``. (Grouped-query attention shares key/value
heads between query heads, but every query head still has its own output slice.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from finwidget.errors import InputError, LocationError


@dataclass(frozen=True)
class HeadGeometry:
    """The head layout of a decoder model.

    num_layers: decoder layers.
    num_heads: query heads per layer.
    num_kv_heads: key/value heads per layer (grouped-query attention when fewer).
    head_dim: size of one head's output.
    hidden_size: width of the residual stream.
    """

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int

    @classmethod
    def of(cls, model) -> HeadGeometry:
        config = getattr(model, "config", None)
        if config is None:
            raise InputError(f"{type(model).__name__} has no .config; pass a Hugging Face causal LM")
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        num_heads = int(text_config.num_attention_heads)
        hidden = int(text_config.hidden_size)
        head_dim = getattr(text_config, "head_dim", None) or hidden // num_heads
        return cls(
            num_layers=int(text_config.num_hidden_layers),
            num_heads=num_heads,
            num_kv_heads=int(getattr(text_config, "num_key_value_heads", None) or num_heads),
            head_dim=int(head_dim),
            hidden_size=hidden,
        )

    @property
    def num_total_heads(self) -> int:
        return self.num_layers * self.num_heads

    def kv_head_of(self, head: int) -> int:
        """The key/value head that query ``head`` reads (as ``repeat_kv`` does)."""
        return head // (self.num_heads // self.num_kv_heads)

    def check_layer(self, layer) -> int:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise LocationError(f"layer must be an int, got {layer!r}")
        if not 0 <= layer < self.num_layers:
            raise LocationError(
                f"layer {layer} is out of range: this model has {self.num_layers} layers (0-{self.num_layers - 1})"
            )
        return layer

    def check_head(self, layer, head) -> tuple[int, int]:
        self.check_layer(layer)
        if isinstance(head, bool) or not isinstance(head, int):
            raise LocationError(f"head must be an int, got {head!r}")
        if not 0 <= head < self.num_heads:
            raise LocationError(
                f"head {head} of layer {layer} is out of range: this model has {self.num_heads} query heads "
                f"per layer (0-{self.num_heads - 1})"
            )
        return layer, head

    def head_slice(self, head: int) -> slice:
        return slice(head * self.head_dim, (head + 1) * self.head_dim)


def decoder_layers(model) -> torch.nn.ModuleList:
    """The model's list of decoder layers (``model.model.layers`` for Qwen2/Llama-style models)."""
    base = getattr(model, "model", None)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise InputError(
            f"cannot find the decoder layers of {type(model).__name__}: finwidget expects a causal LM with "
            "model.model.layers (Qwen2, Llama, Mistral and similar)"
        )
    return layers


def o_proj_of(model, layer: int) -> torch.nn.Module:
    """The output projection of ``layer``'s attention, whose input holds the per-head outputs."""
    attention = decoder_layers(model)[layer].self_attn
    o_proj = getattr(attention, "o_proj", None)
    if o_proj is None:
        raise InputError(f"layer {layer}'s attention has no o_proj; finwidget expects Qwen2/Llama-style attention")
    return o_proj


def module_device(module: torch.nn.Module) -> torch.device:
    """Where a module's weights live (the execution device under accelerate's dispatch)."""
    hook = getattr(module, "_hf_hook", None)
    execution_device = getattr(hook, "execution_device", None)
    if execution_device is not None:
        return torch.device(execution_device if not isinstance(execution_device, int) else f"cuda:{execution_device}")
    for tensor in module.parameters():
        if tensor.device.type != "meta":
            return tensor.device
    return torch.device("cpu")
