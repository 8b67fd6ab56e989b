"""The model's anatomy: its geometry, the places finwidget hooks, and index checks.

This is the bottom of finwidget's stack (it imports only :mod:`finwidget.errors`, torch
and, lazily, transformers). Everything that reads or hooks a model finds its parts
here, so a new architecture needs changes in this one module.

Geometry (:class:`ModelGeometry`) is read from ``model.config`` once; nothing is
specific to one model size. The sites are the modules finwidget hooks or runs:

- :func:`decoder_stack` (``model.model`` for Qwen2/Llama-style models): its forward
  pre-hook sees the call's ``input_ids`` / ``inputs_embeds`` and cache;
- :func:`decoder_layers`, :func:`decoder_layer`: the residual stream ``[B, T, E]``
  entering layer ``l`` is the first input of ``decoder_layer(model, l)``
  (:func:`residual_stream_site`);
- :func:`attention_module`, :func:`mlp_module`: layer ``l``'s self-attention and MLP;
- :func:`attention_input_norm`, :func:`qkv_projections`: the norm a layer's attention reads
  the residual stream through, and its query/key/value projections (``[.., E]`` ->
  ``[.., H*D]`` / ``[.., Hkv*D]``); :func:`rotary_transpose`: the transpose of the rotary
  embedding those layers apply to queries and keys (for gradients);
- :func:`head_output_site`: the module whose forward pre-hook sees the per-head outputs
  ``[B, T, H*D]`` (``o_proj``): query head ``h`` is the slice ``h*D:(h+1)*D``;
  :func:`hook_head_outputs` registers pre-hooks there;
- :func:`embed_tokens`, :func:`rotary_embedding`, :func:`final_norm`,
  :func:`unembedding` (the LM head), :func:`answer_direction` (the unembedding of an
  answer difference ``W_U[a] - W_U[b]``);
- :func:`layer_device`, :func:`module_device`: where a layer's weights live.

A model without one of these parts raises :class:`~finwidget.errors.UnsupportedModelError`
naming its architecture and the missing part.

Index checks: :func:`check_index` is the one range/type check for layers, heads,
positions and batch rows (ints and numpy/torch integer scalars are accepted; floats,
bools and strings raise :class:`~finwidget.errors.LocationTypeError`, out-of-range
values :class:`~finwidget.errors.LocationError`).

Shape letters used in finwidget's docstrings:

=======  ==============================================================
``B``    statements in a batch (rows)
``R``    rows of a re-run batch (several intervention sets x ``B``)
``T``    tokens of a sequence (query or key positions)
``L``    decoder layers
``H``    query heads per layer
``Hkv``  key/value heads per layer (``H // Hkv`` query heads share one)
``D``    size of one head's query, key, value and output (``head_dim``)
``E``    width of the residual stream (``hidden_size``)
``V``    vocabulary size
``S``    spans of a statement layout (words, numbers, line items)
=======  ==============================================================
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import cast

import torch

from finwidget.errors import InputError, LocationError, LocationTypeError, UnsupportedModelError

# ---------------------------------------------------------------------------- index checks


def is_integer(value) -> bool:
    """True for ints and integer numpy / 0-d torch scalars; False for bools, floats, strings."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, torch.Tensor):
        return value.dim() == 0 and not value.is_floating_point() and not value.is_complex() \
            and value.dtype != torch.bool
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return False
    return isinstance(value, np.integer)


def check_index(value, size: int | None, what: str, hint: str = "", *, negative: bool = True,
                where: str = "") -> int:
    """One index -> its non-negative position, or a clear error.

    Args:
        value: the index given (an int, or a numpy / 0-d torch integer).
        size: how many there are (``None``: no bound; only ``>= 0`` is checked, and only when
            ``negative`` is False).
        what: what it counts, e.g. ``"layer"``, ``"query head"``, ``"position"``.
        hint: appended to the out-of-range message, e.g. ``"this model has 4 layers"``.
        negative: accept ``-size <= value < 0``, counting from the end (as Python does).
        where: qualifies the value in messages, e.g. ``" of layer 3"``.

    Raises:
        LocationTypeError: ``value`` is not an integer (a float, bool, string...).
        LocationError: ``value`` is out of range.
    """
    if not is_integer(value):
        raise LocationTypeError(f"{what} must be an int, got {type(value).__name__} {value!r}")
    index = int(value)
    if size is None:
        if index < 0 and not negative:
            raise LocationError(f"{what} must be >= 0, got {index}")
        return index
    low = -size if negative else 0
    if not low <= index < size:
        suffix = f"; {hint}" if hint else ""
        raise LocationError(f"{what} {index}{where} is out of range: valid {what}s are 0..{size - 1}{suffix}")
    return index % size


