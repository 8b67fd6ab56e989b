"""Where the analysis reads attention from, and how tokens line up with its columns.

Every metric reads attention through one small interface, the :class:`AttentionSource`
protocol (an ``AttentionCapture`` has it): ``num_layers``, ``num_heads``, ``layers``,
``batch_size``, ``seq_len``, ``attention_mask`` (``[B, T]`` long or None) and
``attention(layer, head=None, query=None, batch=0) -> float32`` (``[H, Tq, T]`` for
``head=None``; shape letters as in ``finwidget.model_parts``). ``as_attention_source`` accepts a capture, the guide's
``AttentionHook``, a ``hook.attention_weights`` mapping, a dict ``{'layer_i': [B, H, T, T]}``,
the tuple a model returns with ``output_attentions=True``, or a ``FinancialAttentionAnalyzer``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np
import torch

from finwidget.errors import InputError, LocationError
from finwidget.model_parts import check_index, is_integer
from finwidget.statement.layout import StatementLayout

#: Default cap on the attention values one chunk may hold (bytes, float32).
DEFAULT_MAX_BYTES = 64 * 2**20
_LAYER_NAME = re.compile(r"^layer_(\d+)$")


@runtime_checkable
class AttentionSource(Protocol):
    """What every metric reads attention from (``AttentionCapture`` and :class:`TensorAttention`).

    Attributes:
        num_layers: ``L``, the model's layer count.
        num_heads: ``H``, query heads per layer.
        layers: the layer indices held (a subset of ``0..L-1``), ascending.
        batch_size, seq_len: ``B`` and ``T`` of the recorded batch.
        attention_mask: ``[B, T]`` long 0/1 padding mask (1 = real token), or None without padding.
        attention_weights: ``{'layer_i': [B, H, T, T]}`` tensor-likes (computed on access for a capture).

    ``isinstance(x, AttentionSource)`` checks only that these names exist (Python 3.11 reads
    them to check, so a capture that recorded nothing raises its ``CaptureStateError`` there).
    """

    @property
    def num_layers(self) -> int: ...

    @property
    def num_heads(self) -> int: ...

    @property
    def layers(self) -> Sequence[int]: ...

    @property
    def batch_size(self) -> int: ...

    @property
    def seq_len(self) -> int: ...

    @property
    def attention_mask(self) -> torch.Tensor | None: ...

    @property
    def attention_weights(self) -> Mapping[str, Any]: ...

    def attention(self, layer: int, head: Any = None, query: Any = None, batch: int = 0) -> torch.Tensor:
        """Float32 probabilities of ``layer``, batch row ``batch``: ``[H, Tq, T]`` for ``head=None``,
        ``[Tq, T]`` for one head (``Tq = T`` unless ``query`` selects rows)."""
        ...


class TensorAttention:
    """Attention already held as tensors, behind the capture's interface.

    Args:
        layers: ``{layer index: [B, H, T, T] tensor}``.
        attention_mask: optional ``[B, T]`` 0/1 padding mask.
        num_layers: the model's layer count (default: highest layer + 1).
    """

    def __init__(self, layers: Mapping[int, torch.Tensor], attention_mask=None, num_layers: int | None = None):
        if not layers:
            raise InputError("no attention layers given")
        self._layers = {}
        shape = None
        for index, tensor in sorted(layers.items()):
            tensor = torch.as_tensor(tensor)
            if tensor.dim() != 4 or tensor.shape[-1] != tensor.shape[-2]:
                raise InputError(
                    f"layer {index}: attention must be [batch, heads, query, key] with query == key, "
                    f"got shape {tuple(tensor.shape)}"
                )
            if shape is not None and tensor.shape != shape:
                raise InputError(f"layer {index}: shape {tuple(tensor.shape)} differs from {tuple(shape)}")
            shape = tensor.shape
            self._layers[int(index)] = tensor
        assert shape is not None  # layers is not empty
        self.layers = sorted(self._layers)
        self.num_layers = num_layers if num_layers is not None else self.layers[-1] + 1
        self.batch_size, self.num_heads, self.seq_len, _ = (int(s) for s in shape)
        self.attention_mask = None if attention_mask is None else torch.as_tensor(attention_mask).long()

    def attention(self, layer: int, head=None, query=None, batch: int = 0) -> torch.Tensor:
        if layer not in self._layers:
            raise LocationError(f"layer {layer} is not available; layers held: {self.layers}")
        data = self._layers[layer][check_index(batch, self.batch_size, "batch row")]
        data = data if head is None else data[head]
        if query is not None:
            data = data[..., query, :]
        return data.float()

    @property
    def attention_weights(self) -> dict[str, torch.Tensor]:
        return {f"layer_{i}": t for i, t in self._layers.items()}


def as_attention_source(attention) -> AttentionSource:
    """Wrap what the user has into an :class:`AttentionSource`."""
    if isinstance(attention, AttentionSource):
        return attention
    # What holds a source: a FinancialAttentionAnalyzer (.source), the guide's AttentionHook
    # (.capture), a hook.attention_weights mapping (._capture).
    for holder in ("source", "capture", "_capture"):
        inner = getattr(attention, holder, None)
        if inner is not None and isinstance(inner, AttentionSource):
            return inner
    if isinstance(attention, Mapping):
        layers = {}
        for name, value in attention.items():
            match = _LAYER_NAME.match(name) if isinstance(name, str) else None
            if match is None and not isinstance(name, int):
                raise InputError(f"attention mapping keys must be 'layer_<i>', got {name!r}")
            layers[int(match.group(1)) if match else name] = _as_tensor(value)
        return TensorAttention(layers)
    if isinstance(attention, (tuple, list)) and attention and all(_tensor_like(a) for a in attention):
        return TensorAttention({i: _as_tensor(a) for i, a in enumerate(attention)})
    raise InputError(
        "cannot read attention from a "
        f"{type(attention).__name__}; pass an AttentionCapture, an AttentionHook, hook.attention_weights, "
        "a dict {'layer_i': [batch, heads, query, key] tensor}, or a model's output_attentions tuple"
    )


def _tensor_like(value) -> bool:
    return isinstance(value, (torch.Tensor, np.ndarray))


def _as_tensor(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    materialize = getattr(value, "materialize", None)
    if callable(materialize):
        return cast(torch.Tensor, materialize())  # a LazyLayerAttention's tensor
    raise InputError(f"attention values must be tensors, got {type(value).__name__}")


@dataclass(frozen=True)
class TokenColumns:
    """Which columns of one batch row hold the layout's tokens.

    columns: ``[n]`` long, the capture column of layout token ``i`` (the row's valid,
        unpadded positions in order; a left-padded row starts after its padding).
    contiguous: the columns form one run ``columns[0] .. columns[-1]``.
    """

    columns: torch.Tensor
    contiguous: bool

    @property
    def count(self) -> int:
        return int(self.columns.numel())

    def query_index(self, start: int, stop: int):
        """Index for capture rows of layout tokens ``start..stop-1`` (a slice when possible)."""
        if self.contiguous:
            first = int(self.columns[0])
            return slice(first + start, first + stop)
        return self.columns[start:stop].tolist()

    def column_of(self, token: int) -> int:
        return int(self.columns[token])


def token_columns(source, batch: int = 0, layout: StatementLayout | None = None) -> TokenColumns:
    """The capture columns of batch row ``batch``'s real tokens (the layout's first, when given).

    The layout's tokens are matched to the row's valid (unpadded) positions from the
    first one; positions after them (e.g. generated tokens) are not in the layout.
    """
    batch = check_index(batch, source.batch_size, "batch row")
    mask = source.attention_mask
    if mask is None:
        columns = torch.arange(source.seq_len)
    else:
        columns = torch.nonzero(torch.as_tensor(mask)[batch].bool(), as_tuple=False).flatten().cpu()
    if layout is not None:
        if layout.num_tokens > columns.numel():
            raise InputError(
                f"the statement layout has {layout.num_tokens} tokens but batch row {batch} of the captured "
                f"attention has {columns.numel()} real tokens; read the statement the model actually ran "
                "(same text, prompt template and tokenizer)"
            )
        columns = columns[: layout.num_tokens]
    contiguous = bool(columns.numel() == 0 or int(columns[-1]) - int(columns[0]) + 1 == columns.numel())
    return TokenColumns(columns=columns, contiguous=contiguous)


def check_layers(source, layers) -> list[int]:
    """Validate a layer selection against what the source holds; None -> all held layers."""
    held = list(source.layers)
    if layers is None:
        return held
    if is_integer(layers):
        layers = [layers]
    if not isinstance(layers, Sequence):
        raise InputError(f"layers must be None, an int or a list of ints, got {type(layers).__name__}")
    out = []
    for layer in layers:
        resolved = check_index(layer, source.num_layers, "layer", f"this model has {source.num_layers} layers")
        if resolved not in held:
            raise LocationError(f"layer {resolved} was not captured; captured layers: {held}")
        out.append(resolved)
    return out


def rows_per_chunk(num_heads: int, num_keys: int, max_bytes: int | None) -> int:
    """How many query rows of all heads fit in ``max_bytes`` of float32."""
    budget = DEFAULT_MAX_BYTES if max_bytes is None else int(max_bytes)
    if budget <= 0:
        raise InputError(f"max_bytes must be positive, got {max_bytes!r}")
    return max(1, budget // max(1, num_heads * num_keys * 4))


def layer_rows(source, layer: int, batch: int, cols: TokenColumns, start: int, stop: int) -> torch.Tensor:
    """``[H, stop-start, n]`` float32: every head's attention from layout tokens start..stop-1
    to the layout's tokens (columns outside the layout dropped)."""
    block = source.attention(layer, head=None, query=cols.query_index(start, stop), batch=batch)
    if block.dim() == 2:  # a single row came back without its query dimension
        block = block[:, None, :]
    if cols.contiguous:
        first = int(cols.columns[0]) if cols.count else 0
        return block[..., first:first + cols.count].float()
    return block[..., cols.columns.to(block.device)].float()


def head_rows(source, layer: int, head: int, batch: int, cols: TokenColumns, start: int, stop: int) -> torch.Tensor:
    """``[stop-start, n]`` float32: one head's attention from layout tokens start..stop-1 to the layout's tokens."""
    block = source.attention(layer, head=head, query=cols.query_index(start, stop), batch=batch)
    if block.dim() == 1:
        block = block[None, :]
    if cols.contiguous:
        first = int(cols.columns[0]) if cols.count else 0
        return block[..., first:first + cols.count].float()
    return block[..., cols.columns.to(block.device)].float()
