"""Interventions: switch heads off, patch, attribute; exact and fast enough to click.

- :class:`HeadIntervention`, :class:`InterventionSet`: interventions as values
  (``spec``); applied with :func:`apply_interventions` (or ``InterventionSet.applied``)
  (``applying``).
- :data:`MODES`, :func:`mode_catalogue`, :class:`InterventionMode`: one object per mode
  (``modes``).
- :class:`CachedRun`: the exact fast path, re-running only the layers after the first
  intervention from a cached clean run (``cached_run``).
- :func:`sweep_heads`, :func:`summarize_sweep`: every head in turn (``sweep``).
- :func:`attribution_patching`, :func:`rank_agreement`: first-order estimates from one
  backward pass (``attribution``).
- :func:`activation_patching`: clean -> corrupted patching per layer x position or per
  head (``activation_patching``).
- :func:`attention_gradients`: gradients with respect to attention probabilities
  (``attention_gradients``).
- :class:`AttentionInterventions`: the user guide's API (``guide_api``).
"""

from finwidget.interventions.activation_patching import PatchingResult, activation_patching
from finwidget.interventions.applying import apply_interventions
from finwidget.interventions.attention_gradients import AttentionGradients, attention_gradients
from finwidget.interventions.attribution import attribution_patching, rank_agreement
from finwidget.interventions.cached_run import CachedRun
from finwidget.interventions.guide_api import AttentionInterventions
from finwidget.interventions.head_outputs import HeadOutputs
from finwidget.interventions.modes import MODE_OBJECTS, InterventionMode, mode_catalogue, mode_named
from finwidget.interventions.spec import MODES, HeadIntervention, InterventionSet
from finwidget.interventions.sweep import summarize_sweep, sweep_heads
from finwidget.model_parts import ModelGeometry

HeadGeometry = ModelGeometry  # the old name, kept for existing code

__all__ = [
    "MODES",
    "MODE_OBJECTS",
    "AttentionGradients",
    "AttentionInterventions",
    "CachedRun",
    "HeadGeometry",
    "HeadIntervention",
    "HeadOutputs",
    "InterventionMode",
    "InterventionSet",
    "PatchingResult",
    "activation_patching",
    "apply_interventions",
    "attention_gradients",
    "attribution_patching",
    "mode_catalogue",
    "mode_named",
    "rank_agreement",
    "summarize_sweep",
    "sweep_heads",
]
