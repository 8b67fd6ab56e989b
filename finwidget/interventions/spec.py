"""Interventions as plain values: which head, what to do to it, where.

A :class:`HeadIntervention` names one query head of one layer and how its output
(the head's slice of the input of ``o_proj``) is changed. An :class:`InterventionSet`
is an immutable collection of them, one per head, that can be combined, compared,
serialized to JSON and shown in a UI. The values never touch a model (this module
imports nothing that does): applying a set is
:func:`~finwidget.interventions.applying.apply_interventions` (``InterventionSet.applied``
is the same, provided by the applying module).

Modes (each one object in :mod:`~finwidget.interventions.modes`):
    ``"zero"``      the head's output is set to 0 (the classic ablation).
    ``"constant"``  every element of the head's output is set to ``value``.
    ``"mean"``      replaced by its mean over reference statements, averaged over
                    their tokens (default) or per position (``per_position=True``;
                    reference and target must then have the same token length).
    ``"resample"``  replaced by the head's output on another statement (the
                    ``source``) of the same token length, position by position.
    ``"scale"``     multiplied by ``value`` (> 1 amplifies, < 1 dampens).

Positions: ``None`` means every token; otherwise *statement positions*: token indices
counted in each statement's own tokens (padding of a batch is skipped, so position 5
is the sixth token of every statement of a left-padded batch), negative ones counting
from its end (``-1`` is the answer position of a prompt, and the newest token during
generation). A position outside a statement raises
:class:`~finwidget.errors.LocationError` before the model runs (under ``generate``,
positive positions past the prompt are the tokens generated later).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import cast

from finwidget.errors import CaptureStateError, InputError
from finwidget.interventions.modes import MODES, InterventionMode, mode_named
from finwidget.model_parts import ModelGeometry, check_index, is_integer

__all__ = ["MODES", "HeadIntervention", "InterventionSet"]


@dataclass(frozen=True)
class HeadIntervention:
    """Change the output of query head ``head`` of layer ``layer``.

    Args:
        layer: decoder layer index (0-based).
        head: query head index within the layer (0-based).
        mode: one of ``"zero" | "constant" | "mean" | "resample" | "scale"``.
        value: the constant (``"constant"``) or the factor (``"scale"``); must be
            finite. Not used by the other modes.
        positions: token positions to change (``None``: all). Negative positions
            count from the end of the sequence.
        per_position: ``"mean"`` only: use the reference mean at each position
            instead of the mean over all reference tokens.
    """

    layer: int
    head: int
    mode: str = "zero"
    value: float | None = None
    positions: tuple[int, ...] | None = None
    per_position: bool = False

    def __post_init__(self):
        for name in ("layer", "head"):
            object.__setattr__(self, name, check_index(getattr(self, name), None, name, negative=False))
        mode = mode_named(self.mode)
        if mode.takes_value:
            if self.value is None:
                raise InputError(f"mode {self.mode!r} needs value= ({mode.value_meaning})")
            object.__setattr__(self, "value", _finite_value(self.value, f"value for mode {self.mode!r} on layer "
                                                                      f"{self.layer} head {self.head}"))
        elif self.value is not None and not (mode.neutral_value is not None and self.value == mode.neutral_value):
            raise InputError(
                f"mode {self.mode!r} takes no value (got {self.value!r}); "
                "use mode='constant' to write a value or mode='scale' to multiply by one"
            )
        else:
            object.__setattr__(self, "value", None)
        if self.per_position and not mode.per_position_option:
            per_position_modes = [m for m in MODES if mode_named(m).per_position_option]
            raise InputError(f"per_position=True only applies to mode={per_position_modes[0]!r}")
        object.__setattr__(self, "per_position", bool(self.per_position))
        object.__setattr__(self, "positions", _normalize_positions(self.positions))

    @property
    def location(self) -> tuple[int, int]:
        """``(layer, head)``."""
        return (self.layer, self.head)

    @property
    def intervention_mode(self) -> InterventionMode:
        """The :class:`~finwidget.interventions.modes.InterventionMode` object of ``mode``."""
        return mode_named(self.mode)

    @property
    def needs_reference(self) -> bool:
        return self.intervention_mode.needs_reference

    @property
    def needs_source(self) -> bool:
        return self.intervention_mode.needs_source

    def to_dict(self) -> dict:
        out = {"layer": self.layer, "head": self.head, "mode": self.mode}
        if self.value is not None:
            out["value"] = self.value
        if self.positions is not None:
            out["positions"] = list(self.positions)
        if self.per_position:
            out["per_position"] = True
        return out

    @classmethod
    def from_dict(cls, data: dict) -> HeadIntervention:
        if not isinstance(data, dict):
            raise InputError(f"a head intervention must be a dict, got {type(data).__name__}")
        unknown = set(data) - {"layer", "head", "mode", "value", "positions", "per_position"}
        if unknown:
            raise InputError(f"unknown keys in head intervention: {sorted(unknown)}")
        missing = {"layer", "head"} - set(data)
        if missing:
            raise InputError(f"head intervention is missing {sorted(missing)}")
        return cls(**data)

    def describe(self) -> str:
        """A short human-readable label, e.g. ``"L3H5 zero"`` or ``"L1H0 scale x2"``."""
        text = f"L{self.layer}H{self.head} {self.mode}" + self.intervention_mode.describe_value(self.value)
        if self.per_position:
            text += " per position"
        if self.positions is not None:
            text += f" @{list(self.positions)}"
        return text


def _finite_value(value, what: str) -> float:
    """``value`` as a finite float (ints, floats, numpy/torch real scalars), or an :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) and not _is_real_scalar(value):
        raise InputError(f"{what} must be a number, got {type(value).__name__} {str(value)[:80]}")
    try:
        number = float(value)
    except (OverflowError, TypeError, ValueError):
        number = math.inf
    if not math.isfinite(number):
        raise InputError(f"{what} is {str(value)[:80]}; it must be a finite number")
    return number


