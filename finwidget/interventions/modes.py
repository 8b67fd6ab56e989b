"""Placeholder until the intervention modes become objects (issue 8): only ``mode_catalogue``.

Built from :data:`finwidget.interventions.spec.MODES`; the widget reads this list.
"""

from __future__ import annotations

from finwidget.interventions.spec import MODES

_SUMMARIES = {
    "zero": "the head's output is set to 0",
    "constant": "every element of the head's output is set to the value",
    "mean": "the head's output is replaced by its mean over reference statements",
    "resample": "the head's output is replaced by its output on another statement",
    "scale": "the head's output is multiplied by the value",
}
_DEFAULT_VALUES = {"constant": 0.0, "scale": 0.0}


def mode_catalogue() -> list[dict]:
    """Every mode as ``{name, takes_value, default_value, needs_reference, needs_source, summary}``."""
    return [
        {
            "name": name,
            "takes_value": name in _DEFAULT_VALUES,
            "default_value": _DEFAULT_VALUES.get(name),
            "needs_reference": name == "mean",
            "needs_source": name == "resample",
            "summary": _SUMMARIES[name],
        }
        for name in MODES
    ]
