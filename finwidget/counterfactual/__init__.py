"""Counterfactual statements run through the model.

- ``counterfactual`` and the edits (``SetNumber``, ``SetValue``, ``SetChange``, ``Scale``,
  ``FlipChange``, ``SwapYears``) live in ``finwidget.statement.edits`` and are re-exported here.
- :func:`span_patching`: activation patching between a statement and its counterfactual
  of a different token length, aligned by spans (``patching``).
- :func:`family_effects`: a ``counterfactual_family`` run through the model (which single
  edits flip the answer), one row per counterfactual (``family``).
- :func:`sensitivity`: the logit difference as one line item's value sweeps a range,
  with its flip points (``sensitivity``).

``finwidget.counterfactual`` is both this package and the function: calling the package,
``finwidget.counterfactual(statement, edits, ...)``, is ``counterfactual(statement, edits, ...)``
(a package and a function of one name cannot otherwise live side by side under ``finwidget``:
importing the package would replace the function).
"""

import sys
import types

from finwidget.counterfactual.family import family_effects
from finwidget.counterfactual.patching import span_patching
from finwidget.counterfactual.sensitivity import FlipPoint, SensitivityCurve, sensitivity
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


class _CallablePackage(types.ModuleType):
    """This package, callable as :func:`counterfactual`."""

    def __call__(self, statement, edits, **options):
        return counterfactual(statement, edits, **options)


sys.modules[__name__].__class__ = _CallablePackage