# ---------------------------------------------------------------------------- geometry


def text_config(model):
    """The model's (text) config: ``config.get_text_config()`` when it has one."""
    config = getattr(model, "config", None)
    if config is None:
        raise InputError(f"{type(model).__name__} has no `config`; pass a Hugging Face transformers model")
    get_text_config = getattr(config, "get_text_config", None)
    return get_text_config() if callable(get_text_config) else config


def architecture_of(model) -> str:
    """A name for the model's architecture, for messages (e.g. ``"Qwen2ForCausalLM"``)."""
    architectures = getattr(getattr(model, "config", None), "architectures", None)
    return architectures[0] if architectures else type(model).__name__


@dataclass(frozen=True)
class ModelGeometry:
    """The layer and head layout of a decoder model, read from its config.

    num_layers: decoder layers ``L``.
    num_heads: query heads per layer ``H``.
    num_kv_heads: key/value heads per layer ``Hkv`` (grouped-query attention when fewer).
    head_dim: size of one head's output ``D``.
    hidden_size: width of the residual stream ``E``.
    """

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    architecture: str = field(default="", compare=False)

    @classmethod
    def of(cls, model, num_layers: int | None = None) -> ModelGeometry:
        """The geometry of ``model`` (``num_layers`` when the config does not say)."""
        config = text_config(model)
        num_heads = getattr(config, "num_attention_heads", None)
        hidden = getattr(config, "hidden_size", None)
        layers = getattr(config, "num_hidden_layers", None) or num_layers
        missing = [name for name, v in (("num_attention_heads", num_heads), ("hidden_size", hidden),
                                        ("num_hidden_layers", layers)) if v is None]
        if missing:
            raise UnsupportedModelError(f"{architecture_of(model)}'s config has no {', '.join(missing)}; "
                                        "finwidget reads the attention geometry from them")
        assert num_heads is not None and hidden is not None and layers is not None  # none missing
        num_heads, hidden = int(num_heads), int(hidden)
        return cls(
            num_layers=int(layers),
            num_heads=num_heads,
            num_kv_heads=int(getattr(config, "num_key_value_heads", None) or num_heads),
            head_dim=int(getattr(config, "head_dim", None) or hidden // num_heads),
            hidden_size=hidden,
            architecture=architecture_of(model),
        )

    @property
    def group_size(self) -> int:
        """Query heads per key/value head, ``H // Hkv``."""
        return self.num_heads // self.num_kv_heads

    @property
    def num_total_heads(self) -> int:
        return self.num_layers * self.num_heads

    def kv_head_of(self, head: int) -> int:
        """The key/value head that query ``head`` reads (as ``repeat_kv`` does): ``h // (H // Hkv)``."""
        return head // self.group_size

    def query_heads_of(self, kv_head: int) -> list[int]:
        """The query heads that share key/value head ``kv_head``."""
        return list(range(kv_head * self.group_size, (kv_head + 1) * self.group_size))

    def head_slice(self, head: int) -> slice:
        """Query head ``head``'s columns ``h*D:(h+1)*D`` of the head outputs ``[B, T, H*D]``."""
        return slice(head * self.head_dim, (head + 1) * self.head_dim)

    # ---------------------------------------------------------------- checks
    def layers_hint(self) -> str:
        return f"this model has {self.num_layers} layers"

    def heads_hint(self) -> str:
        if self.num_kv_heads == self.num_heads:
            return f"this model has {self.num_heads} query heads per layer"
        return (f"this model has {self.num_heads} query heads per layer sharing {self.num_kv_heads} key/value "
                f"heads (query head h reads KV head h // {self.group_size})")

    def check_layer(self, layer, *, negative: bool = False) -> int:
        """``layer`` as a non-negative index (negative ones count from the end when ``negative``)."""
        return check_index(layer, self.num_layers, "layer", self.layers_hint(), negative=negative)

    def check_head(self, layer, head, *, negative: bool = False) -> tuple[int, int]:
        """``(layer, head)`` checked against the model (query-head index)."""
        layer = self.check_layer(layer, negative=negative)
        head = check_index(head, self.num_heads, "head", self.heads_hint(), negative=negative,
                           where=f" of layer {layer}")
        return layer, head

    def check_query_head(self, head) -> int:
        """A query-head index (negative ones count from the end)."""
        return check_index(head, self.num_heads, "query head", self.heads_hint())

    def check_kv_head(self, kv_head) -> int:
        """A key/value-head index; a query-head index given by mistake is named as such."""
        size = self.num_kv_heads
        if is_integer(kv_head) and size <= int(kv_head) < self.num_heads:
            kv_head = int(kv_head)
            raise LocationError(
                f"KV head {kv_head} is out of range: this model has only {size} key/value heads (0..{size - 1}). "
                f"{kv_head} looks like a query-head index: query head {kv_head} reads KV head "
                f"{self.kv_head_of(kv_head)}; use kv_head_of(head) to convert"
            )
        return check_index(kv_head, size, "KV head", self.heads_hint())


# ---------------------------------------------------------------------------- sites


def _missing(model, what: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"{architecture_of(model)} has no {what}; finwidget expects the decoder layout of Qwen2, Llama and "
        "Mistral (model.model.embed_tokens / .layers[l].self_attn.o_proj / .norm, model.lm_head)"
    )


def decoder_stack(model) -> torch.nn.Module:
    """The decoder without its LM head (``model.model`` for Qwen2/Llama-style models)."""
    base = getattr(model, getattr(model, "base_model_prefix", "model") or "model", None)
    if not isinstance(base, torch.nn.Module):
        base = getattr(model, "model", None)
    if base is None and isinstance(getattr(model, "layers", None), torch.nn.ModuleList):
        base = model  # the decoder itself (e.g. a Qwen2Model without its LM head)
    if not isinstance(base, torch.nn.Module) or getattr(base, "layers", None) is None:
        raise _missing(model, "decoder stack with .layers (model.model.layers)")
    return base


def decoder_layers(model) -> torch.nn.ModuleList:
    """The model's decoder layers (``model.model.layers``)."""
    return cast(torch.nn.ModuleList, decoder_stack(model).layers)


def decoder_layer(model, layer: int) -> torch.nn.Module:
    """Decoder layer ``layer``."""
    return decoder_layers(model)[layer]


def residual_stream_site(model, layer: int) -> torch.nn.Module:
    """The module whose first input is the residual stream ``[B, T, E]`` entering ``layer``
    (positional, or the ``hidden_states`` keyword)."""
    return decoder_layer(model, layer)


def attention_module(model, layer: int) -> torch.nn.Module:
    """Layer ``layer``'s self-attention module."""
    attention = getattr(decoder_layer(model, layer), "self_attn", None)
    if attention is None:
        raise _missing(model, f"self_attn in layer {layer}")
    return attention


def mlp_module(model, layer: int) -> torch.nn.Module:
    """Layer ``layer``'s MLP: its output ``[B, T, E]`` is added to the residual stream."""
    mlp = getattr(decoder_layer(model, layer), "mlp", None)
    if mlp is None:
        raise _missing(model, f"mlp in layer {layer}")
    return mlp


def attention_input_norm(model, layer: int) -> torch.nn.Module:
    """The norm applied to the residual stream ``[B, T, E]`` before ``layer``'s attention
    (``input_layernorm``): the queries, keys and values are projections of its output."""
    norm = getattr(decoder_layer(model, layer), "input_layernorm", None)
    if norm is None:
        raise _missing(model, f"input_layernorm in layer {layer}")
    return norm


def qkv_projections(model, layer: int) -> tuple[torch.nn.Linear, torch.nn.Linear, torch.nn.Linear]:
    """``(q_proj, k_proj, v_proj)`` of ``layer``'s attention: normed residual ``[.., E]`` ->
    queries ``[.., H*D]`` (query head ``h``: columns ``h*D:(h+1)*D``), keys and values
    ``[.., Hkv*D]`` (KV head ``g``: columns ``g*D:(g+1)*D``), before the rotary embedding."""
    attention = attention_module(model, layer)
    projections = tuple(getattr(attention, name, None) for name in ("q_proj", "k_proj", "v_proj"))
    if any(p is None for p in projections) or hasattr(attention, "q_norm") or hasattr(attention, "k_norm"):
        raise _missing(model, f"separate q_proj/k_proj/v_proj (without q/k norms) in layer {layer}'s attention")
    return cast(tuple[torch.nn.Linear, torch.nn.Linear, torch.nn.Linear], projections)


def rotary_transpose(gradient: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The transpose of the rotary embedding Qwen2/Llama apply (``x*cos + rotate_half(x)*sin``):
    maps a gradient with respect to rotated queries/keys ``[B, H, T, D]`` to one with respect to
    the projections before rotation. ``cos``/``sin``: ``[B or 1, T, D]`` as the rotary module
    returns them. (``rotate_half`` is antisymmetric, so its transpose is ``-rotate_half``.)"""
    cos, sin = cos.unsqueeze(1).to(gradient.dtype), sin.unsqueeze(1).to(gradient.dtype)
    scaled = gradient * sin
    half = scaled.shape[-1] // 2
    rotated = torch.cat((-scaled[..., half:], scaled[..., :half]), dim=-1)
    return gradient * cos - rotated


def head_output_site(model, layer: int) -> torch.nn.Linear:
    """The output projection of ``layer``'s attention: its forward pre-hook sees the
    concatenated per-head outputs ``[B, T, H*D]`` as its first positional argument."""
    o_proj = getattr(attention_module(model, layer), "o_proj", None)
    if o_proj is None:
        raise _missing(model, f"o_proj in layer {layer}'s attention")
    return o_proj


def hook_head_outputs(model, layers: Iterable[int], make_hook: Callable[[int], Callable]) -> list:
    """Register ``make_hook(layer)`` as a forward pre-hook on each layer's :func:`head_output_site`.

    The hook is called as ``hook(module, args)`` with ``args[0]`` the head outputs
    ``[B, T, H*D]``; returning new ``args`` replaces them. Returns the handles (the caller
    removes them); if registering fails halfway, those already registered are removed.
    """
    handles = []
    try:
        for layer in layers:
            handles.append(head_output_site(model, layer).register_forward_pre_hook(make_hook(layer)))
    except BaseException:
        remove_hooks(handles)
        raise
    return handles


@contextlib.contextmanager
def attention_function(model, name: str) -> Iterator[None]:
    """Run ``model``'s attention through the function registered as ``name`` in transformers'
    attention registry; every config's previous implementation is restored on exit, also when
    the switch itself fails."""
    configs = {id(m.config): m.config for m in model.modules() if hasattr(m, "config")}
    saved = [(c, getattr(c, "_attn_implementation_internal", None)) for c in configs.values()]
    try:
        model.set_attn_implementation(name)
        yield
    finally:
        for config, implementation in saved:
            config._attn_implementation_internal = implementation  # pyright: ignore[reportAttributeAccessIssue] - HF config


def remove_hooks(handles: Iterable) -> None:
    """Remove hook handles (each once; safe to call again)."""
    for handle in handles:
        handle.remove()


def embed_tokens(model) -> torch.nn.Embedding:
    """The input embedding (token ids ``[B, T]`` -> ``[B, T, E]``)."""
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embedding is None:
        raise _missing(model, "input embedding")
    return embedding


def rotary_embedding(model) -> torch.nn.Module:
    """The rotary position embedding shared by every layer (``model.model.rotary_emb``)."""
    rotary = getattr(decoder_stack(model), "rotary_emb", None)
    if rotary is None:
        raise _missing(model, "shared rotary embedding (model.model.rotary_emb)")
    return rotary


def final_norm(model) -> torch.nn.Module:
    """The norm applied to the last residual stream before the LM head (``model.model.norm``)."""
    norm = getattr(decoder_stack(model), "norm", None)
    if norm is None:
        raise _missing(model, "final norm (model.model.norm)")
    return norm


def unembedding(model) -> torch.nn.Linear:
    """The LM head: normed residual ``[..., E]`` -> logits ``[..., V]``."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        raise _missing(model, "output embedding (LM head)")
    return head


def answer_direction(model, token: int, other: int) -> torch.Tensor:
    """``[E]`` float32: ``W_U[token] - W_U[other]``, whose dot product with the normed final
    residual is the logit difference of the two tokens."""
    weight = unembedding(model).weight
    return (weight[token].float() - weight[other].float()).detach()


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


def layer_device(model, layer: int) -> torch.device:
    """Where decoder layer ``layer`` runs."""
    return module_device(decoder_layer(model, layer))
