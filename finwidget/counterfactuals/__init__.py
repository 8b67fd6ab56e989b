"""Counterfactual statements run through the model.

- ``counterfactual`` and the edits (``SetNumber``, ``SetValue``, ``SetChange``, ``Scale``,
  ``FlipChange``, ``SwapYears``) live in ``finwidget.statement.edits`` and are re-exported here.
- :func:`span_patching`: activation patching between a statement and its counterfactual
  of a different token length, aligned by spans (``patching``).
- :func:`family_effects`: a ``counterfactual_family`` run through the model (which single
  edits flip the answer), one row per counterfactual (``family``).
- :func:`sensitivity`: the logit difference as one line item's value sweeps a range,
  with its flip points (``sensitivity``).

"""

from finwidget.counterfactuals.family import family_effects
from finwidget.counterfactuals.patching import span_patching
from finwidget.counterfactuals.sensitivity import FlipPoint, SensitivityCurve, sensitivity
from finwidget.statement.edits import (
    DEMO_TOTALS,
    CounterfactualStatement,
    FlipChange,
    Scale,
    SetChange,
    SetNumber,
    SetValue,
    SwapYears,
    counterfactual,
    counterfactual_family,
    family_frame,
)

__all__ = [
    "DEMO_TOTALS",
    "CounterfactualStatement",
    "FlipChange",
    "FlipPoint",
    "Scale",
    "SensitivityCurve",
    "SetChange",
    "SetNumber",
    "SetValue",
    "SwapYears",
    "counterfactual",
    "counterfactual_family",
    "family_effects",
    "family_frame",
    "sensitivity",
    "span_patching",
]

