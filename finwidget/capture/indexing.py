"""Turning user indices (int, slice, list, tensor, None) into positions, with clear range errors."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from finwidget.errors import LocationError


def is_int(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point() \
            and value.dtype != torch.bool:
        return True
    try:
        import numpy as np

        return isinstance(value, np.integer)
    except ImportError:  # pragma: no cover - numpy is a dependency
        return False


def check_position(value, size: int, what: str, valid_hint: str = "") -> int:
    """One index in ``[-size, size)`` -> its non-negative position, or a LocationError naming the range."""
    if not is_int(value):
        raise LocationError(f"{what} must be an int, got {type(value).__name__} {value!r}")
    index = int(value)
    if not -size <= index < size:
        hint = f"; {valid_hint}" if valid_hint else ""
        raise LocationError(f"{what} {index} is out of range: valid {what}s are 0..{size - 1}{hint}")
    return index % size


def positions(index, size: int, what: str, valid_hint: str = "") -> tuple[torch.Tensor, bool]:
    """An index for one dimension -> (``[n]`` long positions, whether the dimension is dropped).

    ``None`` or ``slice(None)`` selects everything; an int selects one position and drops
    the dimension (as tensor indexing does); a slice, range, list or 1-D integer tensor
    selects those positions in order.
    """
    if index is None:
        return torch.arange(size), False
    if is_int(index):
        return torch.tensor([check_position(index, size, what, valid_hint)]), True
    if isinstance(index, slice):
        return torch.arange(size)[index], False
    if isinstance(index, range):
        index = list(index)
    if isinstance(index, torch.Tensor):
        if index.dtype == torch.bool or index.is_floating_point() or index.dim() != 1:
            raise LocationError(f"{what} index must be integer positions, got a {index.dtype} tensor "
                                f"of shape {tuple(index.shape)}")
        index = index.tolist()
    if isinstance(index, Sequence) and not isinstance(index, (str, bytes)):
        return torch.tensor([check_position(i, size, what, valid_hint) for i in index], dtype=torch.long), False
    try:
        import numpy as np

        if isinstance(index, np.ndarray) and index.ndim == 1 and np.issubdtype(index.dtype, np.integer):
            return positions(index.tolist(), size, what, valid_hint)
    except ImportError:  # pragma: no cover
        pass
    raise LocationError(f"cannot index {what}s with {type(index).__name__} {index!r}; "
                        "use an int, a slice, or a list of ints")