def _is_real_scalar(value) -> bool:
    """A 0-d real tensor / numpy array (e.g. ``torch.tensor(2.0)``)."""
    shape = getattr(value, "shape", None)
    dtype = str(getattr(value, "dtype", ""))
    return shape is not None and tuple(shape) == () and ("float" in dtype or "int" in dtype) and "bool" not in dtype


def _normalize_positions(positions) -> tuple[int, ...] | None:
    if positions is None:
        return None
    if is_integer(positions):
        positions = (positions,)
    if isinstance(positions, (str, bytes, dict)):
        raise InputError(f"positions must be None, an int or a list of ints, got {type(positions).__name__}")
    try:
        items = list(cast(Iterable, positions))  # a bool or other non-iterable raises TypeError
    except TypeError:
        raise InputError(f"positions must be None, an int or a list of ints, got {str(positions)[:80]!r}") from None
    if not items:
        raise InputError("positions is empty; pass None for every position or at least one position")
    return tuple(sorted({check_index(p, None, "position") for p in items}))


def _pairs(heads) -> list:
    """``(layer, head)`` pairs from an iterable (their types are checked by ``HeadIntervention``)."""
    if isinstance(heads, (str, bytes, dict)) or not hasattr(heads, "__iter__"):
        raise InputError(f"heads must be an iterable of (layer, head) pairs, got {type(heads).__name__}")
    pairs = []
    for item in heads:
        try:
            layer, head = item
        except (TypeError, ValueError):
            raise InputError(f"heads must be (layer, head) pairs, got {str(item)[:80]!r}") from None
        pairs.append((layer, head))
    return pairs


def _as_intervention(item) -> HeadIntervention:
    if isinstance(item, HeadIntervention):
        return item
    if isinstance(item, dict):
        return HeadIntervention.from_dict(item)
    if isinstance(item, (tuple, list)) and 2 <= len(item) <= 3:
        return HeadIntervention(*item)
    raise InputError(
        f"cannot read {item!r} as a head intervention; pass HeadIntervention(layer, head, mode, ...), "
        "a (layer, head[, mode]) tuple or a dict"
    )


