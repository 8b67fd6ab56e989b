"""Turning user indices (int, slice, list, tensor, None) into positions, with clear range errors.

One index is checked by :func:`finwidget.model_parts.check_index`; this module reads the
selections (slices, lists, tensors) built from them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from finwidget.errors import LocationTypeError
from finwidget.model_parts import check_index, is_integer


def positions(index, size: int, what: str, valid_hint: str = "") -> tuple[torch.Tensor, bool]:
    """An index for one dimension -> (``[n]`` long positions, whether the dimension is dropped).

    ``None`` or ``slice(None)`` selects everything; an int selects one position and drops
    the dimension (as tensor indexing does); a slice, range, list or 1-D integer tensor
    selects those positions in order.
    """
    if index is None:
        return torch.arange(size), False
    if is_integer(index):
        return torch.tensor([check_index(index, size, what, valid_hint)]), True
    if isinstance(index, slice):
        return torch.arange(size)[index], False
    if isinstance(index, range):
        index = list(index)
    if isinstance(index, torch.Tensor):
        if index.dtype == torch.bool or index.is_floating_point() or index.dim() != 1:
            raise LocationTypeError(f"{what} index must be integer positions, got a {index.dtype} tensor "
                                f"of shape {tuple(index.shape)}")
        index = index.tolist()
    if isinstance(index, Sequence) and not isinstance(index, (str, bytes)):
        return torch.tensor([check_index(i, size, what, valid_hint) for i in index], dtype=torch.long), False
    try:
        import numpy as np

        if isinstance(index, np.ndarray) and index.ndim == 1 and np.issubdtype(index.dtype, np.integer):
            return positions(index.tolist(), size, what, valid_hint)
    except ImportError:  # pragma: no cover
        pass
    raise LocationTypeError(f"cannot index {what}s with {type(index).__name__} {str(index)[:80]!r}; "
                        "use an int, a slice, or a list of ints")
