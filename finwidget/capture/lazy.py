"""A ``[batch, heads, query, key]`` attention tensor that is computed only where it is read.

The guide treats ``attention_weights['layer_3']`` as a torch tensor::

    attn = analyzer.attention_weights['layer_3']
    attn.shape[1]                          # number of heads: no computation
    attn[0, 5].numpy()                     # one head's [T, T] matrix: computes one head
    attn[0, :, pos, :].mean(dim=0)         # one query row of every head: computes H rows

:class:`LazyLayerAttention` answers shape questions from the capture's geometry and,
when indexed by batch / head / query positions (ints, slices, lists), computes only
those heads and rows from the recorded queries and keys. Anything else a tensor can do
(``attn.mean()``, ``torch.max(attn)``, ``attn * 2``, ``attn.numpy()``) materializes the
whole layer first: ``B x H x T x T`` float32, which is large for long inputs.

Results are CPU float32 tensors whatever device the capture stored on, so the guide's
``.numpy()`` calls work for GPU models too (``AttentionCapture.attention`` returns
results on the storage device instead).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch

from finwidget.capture.indexing import positions
from finwidget.errors import LocationError
from finwidget.model_parts import check_index, is_integer


def _is_basic(index) -> bool:
    return isinstance(index, slice) or is_integer(index)


class LazyLayerAttention:
    """Attention probabilities of one captured layer, ``[B, H, T, T]`` float32, computed on access."""

    def __init__(self, capture, layer: int):
        self._capture = capture
        self._layer = layer

    # ------------------------------------------------------------------ tensor metadata
    @property
    def layer(self) -> int:
        return self._layer

    @property
    def shape(self) -> torch.Size:
        cap = self._capture
        return torch.Size((cap.batch_size, cap.num_heads, cap.seq_len, cap.seq_len))

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return 4

    ndim = property(dim)

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def device(self) -> torch.device:
        """Always the CPU: the guide calls ``.numpy()`` on what this view returns, so results are
        moved there (the computation itself runs where the capture stored its tensors)."""
        return torch.device("cpu")

    def numel(self) -> int:
        return self.shape.numel()

    def __len__(self) -> int:
        return self.shape[0]

    def __iter__(self) -> Iterator[torch.Tensor]:
        for b in range(len(self)):
            yield self[b]

    def __repr__(self) -> str:
        b, h, t, _ = self.shape
        return (f"LazyLayerAttention(layer={self._layer}, shape=[{b}, {h}, {t}, {t}], dtype=float32; "
                "computed on indexing)")

    # ------------------------------------------------------------------ indexing
    def __getitem__(self, index) -> torch.Tensor:
        parts = self._expand(index)
        if parts is None:
            return self.materialize()[index]
        batch_index, head_index, query_index, key_index = parts
        cap = self._capture
        batches, drop_batch = positions(batch_index, cap.batch_size, "batch row")
        heads, drop_head = positions(head_index, cap.num_heads, "query head", cap.geometry.heads_hint())
        rows, drop_query = positions(query_index, cap.seq_len, "query position",
                                     f"the recorded sequence has {cap.seq_len} tokens")
        blocks = [cap._rows(self._layer, int(b), heads, rows, None).cpu() for b in batches]
        result = torch.stack(blocks) if len(blocks) != 1 else blocks[0].unsqueeze(0)   # [nb, nh, nq, T]
        result = result[:, :, :, key_index] if not (isinstance(key_index, slice) and key_index == slice(None)) \
            else result
        # Drop the dimensions indexed by an int, as tensor indexing does (key dim already handled).
        for dim, drop in ((2, drop_query), (1, drop_head), (0, drop_batch)):
            if drop:
                result = result.select(dim, 0)
        return result

    def _expand(self, index):
        """Four per-dimension indices, or None when the index needs the whole tensor
        (None/newaxis, boolean masks, several list indices)."""
        if not isinstance(index, tuple):
            index = (index,)
        if any(i is Ellipsis for i in index):
            if sum(i is Ellipsis for i in index) > 1:
                return None
            at = next(k for k, i in enumerate(index) if i is Ellipsis)
            fill = 4 - (len(index) - 1)
            index = index[:at] + (slice(None),) * fill + index[at + 1:]
        if len(index) > 4:
            raise LocationError(f"too many indices for a 4-dimensional [batch, head, query, key] tensor: {len(index)}")
        index = tuple(index) + (slice(None),) * (4 - len(index))
        advanced = [i for i in index if not _is_basic(i)]
        if any(i is None for i in index) or len(advanced) > 1:
            return None
        for i in advanced:
            if isinstance(i, torch.Tensor) and (i.dtype == torch.bool or i.dim() != 1):
                return None
        key_index = index[3]
        if not _is_basic(key_index) and not isinstance(key_index, (list, range, torch.Tensor)):
            return None
        if is_integer(key_index):
            check_index(key_index, self.shape[3], "key position", f"the recorded sequence has {self.shape[3]} tokens")
        if isinstance(key_index, range):
            key_index = list(key_index)
        return index[0], index[1], index[2], key_index

    # ------------------------------------------------------------------ the whole layer
    def materialize(self) -> torch.Tensor:
        """The whole layer as a ``[B, H, T, T]`` float32 tensor (computed head chunk by head chunk)."""
        cap = self._capture
        all_heads = torch.arange(cap.num_heads)
        all_rows = torch.arange(cap.seq_len)
        return torch.stack([cap._rows(self._layer, b, all_heads, all_rows, None).cpu()
                            for b in range(cap.batch_size)])

    def numpy(self):
        return self.materialize().numpy()

    def __array__(self, dtype=None, copy=None):
        array = self.materialize().numpy()
        return array if dtype is None else array.astype(dtype)

    def __getattr__(self, name: str):
        # Any other tensor method or attribute (mean, sum, max, tolist, cpu, ...): on the whole layer.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.materialize(), name)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        def real(value):
            if isinstance(value, LazyLayerAttention):
                return value.materialize()
            if isinstance(value, (list, tuple)):
                return type(value)(real(v) for v in value)
            return value

        return func(*real(args), **{k: real(v) for k, v in (kwargs or {}).items()})

    def _binary(self, other, op):
        other = other.materialize() if isinstance(other, LazyLayerAttention) else other
        return op(self.materialize(), other)

    def __add__(self, other): return self._binary(other, lambda a, b: a + b)
    def __radd__(self, other): return self._binary(other, lambda a, b: b + a)
    def __sub__(self, other): return self._binary(other, lambda a, b: a - b)
    def __rsub__(self, other): return self._binary(other, lambda a, b: b - a)
    def __mul__(self, other): return self._binary(other, lambda a, b: a * b)
    def __rmul__(self, other): return self._binary(other, lambda a, b: b * a)
    def __truediv__(self, other): return self._binary(other, lambda a, b: a / b)
    def __rtruediv__(self, other): return self._binary(other, lambda a, b: b / a)
    def __pow__(self, other): return self._binary(other, lambda a, b: a ** b)
    def __matmul__(self, other): return self._binary(other, lambda a, b: a @ b)
    def __gt__(self, other): return self._binary(other, lambda a, b: a > b)
    def __ge__(self, other): return self._binary(other, lambda a, b: a >= b)
    def __lt__(self, other): return self._binary(other, lambda a, b: a < b)
    def __le__(self, other): return self._binary(other, lambda a, b: a <= b)
    def __neg__(self): return -self.materialize()


class LayerAttentionMap(Mapping):
    """``'layer_{i}'`` -> :class:`LazyLayerAttention` for every captured layer, in layer order.

    Also accepts the layer index as an int: ``weights[3]`` is ``weights['layer_3']``.
    """

    def __init__(self, capture):
        self._capture = capture

    def _layer_of(self, key) -> int:
        layers = self._capture.layers
        if isinstance(key, str) and key.startswith("layer_") and key[6:].lstrip("-").isdigit():
            layer = int(key[6:])
        elif isinstance(key, int) and not isinstance(key, bool):
            layer = key
        else:
            raise KeyError(f"{key!r}: attention layers are named 'layer_0'..'layer_{self._capture.num_layers - 1}' "
                           f"(captured: {', '.join(f'layer_{i}' for i in layers)})")
        if layer not in layers:
            raise KeyError(f"{key!r} is not a captured layer: this model has {self._capture.num_layers} layers "
                           f"(0..{self._capture.num_layers - 1}); captured: "
                           f"{', '.join(f'layer_{i}' for i in layers)}")
        return layer

    def __getitem__(self, key) -> LazyLayerAttention:
        return LazyLayerAttention(self._capture, self._layer_of(key))

    def __contains__(self, key) -> bool:
        try:
            self._layer_of(key)
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return (f"layer_{i}" for i in self._capture.layers)

    def __len__(self) -> int:
        return len(self._capture.layers)

    def __repr__(self) -> str:
        return f"LayerAttentionMap({', '.join(self)})"