@dataclass(frozen=True)
class InterventionSet:
    """An immutable set of head interventions, at most one per (layer, head).

    Build with ``InterventionSet([HeadIntervention(3, 1), (5, 0, "zero")])`` or
    ``InterventionSet.ablating([(3, 1), (5, 0)])``. Sets are values: ``.add``,
    ``.remove``, ``.toggle`` and ``|`` return new sets; ``==`` compares contents;
    ``to_json``/``from_json`` round-trip exactly.

    Apply to a model with ``with apply_interventions(model, s, reference=..., source=...): ...``
    (or ``with s.applied(model, ...)``).
    """

    interventions: Sequence[HeadIntervention] = field(default=())  # kept as a tuple, in (layer, head) order

    def __post_init__(self):
        items = self.interventions
        if isinstance(items, (HeadIntervention, dict)):
            items = [items]
        if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
            raise InputError(
                f"InterventionSet takes a list of head interventions, got {type(items).__name__} "
                f"{str(items)[:80]!r}"
            )
        by_head: dict[tuple[int, int], HeadIntervention] = {}
        for item in items:
            iv = _as_intervention(item)
            previous = by_head.get(iv.location)
            if previous is not None and previous != iv:
                raise InputError(
                    f"layer {iv.layer} head {iv.head} appears twice with different settings "
                    f"({previous.describe()!r} and {iv.describe()!r}); keep one intervention per head"
                )
            by_head[iv.location] = iv
        object.__setattr__(self, "interventions", tuple(by_head[k] for k in sorted(by_head)))

    # ------------------------------------------------------------ construction
    @classmethod
    def ablating(cls, heads: Iterable[tuple[int, int]], mode: str = "zero", **options) -> InterventionSet:
        """One intervention of ``mode`` for each ``(layer, head)`` in ``heads``."""
        return cls(tuple(HeadIntervention(layer, head, mode, **options) for layer, head in _pairs(heads)))

    def add(self, intervention, *args, **kwargs) -> InterventionSet:
        """A new set with one more intervention (a ``HeadIntervention`` or its arguments)."""
        if not isinstance(intervention, HeadIntervention):
            intervention = HeadIntervention(intervention, *args, **kwargs)
        return InterventionSet((*self.interventions, intervention))

    def remove(self, layer: int, head: int) -> InterventionSet:
        """A new set without the intervention on ``(layer, head)`` (raises if there is none)."""
        if (layer, head) not in self:
            raise InputError(f"layer {layer} head {head} is not in this intervention set")
        return InterventionSet(tuple(iv for iv in self.interventions if iv.location != (layer, head)))

    def toggle(self, layer: int, head: int, mode: str = "zero", **options) -> InterventionSet:
        """Remove ``(layer, head)`` if present, else add it with ``mode``: what a click in a grid does."""
        if (layer, head) in self:
            return self.remove(layer, head)
        return self.add(HeadIntervention(layer, head, mode, **options))

    def union(self, other: InterventionSet) -> InterventionSet:
        """Both sets' interventions; the same head with different settings raises."""
        if not isinstance(other, InterventionSet):
            other = InterventionSet(other)
        return InterventionSet((*self.interventions, *other.interventions))

    __or__ = union

    # ------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.interventions)

    def __iter__(self) -> Iterator[HeadIntervention]:
        return iter(self.interventions)

    def __bool__(self) -> bool:
        return bool(self.interventions)

    def __contains__(self, location) -> bool:
        if isinstance(location, HeadIntervention):
            return location in self.interventions
        return any(iv.location == tuple(location) for iv in self.interventions)

    def get(self, layer: int, head: int) -> HeadIntervention | None:
        for iv in self.interventions:
            if iv.location == (layer, head):
                return iv
        return None

    @property
    def layers(self) -> tuple[int, ...]:
        """Sorted layers that have at least one intervention."""
        return tuple(sorted({iv.layer for iv in self.interventions}))

    @property
    def first_layer(self) -> int | None:
        """The earliest intervened layer (where a partial re-run must start), or None if empty."""
        return self.layers[0] if self.interventions else None

    @property
    def needs_reference(self) -> bool:
        return any(iv.needs_reference for iv in self.interventions)

    @property
    def needs_source(self) -> bool:
        return any(iv.needs_source for iv in self.interventions)

    def at_layer(self, layer: int) -> tuple[HeadIntervention, ...]:
        return tuple(iv for iv in self.interventions if iv.layer == layer)

    def validate_for(self, model_or_geometry) -> InterventionSet:
        """Check every layer and head against a model's geometry; returns self."""
        geometry = model_or_geometry if isinstance(model_or_geometry, ModelGeometry) else ModelGeometry.of(
            model_or_geometry
        )
        for iv in self.interventions:
            geometry.check_head(iv.layer, iv.head)
        return self

    # ------------------------------------------------------------ serialization
    def to_list(self) -> list[dict]:
        return [iv.to_dict() for iv in self.interventions]

    def to_json(self) -> str:
        return json.dumps({"interventions": self.to_list()})

    @classmethod
    def from_json(cls, text: str | bytes) -> InterventionSet:
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as error:
            raise InputError(f"not valid JSON for an intervention set: {error}") from None
        if isinstance(data, dict):
            if set(data) != {"interventions"}:
                raise InputError(f"an intervention set's JSON must be {{'interventions': [...]}}, got keys {sorted(data)}")
            data = data["interventions"]
        if not isinstance(data, list):
            raise InputError("an intervention set's JSON must hold a list of interventions")
        return cls(tuple(HeadIntervention.from_dict(item) for item in data))

    def __repr__(self) -> str:
        inner = ", ".join(iv.describe() for iv in self.interventions)
        return f"InterventionSet([{inner}])"

    # ------------------------------------------------------------ applying
    def applied(self, model, reference=None, source=None):
        """Context manager applying the set to ``model``: the same as
        ``apply_interventions(model, self, reference=reference, source=source)``.

        The values module does not touch models: the applying module provides the
        function (:func:`provide_applier`), and importing ``finwidget.interventions``, which
        any import of this module does first, loads it.
        """
        if _APPLIER is None:  # pragma: no cover - only when this file is loaded outside its package
            raise CaptureStateError("interventions cannot be applied: import finwidget.interventions first")
        return _APPLIER(model, self, reference=reference, source=source)


_APPLIER = None


def provide_applier(function) -> None:
    """Called once by :mod:`finwidget.interventions.applying` with ``apply_interventions``."""
    global _APPLIER
    _APPLIER = function
