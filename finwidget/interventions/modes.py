"""Intervention modes as objects: what each does to a head's output, said once.

A head's output ``z`` is its slice ``[..., D]`` of the input of its layer's ``o_proj``
(shape letters: :mod:`finwidget.model_parts`). Each :class:`InterventionMode` says what
replaces it, whether it takes a value, and whether it reads recorded head outputs of
other statements (a reference set for ``"mean"``, a source statement for
``"resample"``). Applying interventions (:mod:`~finwidget.interventions.applying`),
attribution patching's first-order estimate (:mod:`~finwidget.interventions.attribution`)
and the values' validation (:mod:`~finwidget.interventions.spec`) all read these objects.

To add a mode, add one :class:`InterventionMode` to :data:`MODE_OBJECTS`; the widget
receives the list from :func:`mode_catalogue`.

This module works on tensors it is given and imports no torch itself, so importing
the values (:mod:`~finwidget.interventions.spec`) stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from finwidget.errors import InputError


@dataclass(frozen=True)
class InterventionMode:
    """One way of changing a head's output.

    name: the mode's name (``HeadIntervention(..., mode=name)``).
    summary: one sentence for a UI.
    replace: ``replace(z, value, recorded) -> z'``: what replaces the head's output
        ``z`` ``[..., D]`` (``value`` the mode's number or None; ``recorded`` the
        reference mean / source output aligned with ``z``, or None). ``z'`` broadcasts to
        ``z``'s shape. Elementwise in the last dimension, so it also works on every head
        of a layer at once (``[..., H*D]`` with ``recorded`` of the same width).
    takes_value: whether the mode needs ``value=``; ``value_meaning`` says what it is.
    default_value: the value a UI starts from (None when the mode takes none).
    needs_reference: reads head outputs recorded on reference statements (``reference=``).
    needs_source: reads head outputs recorded on a source statement (``source=``).
    per_position_option: accepts ``per_position=True`` (a reference mean per position).
    neutral_value: a value a mode without one still accepts (and drops), e.g. ``zero``
        with ``value=0``.
    """

    name: str
    summary: str
    replace: Callable = field(repr=False)
    takes_value: bool = False
    value_meaning: str = ""
    value_label: str = ""
    default_value: float | None = None
    needs_reference: bool = False
    needs_source: bool = False
    per_position_option: bool = False
    neutral_value: float | None = None

    @property
    def reads_recorded_outputs(self) -> bool:
        return self.needs_reference or self.needs_source

    def positional(self, per_position: bool) -> bool:
        """Whether position ``t`` of the target takes position ``t`` of what was recorded."""
        return self.needs_source or (self.per_position_option and bool(per_position))

    def recorded(self, outputs, layer: int, per_position: bool = False):
        """What this mode reads from recorded head outputs (a :class:`HeadOutputs`) of ``layer``:
        ``[H*D]`` (mean over tokens), ``[T, H*D]`` (mean per position) or ``[B, T, H*D]`` (source)."""
        if self.needs_source:
            return outputs.layer(layer)
        if self.needs_reference:
            return outputs.mean_per_position(layer) if per_position else outputs.mean_over_tokens(layer)
        return None

    def what_it_needs(self) -> str:
        """The argument this mode needs, for error messages (empty when none)."""
        if self.needs_reference:
            return "reference= (statements to average the head's output over)"
        if self.needs_source:
            return "source= (the statement to take the head's output from)"
        return ""

    def describe_value(self, value) -> str:
        """The value as a label suffix, e.g. ``" x2"`` for scale (empty when none)."""
        return self.value_label.format(value) if self.takes_value and value is not None else ""

    def to_dict(self) -> dict:
        """JSON-able description (see :func:`mode_catalogue`)."""
        return {
            "name": self.name,
            "takes_value": self.takes_value,
            "default_value": self.default_value,
            "needs_reference": self.needs_reference,
            "needs_source": self.needs_source,
            "summary": self.summary,
        }


ZERO = InterventionMode(
    name="zero",
    summary="Set the head's output to 0 (the classic ablation).",
    replace=lambda z, value, recorded: z.new_zeros(z.shape),
    neutral_value=0.0,
)
CONSTANT = InterventionMode(
    name="constant",
    summary="Set every element of the head's output to a constant.",
    replace=lambda z, value, recorded: z.new_full(z.shape, value),
    takes_value=True, value_meaning="the constant to write", value_label=" ={:g}", default_value=0.0,
)
MEAN = InterventionMode(
    name="mean",
    summary="Replace the head's output by its mean over reference statements.",
    replace=lambda z, value, recorded: recorded,
    needs_reference=True, per_position_option=True,
)
RESAMPLE = InterventionMode(
    name="resample",
    summary="Replace the head's output by its output on another statement of the same length.",
    replace=lambda z, value, recorded: recorded,
    needs_source=True,
)
SCALE = InterventionMode(
    name="scale",
    summary="Multiply the head's output by a factor (> 1 amplifies, < 1 dampens).",
    replace=lambda z, value, recorded: z * value,
    takes_value=True, value_meaning="the factor to multiply by", value_label=" x{:g}", default_value=0.0,
)

MODE_OBJECTS: dict[str, InterventionMode] = {mode.name: mode for mode in (ZERO, CONSTANT, MEAN, RESAMPLE, SCALE)}
MODES: tuple[str, ...] = tuple(MODE_OBJECTS)


def mode_named(name) -> InterventionMode:
    """The mode called ``name`` (an :class:`~finwidget.errors.InputError` naming the choices otherwise)."""
    mode = MODE_OBJECTS.get(name) if isinstance(name, str) else None
    if mode is None:
        raise InputError(f"unknown intervention mode {name!r}; use one of {', '.join(MODES)}")
    return mode


def mode_catalogue() -> list[dict]:
    """Every mode as JSON-able data, in order: ``name, takes_value, default_value,
    needs_reference, needs_source, summary`` (what the widget receives at start-up)."""
    return [mode.to_dict() for mode in MODE_OBJECTS.values()]
