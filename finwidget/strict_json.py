"""Strict JSON for everything finwidget writes: a non-finite number is an error, never ``NaN``.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which no strict reader
(``JSON.parse``, most JSON libraries) accepts, and which would carry a meaningless
number on silently. ``strict_dumps`` refuses them with an ``OutputError`` that names
where each one sits (``prediction.clean.logit_diff=nan``).
"""

from __future__ import annotations

import json
import math

from finwidget.errors import OutputError

_SHOWN = 3


def non_finite_paths(value, where: str = "value") -> list[str]:
    """``["value.clean.logit_diff=nan", ...]``: every non-finite float in a JSON-like value
    (dicts, lists, tuples, floats; other leaves are skipped)."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [f"{where}={value}"]
    if isinstance(value, dict):
        return [bad for key, item in value.items() for bad in non_finite_paths(item, f"{where}.{key}")]
    if isinstance(value, (list, tuple)):
        return [bad for i, item in enumerate(value) for bad in non_finite_paths(item, f"{where}[{i}]")]
    return []


def strict_dumps(value, what: str = "value", **kwargs) -> str:
    """``json.dumps(value, allow_nan=False, **kwargs)``; ``OutputError`` naming every
    non-finite number (by its path inside ``what``) instead of ``NaN``/``Infinity``."""
    bad = non_finite_paths(value, what)
    if bad:
        more = f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
        raise OutputError(
            f"{what} holds a non-finite number ({', '.join(bad[:_SHOWN])}{more}), which strict JSON "
            "cannot carry; finwidget writes no NaN or Infinity"
        )
    try:
        return json.dumps(value, allow_nan=False, **kwargs)
    except ValueError as err:  # a non-finite float the walk above cannot see (e.g. from a `default=`)
        raise OutputError(f"{what} cannot be written as strict JSON: {err}") from None
