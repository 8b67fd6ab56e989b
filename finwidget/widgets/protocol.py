"""The one protocol file on the Python side of the explorer widget.

The JS side of the same protocol is ``js/protocol.ts``. Small state (focus, selection,
ablation set, settings) lives in traitlets; everything big travels as custom messages
with binary buffers, asked for by the frontend:

Requests (JS -> Python), ``{"kind": <kind>, "id": <int>, ...params}``:

================  ===========================================================================
kind              params
================  ===========================================================================
head_matrix       layer, head [, encoding "u8sqrt"|"u8"|"f16"] [, run, ablations] -> the head's
                  [T, T] attention (lower triangle; default "u8sqrt"; "u8" for a difference)
token_values      scope "focus"|"layer"|"range", selection, direction "from"|"to",
                  layer+head (focus) | layer (layer) | layer_range (range) [, run, ablations]
                  -> values [T]
grid              measure [, selection, direction] -> values [L * H]  (direction "from"|"to", default
                  "to": read by measures with follows_direction; the frontend sends it for those)
flow              selection [, direction, run, ablations] -> spread [L, S], selection_mass [L], logit_lens [L]
                  (direction "from"|"to", default "from")
set_ablations     ablations: [{layer, head, mode [, value]}] [, grid] -> prediction [, grid values]
sweep             mode [, value, layer_range, statements "current"|"all"] -> values [L * H]
                  (change in logit difference for "current", mean |change| over the
                  statements for "all"; NaN outside layer_range); progress messages
cancel_sweep      (nothing) -> the running sweep stops at its next head ("cancelled" reply)
png               view, data_url -> stored on the widget (``explorer.last_png``)
circuit           [method "attribution"|"path_patching"] -> method, graph: the statement's circuit
                  in ``CircuitGraph.to_json()``'s schema (finwidget.circuits.find_circuit; default
                  "attribution", the first-order estimate; needs the model)
what_if           span (index of a number span), value (the text typed) -> the statement with
                  that number set, re-run (``what_if_state``); see finwidget.widgets.what_if
undo_what_if      (nothing) -> the newest what-if edit removed (``what_if_state``)
================  ===========================================================================

``grid`` and ``token_values`` take ``what_if: "difference"`` while a what-if is shown: the
grid measure edited minus original per head; the statement's attention from the answer
position (focused head, or the heads in scope) edited minus original per span, in the reply's
``span_values`` [S] (spans of the edited statement; NaN where it has no original span).

``estimate_ablations`` (ablations -> prediction) answers a click at once with a first-order
estimate (:mod:`finwidget.widgets.click_estimates`): the prediction has ``"estimate":
{method, base, base_logit_diff, heads_estimated}`` (None when the prediction is exact), or
is null with a ``"reason"`` (no estimate yet). The exact ``set_ablations`` reply replaces
it; ``set_ablations`` is answered from a worker thread, and a newer one stops an older one
between layers (whose reply is then an error saying it was cancelled).

``run`` ("clean" | "ablated" | "difference", default "clean") says which run the
attention comes from: the clean one, a capture with ``ablations`` applied, or ablated
minus clean. Replies to those requests carry ``run`` and ``run_label`` (what the UI
writes above the views). The explorer asks for them when its ``attention_run`` trait is
not "clean" (``requests_for_state``).

Modes, grid measures and views are data: the frontend receives them at start-up in the
``catalogue`` trait (:func:`startup_catalogue`) and keeps no list of its own. A mode's
``value`` is sent only for a mode whose ``takes_value`` is true.

``selection`` is ``[]`` (none) or ``[start, end]``, a half-open range of span indices.

Replies (Python -> JS): ``{"kind": "reply", "id", "request", "ok": True, ..., "arrays": {name: spec}}``
or ``{"kind": "reply", "id", "request", "ok": False, "error": "<message>"}``; long requests
also send ``{"kind": "progress", "id", "done", "total", "message"}``.

Array specs say how to read buffer number ``buffer``: ``encoding`` "f16" / "f32" (little
endian IEEE floats), "u8" (``value = offset + byte * scale``) or "u8sqrt" for non-negative
data such as attention (``value = max * (byte / 255) ** 2``: small values keep their
precision next to a large one: at max 1 a value of 0.001 is sent as 0.00098, where linear
bytes would send 0), ``shape``, and ``tril``
for a square matrix whose upper triangle is zero (causal attention), stored as its lower
triangle row by row (row i holds columns 0..i), which halves what is sent.

Every incoming message is validated here (types, ranges, unknown keys); a bad one gets an
error reply naming the problem, never an exception out of the widget. An error echoes at
most ``ECHO_CHARS`` characters of a bad value (:func:`shown`). Everything sent is strict
JSON: a non-finite float in a reply field becomes ``null`` (:func:`strict_json_content`);
arrays travel as binary buffers, where NaN marks "no value" (e.g. outside a sweep's layers).
"""

from __future__ import annotations

import copy
import json
import math
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeGuard, overload

import numpy as np
import traitlets

from finwidget.analysis.metrics import HEAD_MEASURES, head_measure, measure_catalogue
from finwidget.errors import InputError
from finwidget.interventions.modes import mode_catalogue

PROTOCOL_VERSION = 1

DIRECTIONS = ("from", "to")
SCOPES = ("focus", "layer", "range")
ENCODINGS = ("u8sqrt", "u8", "f16")
MATRIX_AGGREGATES = ("tokens", "spans", "line_items")
STATEMENT_HEADS = ("focus", "layer", "range")
#: which run the attention views show
ATTENTION_RUNS = ("clean", "ablated", "difference")
#: what a sweep request sweeps over: the statement shown, or every statement of the explorer
SWEEP_STATEMENTS = ("current", "all")

#: The intervention modes the explorer offers (their data comes from
#: ``finwidget.interventions.modes.mode_catalogue()``), each with the sign the UI writes
#: before its value ("scale ×2").
EXPLORER_MODES = {"zero": "", "mean": "", "scale": "×"}

#: The views, in the order the page shows them: name, label, the request lane whose data
#: it draws (an error there ends its first draw), and the column it sits in.
VIEWS = (
    {"name": "prediction", "label": "prediction", "lane": "ablation", "column": "left"},
    {"name": "statement", "label": "statement", "lane": "tokens", "column": "left"},
    {"name": "grid", "label": "grid", "lane": "grid", "column": "right"},
    {"name": "matrix", "label": "matrix", "lane": "matrix", "column": "right"},
    {"name": "flow", "label": "flow", "lane": "flow", "column": "right"},
    {"name": "circuit", "label": "circuit", "lane": "circuit", "column": "right"},
)
VIEW_NAMES = tuple(v["name"] for v in VIEWS)
#: views shown only when asked for (``views=[..., "circuit"]``): finding a circuit runs the
#: model several times per statement, so the default explorer does not pay for it
OPT_IN_VIEWS = ("circuit",)
#: what an explorer shows when ``views`` is not given
DEFAULT_VIEW_NAMES = tuple(name for name in VIEW_NAMES if name not in OPT_IN_VIEWS)
#: how the circuit view's graph is found: the first-order estimate (attribution patching,
#: the default) or exact path patching (one patched run per edge: slower)
CIRCUIT_METHODS = ("attribution", "path_patching")


def explorer_modes() -> list[dict]:
    """The explorer's modes: ``mode_catalogue()`` entries plus ``value_symbol``, in menu order."""
    by_name = {m["name"]: m for m in mode_catalogue()}
    return [{**by_name[name], "value_symbol": symbol} for name, symbol in EXPLORER_MODES.items()]


def _modes_by_name() -> dict[str, dict]:
    return {m["name"]: m for m in explorer_modes()}


NO_REFERENCE = {
    "available": False,
    "name": "no reference set",
    "disabled_reason": "no reference statements were given (AttentionExplorer(..., reference=[...]))",
}


def startup_catalogue(reference: dict | None = None, can_intervene: bool = True) -> dict:
    """What the frontend receives at start-up (the ``catalogue`` trait): the lists it
    must not keep copies of. ``{"modes": [...], "measures": [...], "views": [...],
    "reference": {...}}``:

    - modes: ``{name, takes_value, default_value, needs_reference, needs_source, summary,
      value_symbol, disabled_reason}`` (``explorer_modes``; ``disabled_reason`` is "" for
      a mode the explorer can apply, else why not);
    - measures: ``{name, label, unit, description, direction, uses_selection, follows_direction, needs}``
      (``finwidget.analysis.metrics.measure_catalogue``);
    - views: ``{name, label, lane, column}`` (``VIEWS``);
    - reference: ``{available, name, disabled_reason}``: the set "mean" averages over
      (:class:`finwidget.widgets.reference.ReferenceSet`).
    """
    reference = dict(reference) if reference is not None else dict(NO_REFERENCE)
    modes = []
    for mode in explorer_modes():
        reason = ""
        if not can_intervene:
            reason = "this explorer shows recorded attention only (no model to ablate)"
        elif mode["needs_reference"] and not reference["available"]:
            reason = reference["disabled_reason"]
        modes.append({**mode, "disabled_reason": reason})
    return {
        "modes": modes,
        "measures": measure_catalogue(),
        "views": [dict(v) for v in VIEWS],
        "reference": reference,
    }


def grid_measures() -> tuple[str, ...]:
    """Names of the grid's measures (every measure of ``finwidget.analysis.metrics``)."""
    return tuple(m.name for m in HEAD_MEASURES)


MAX_PNG_BYTES = 16 * 2**20
PNG_PREFIX = "data:image/png;base64,"


class ProtocolError(InputError):
    """A message from the frontend that does not follow the protocol."""


#: the most characters of a bad value an error message echoes
ECHO_CHARS = 80
_ECHO = reprlib.Repr()
_ECHO.maxstring = _ECHO.maxother = ECHO_CHARS
_ECHO.maxlist = _ECHO.maxtuple = _ECHO.maxdict = _ECHO.maxset = 8
_ECHO.maxlevel = 3
_ECHO.maxlong = 40


def shown(value) -> str:
    """A bad value as an error message shows it: its repr, at most ``ECHO_CHARS`` characters
    (a long or deeply nested value is cut, ending in "..."). Never fails."""
    try:
        text = _ECHO.repr(value)
    except Exception:  # noqa: BLE001 - a value whose repr fails is still named
        text = f"<{type(value).__name__}>"
    return text if len(text) <= ECHO_CHARS else text[: ECHO_CHARS - 3] + "..."


def shown_keys(keys) -> str:
    """Unknown keys as an error message lists them (sorted as text, cut like :func:`shown`)."""
    return shown(sorted(str(k)[:ECHO_CHARS] for k in keys))


# ---------------------------------------------------------------------------- arrays
def pack_lower_triangle(matrix: np.ndarray) -> np.ndarray:
    """``[n, n]`` -> ``[n (n + 1) / 2]``: the lower triangle (diagonal included), row by row."""
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {matrix.shape}")
    n = matrix.shape[0]
    out = np.empty(n * (n + 1) // 2, dtype=matrix.dtype)
    start = 0
    for row in range(n):  # row slices: several times faster than a boolean mask at T = 4096
        out[start : start + row + 1] = matrix[row, : row + 1]
        start += row + 1
    return out


def unpack_lower_triangle(packed: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`pack_lower_triangle`; zeros above the diagonal."""
    packed = np.asarray(packed)
    if packed.shape != (n * (n + 1) // 2,):
        raise ValueError(f"lower triangle of {n} x {n} needs {n * (n + 1) // 2} values, got {packed.shape}")
    out = np.zeros((n, n), dtype=packed.dtype)
    out[np.tri(n, dtype=bool)] = packed
    return out


def quantize_u8(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Floats -> (uint8 bytes, scale, offset) with ``value ~= offset + byte * scale``.

    The range is [min(0, lo), hi]: non-negative data (attention) keeps 0 exact. The
    rounding error is at most ``scale / 2``. Non-finite values become 0.
    """
    values = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo = min(0.0, float(values.min())) if values.size else 0.0
    hi = float(values.max()) if values.size else 0.0
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    q = np.clip(np.rint((values - lo) / scale), 0, 255).astype(np.uint8)
    return q, float(scale), float(lo)


def quantize_sqrt_u8(values: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative floats -> (uint8 bytes, max) with ``value ~= max * (byte / 255) ** 2``.

    The error of a value ``v`` is at most about ``sqrt(v * max) / 255`` (relative precision
    for small values, ``max / 255`` at the top). Negative and non-finite values become 0.
    """
    work = np.array(values, dtype=np.float32, copy=True)  # worked on in place below
    if work.size == 0:
        return np.zeros(work.shape, dtype=np.uint8), 1.0
    top, bottom = float(work.max()), float(work.min())
    if not (np.isfinite(top) and np.isfinite(bottom) and bottom >= 0):  # attention never needs this
        np.nan_to_num(work, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        np.maximum(work, 0.0, out=work)
        top = float(work.max())
    if top <= 0:
        return np.zeros(work.shape, dtype=np.uint8), 1.0
    np.sqrt(work, out=work)
    work *= 255.0 / np.sqrt(top)  # sqrt(v / top) * 255 in [0, 255]
    work += 0.5  # round half up by truncation below
    np.minimum(work, 255.0, out=work)
    return work.astype(np.uint8), top


@dataclass
class Payload:
    """Arrays of one reply: their specs (go in the message) and their bytes (the buffers)."""

    arrays: dict = field(default_factory=dict)
    buffers: list = field(default_factory=list)

    def _add(self, name: str, spec: dict, data: bytes) -> None:
        spec["buffer"] = len(self.buffers)
        self.arrays[name] = spec
        self.buffers.append(data)

    def add_f16(self, name: str, values: np.ndarray) -> None:
        """Any-shaped float array as little-endian float16."""
        values = np.asarray(values, dtype=np.float32)
        self._add(name, {"encoding": "f16", "shape": list(values.shape)}, values.astype("<f2").tobytes())

    def add_f32(self, name: str, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float32)
        self._add(name, {"encoding": "f32", "shape": list(values.shape)}, values.astype("<f4").tobytes())

    def add_u8(self, name: str, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float32)
        q, scale, offset = quantize_u8(values)
        self._add(
            name,
            {"encoding": "u8", "shape": list(values.shape), "scale": scale, "offset": offset},
            q.tobytes(),
        )

    def add_causal_matrix(self, name: str, matrix: np.ndarray, encoding: str = "u8sqrt") -> None:
        """A square matrix that is zero above the diagonal: only its lower triangle is sent."""
        matrix = np.asarray(matrix, dtype=np.float32)
        n = matrix.shape[0]
        packed = pack_lower_triangle(matrix)
        spec = {"shape": [n, n], "tril": True}
        if encoding == "f16":
            self._add(name, {"encoding": "f16", **spec}, packed.astype("<f2").tobytes())
        elif encoding == "u8":
            q, scale, offset = quantize_u8(packed)
            self._add(name, {"encoding": "u8", **spec, "scale": scale, "offset": offset}, q.tobytes())
        elif encoding == "u8sqrt":
            q, top = quantize_sqrt_u8(packed)
            self._add(name, {"encoding": "u8sqrt", **spec, "max": top}, q.tobytes())
        else:
            raise ValueError(f"unknown encoding {encoding!r}")


def decode_array(spec: dict, buffers: list) -> np.ndarray:
    """Read an array back from its spec and buffers (float32, dense; the JS decoder's twin, for tests)."""
    data = bytes(buffers[spec["buffer"]])
    if spec["encoding"] == "f16":
        flat = np.frombuffer(data, dtype="<f2").astype(np.float32)
    elif spec["encoding"] == "f32":
        flat = np.frombuffer(data, dtype="<f4").astype(np.float32)
    elif spec["encoding"] == "u8sqrt":
        flat = spec["max"] * (np.frombuffer(data, dtype=np.uint8).astype(np.float32) / 255.0) ** 2
    elif spec["encoding"] == "u8":
        flat = (
            spec.get("offset", 0.0) + np.frombuffer(data, dtype=np.uint8).astype(np.float32) * spec["scale"]
        )
    else:
        raise ValueError(f"unknown encoding {spec['encoding']!r}")
    if spec.get("tril"):
        return unpack_lower_triangle(flat, spec["shape"][0])
    return flat.reshape(spec["shape"])


# ---------------------------------------------------------------------------- messages out
def ok_reply(
    request: Request, fields: dict | None = None, payload: Payload | None = None
) -> tuple[dict, list]:
    content = {"kind": "reply", "id": request.id, "request": request.kind, "ok": True, **(fields or {})}
    buffers: list = []
    if payload is not None:
        content["arrays"] = payload.arrays
        buffers = payload.buffers
    return content, buffers


#: the longest error message a reply carries
MAX_ERROR_CHARS = 2000


def error_reply(message_id, kind, error: str) -> tuple[dict, list]:
    text = str(error)
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 3] + "..."
    return {"kind": "reply", "id": message_id, "request": kind, "ok": False, "error": text}, []


@overload
def strict_json_content(value: dict) -> dict: ...
@overload
def strict_json_content(value: list | tuple) -> list: ...
@overload
def strict_json_content(value: object) -> object: ...
def strict_json_content(value):
    """``value`` with every non-finite float (NaN, inf) replaced by ``None``, so that
    ``json.dumps(..., allow_nan=False)`` accepts it: the one rule for numbers the widget sends or
    saves (a reply field, a trait, an exported page). An answer is never sent from NaN: the
    prediction refuses it first (:func:`finwidget.task.check_finite_answer`)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict_json_content(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json_content(item) for item in value]
    if isinstance(value, np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def progress_message(message_id: int, done: int, total: int, message: str = "") -> dict:
    return {"kind": "progress", "id": message_id, "done": int(done), "total": int(total), "message": message}


# ---------------------------------------------------------------------------- messages in
@dataclass(frozen=True)
class Geometry:
    """What the validation needs to know about the model and the statement."""

    num_layers: int
    num_heads: int
    num_spans: int


@dataclass(frozen=True)
class Request:
    """A validated request: its kind, id and params (ints, strings, lists as sent)."""

    kind: str
    id: int
    params: dict


def _is_int(value) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_in(value, name: str, upper: int, what: str) -> int:
    if not _is_int(value):
        raise ProtocolError(f"{name} must be an integer, got {shown(value)}")
    if not 0 <= value < upper:
        raise ProtocolError(f"{name} {value} is outside the model: {what} (0 to {upper - 1})")
    return value


def _layer(value, g: Geometry) -> int:
    return _int_in(value, "layer", g.num_layers, f"{g.num_layers} layers")


def _head(value, g: Geometry) -> int:
    return _int_in(value, "head", g.num_heads, f"{g.num_heads} heads per layer")


def _choice(value, name: str, options) -> str:
    if value not in options:
        raise ProtocolError(f"{name} must be one of {', '.join(options)}, got {shown(value)}")
    return value


def _range(value, upper: int, name: str, half_open: bool) -> list[int]:
    """``[]`` or ``[a, b]`` with ``0 <= a < b <= upper`` (half open) or ``0 <= a <= b < upper``."""
    if not isinstance(value, list):
        raise ProtocolError(f"{name} must be a list ([] or [start, end]), got {type(value).__name__}")
    if not value:
        return []
    if len(value) != 2 or not all(_is_int(v) for v in value):
        raise ProtocolError(f"{name} must be [] or two integers, got {shown(value)}")
    a, b = value
    ok = (0 <= a < b <= upper) if half_open else (0 <= a <= b < upper)
    if not ok:
        bound = f"0 <= start < end <= {upper}" if half_open else f"0 <= first <= last <= {upper - 1}"
        raise ProtocolError(f"{name} {value} is out of range (needs {bound})")
    return [a, b]


def _selection(value, g: Geometry) -> list[int]:
    return _range(value, g.num_spans, "selection", half_open=True)


def _layer_range(value, g: Geometry) -> list[int]:
    return _range(value, g.num_layers, "layer_range", half_open=False)


def _finite_number(value, name: str) -> float:
    try:
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an int beyond float's range
        number = math.inf
    if not math.isfinite(number):
        raise ProtocolError(f"{name} must be a finite number, got {shown(value)}")
    return number


def _mode_value(mode: dict, value, name: str) -> dict:
    """``{"value": float}`` for a mode that takes one (its default when None), ``{}`` otherwise."""
    if mode["takes_value"]:
        return {"value": _finite_number(mode["default_value"] if value is None else value, name)}
    if value not in (None, 0, 0.0):
        raise ProtocolError(f"mode {mode['name']!r} takes no value (got {shown(value)})")
    return {}


def validate_ablations(items, geometry: Geometry) -> list[dict]:
    """The ablation list as sent by the frontend or set from Python -> normalized dicts, sorted.

    Each item: ``{"layer": int, "head": int, "mode": <an explorer mode>[, "value": float]}``
    (``value`` only for a mode that takes one; its default when left out). One entry per head.
    """
    if not isinstance(items, (list, tuple)):
        raise ProtocolError(f"ablations must be a list, got {type(items).__name__}")
    limit = geometry.num_layers * geometry.num_heads
    if len(items) > limit:
        raise ProtocolError(f"{len(items)} ablations, but the model has only {limit} heads")
    modes = _modes_by_name()
    out: dict[tuple[int, int], dict] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ProtocolError(f"ablation {i} must be a dict, got {type(item).__name__}")
        unknown = set(item) - {"layer", "head", "mode", "value"}
        if unknown:
            raise ProtocolError(f"ablation {i} has unknown keys {shown_keys(unknown)}")
        layer, head = _layer(item.get("layer"), geometry), _head(item.get("head"), geometry)
        mode = item.get("mode", "zero")
        if not isinstance(mode, str) or mode not in modes:
            raise ProtocolError(f"ablation {i}: mode must be one of {', '.join(modes)}, got {shown(mode)}")
        try:
            value = _mode_value(modes[mode], item.get("value"), f"ablation {i} value")
        except ProtocolError as err:
            raise ProtocolError(f"ablation {i}: {err}") from None
        if (layer, head) in out:
            raise ProtocolError(f"ablation {i}: layer {layer} head {head} is listed twice")
        out[(layer, head)] = {"layer": layer, "head": head, "mode": mode, **value}
    return [out[key] for key in sorted(out)]


def _run_params(p: dict, g: Geometry) -> dict:
    """``run`` (default "clean") and, for another run, the ``ablations`` it applies."""
    run = _choice(p.get("run", "clean"), "run", ATTENTION_RUNS)
    if run == "clean":
        if "ablations" in p:
            raise ProtocolError("ablations are only taken with run 'ablated' or 'difference'")
        return {}
    if "ablations" not in p:
        raise ProtocolError(f"run {run!r} needs the ablations it applies")
    return {"run": run, "ablations": _prefixed("ablations", validate_ablations, p["ablations"], g)}


def _parse_head_matrix(p: dict, g: Geometry) -> dict:
    return {
        "layer": _layer(p["layer"], g),
        "head": _head(p["head"], g),
        "encoding": _choice(p["encoding"], "encoding", ENCODINGS) if "encoding" in p else "u8sqrt",
        **_run_params(p, g),
    }


def _parse_token_values(p: dict, g: Geometry) -> dict:
    scope = _choice(p["scope"], "scope", SCOPES)
    clean = {
        "scope": scope,
        "selection": _selection(p["selection"], g),
        "direction": _choice(p["direction"], "direction", DIRECTIONS),
    }
    if scope in ("focus", "layer"):
        clean["layer"] = _layer(p.get("layer"), g)
    if scope == "focus":
        clean["head"] = _head(p.get("head"), g)
    if scope == "range":
        if "layer_range" not in p:
            raise ProtocolError("token_values with scope 'range' needs layer_range")
        clean["layer_range"] = _layer_range(p["layer_range"], g) or [0, g.num_layers - 1]
    clean.update(_run_params(p, g))
    return clean


def _parse_grid(p: dict, g: Geometry) -> dict:
    return {
        "measure": _choice(p["measure"], "measure", grid_measures()),
        "selection": _selection(p.get("selection", []), g),
        "direction": _choice(p.get("direction", "to"), "direction", DIRECTIONS),
    }


def _parse_set_ablations(p: dict, g: Geometry) -> dict:
    clean: dict[str, object] = {"ablations": validate_ablations(p["ablations"], g)}
    if "grid" in p:
        clean["grid"] = _choice(p["grid"], "grid", grid_measures())
    return clean


def _parse_sweep(p: dict, g: Geometry) -> dict:
    modes = _modes_by_name()
    mode = _choice(p["mode"], "mode", tuple(modes))
    clean = {"mode": mode, **_mode_value(modes[mode], p.get("value"), "value")}
    if "layer_range" in p:
        clean["layer_range"] = _layer_range(p["layer_range"], g)
    clean["statements"] = _choice(p.get("statements", "current"), "statements", SWEEP_STATEMENTS)
    return clean


def _parse_png(p: dict, g: Geometry) -> dict:
    view, data_url = p["view"], p["data_url"]
    if not isinstance(view, str) or view not in VIEW_NAMES:
        raise ProtocolError(f"view must be one of {', '.join(VIEW_NAMES)}, got {shown(view)}")
    if not isinstance(data_url, str) or not data_url.startswith(PNG_PREFIX):
        raise ProtocolError("data_url must be a PNG data URL (data:image/png;base64,...)")
    if len(data_url) > MAX_PNG_BYTES:
        raise ProtocolError(f"the PNG is larger than {MAX_PNG_BYTES // 2**20} MiB")
    return {"view": view, "data_url": data_url}


#: what a view can show of a what-if besides the edited run itself
WHAT_IF_VIEWS = ("difference",)
MAX_WHAT_IF_VALUE_CHARS = 100


def _parse_what_if(p: dict, g: Geometry) -> dict:
    span, value = p["span"], p["value"]
    if not _is_int(span) or not 0 <= span < g.num_spans:
        raise ProtocolError(f"span must be a span index 0..{g.num_spans - 1}, got {shown(span)}")
    if not isinstance(value, str) or len(value) > MAX_WHAT_IF_VALUE_CHARS:
        raise ProtocolError(f"value must be the text typed (at most {MAX_WHAT_IF_VALUE_CHARS} characters), got {shown(value)}")
    return {"span": span, "value": value}


def _with_what_if(parse):
    """A request parser that also accepts ``what_if: "difference"``."""

    def parse_with_what_if(p: dict, g: Geometry) -> dict:
        rest = {k: v for k, v in p.items() if k != "what_if"}
        clean = parse(rest, g)
        if "what_if" in p:
            clean["what_if"] = _choice(p["what_if"], "what_if", WHAT_IF_VIEWS)
        return clean

    return parse_with_what_if


@dataclass(frozen=True)
class RequestSchema:
    """One request kind: its required and optional params and the parser that checks them."""

    required: frozenset
    optional: frozenset
    parse: Callable[[dict, Geometry], dict]  # (params, Geometry) -> clean params


#: request kind -> its schema
REQUESTS: dict[str, RequestSchema] = {
    "head_matrix": RequestSchema(
        frozenset({"layer", "head"}), frozenset({"encoding", "run", "ablations"}), _parse_head_matrix
    ),
    "token_values": RequestSchema(
        frozenset({"scope", "selection", "direction"}),
        frozenset({"layer", "head", "layer_range", "run", "ablations"}),
        _parse_token_values,
    ),
    "grid": RequestSchema(frozenset({"measure"}), frozenset({"selection", "direction"}), _parse_grid),
    "flow": RequestSchema(
        frozenset({"selection"}),
        frozenset({"direction", "run", "ablations"}),
        lambda p, g: {
            "selection": _selection(p["selection"], g),
            "direction": _choice(p.get("direction", "from"), "direction", DIRECTIONS),
            **_run_params(p, g),
        },
    ),
    "set_ablations": RequestSchema(frozenset({"ablations"}), frozenset({"grid"}), _parse_set_ablations),
    "sweep": RequestSchema(
        frozenset({"mode"}), frozenset({"value", "layer_range", "statements"}), _parse_sweep
    ),
    "cancel_sweep": RequestSchema(frozenset(), frozenset(), lambda p, g: {}),
    "estimate_ablations": RequestSchema(
        frozenset({"ablations"}), frozenset(), lambda p, g: {"ablations": validate_ablations(p["ablations"], g)}
    ),
    "png": RequestSchema(frozenset({"view", "data_url"}), frozenset(), _parse_png),
    "circuit": RequestSchema(
        frozenset(),
        frozenset({"method"}),
        lambda p, g: {"method": _choice(p.get("method", "attribution"), "method", CIRCUIT_METHODS)},
    ),
    "what_if": RequestSchema(frozenset({"span", "value"}), frozenset(), _parse_what_if),
    "undo_what_if": RequestSchema(frozenset(), frozenset(), lambda p, g: {}),
}
# ``what_if: "difference"`` on the grid and the statement's requests (a what-if is shown)
REQUESTS["grid"] = RequestSchema(
    REQUESTS["grid"].required, REQUESTS["grid"].optional | {"what_if"}, _with_what_if(REQUESTS["grid"].parse)
)
REQUESTS["token_values"] = RequestSchema(
    REQUESTS["token_values"].required,
    REQUESTS["token_values"].optional | {"what_if"},
    _with_what_if(REQUESTS["token_values"].parse),
)
REQUEST_KINDS = tuple(REQUESTS)


def parse_request(content, geometry: Geometry) -> Request:
    """Validate one incoming custom message; raises :class:`ProtocolError` naming the problem."""
    if not isinstance(content, dict):
        raise ProtocolError(f"a request must be a JSON object, got {type(content).__name__}")
    message_id = content.get("id")
    if not _is_int(message_id) or message_id < 0:
        raise ProtocolError(f"a request needs a non-negative integer id, got {shown(message_id)}")
    kind = content.get("kind")
    if not isinstance(kind, str) or kind not in REQUESTS:
        raise ProtocolError(f"unknown request kind {shown(kind)}; expected one of {', '.join(REQUEST_KINDS)}")
    schema = REQUESTS[kind]
    params = {k: v for k, v in content.items() if k not in ("kind", "id")}
    missing = schema.required - set(params)
    if missing:
        raise ProtocolError(f"{kind} request is missing {sorted(missing)}")
    unknown = set(params) - schema.required - schema.optional
    if unknown:
        raise ProtocolError(f"{kind} request has unknown keys {shown_keys(unknown)}")
    return Request(kind=kind, id=message_id, params=schema.parse(params, geometry))


# ---------------------------------------------------------------------------- the trait schema
DEFAULT_SETTINGS = {
    "statement_heads": "focus",
    "matrix_aggregate": "tokens",
    "ablate_mode": "zero",
    "scale_value": 0.0,  # the value of a mode that takes one (historical name)
    "reply_timeout_ms": 8000,
}


def _check_focus(value, g: Geometry) -> dict:
    if not isinstance(value, dict) or set(value) != {"layer", "head"}:
        raise ProtocolError(f"focus must be {{'layer': int, 'head': int}}, got {shown(value)}")
    return {"layer": _layer(value["layer"], g), "head": _head(value["head"], g)}


def _check_selection(value, g: Geometry) -> dict:
    if not value:
        return {}
    if not isinstance(value, dict) or set(value) != {"start", "end"}:
        raise ProtocolError(f"selection must be {{}} or {{'start': int, 'end': int}}, got {shown(value)}")
    try:
        start, end = _selection([value["start"], value["end"]], g)
    except ProtocolError as err:
        raise ProtocolError(f"selection (span indices, {g.num_spans} spans): {err}") from None
    return {"start": start, "end": end}


def _check_views(value, g: Geometry) -> list[str]:
    value = list(value) if isinstance(value, (list, tuple)) else value
    if not isinstance(value, list) or not value or any(v not in VIEW_NAMES for v in value):
        raise ProtocolError(f"views must be a non-empty list of {list(VIEW_NAMES)}, got {shown(value)}")
    return list(dict.fromkeys(value))


def _check_settings(value, g: Geometry) -> dict:
    if not isinstance(value, dict):
        raise ProtocolError(f"settings must be a dict, got {shown(value)}")
    unknown = set(value) - set(DEFAULT_SETTINGS)
    if unknown:
        raise ProtocolError(f"unknown settings {shown_keys(unknown)}; known: {sorted(DEFAULT_SETTINGS)}")
    value = {**DEFAULT_SETTINGS, **value}
    options = {"statement_heads": STATEMENT_HEADS, "matrix_aggregate": MATRIX_AGGREGATES,
               "ablate_mode": tuple(EXPLORER_MODES)}
    for key, allowed in options.items():
        if value[key] not in allowed:
            raise ProtocolError(f"settings[{key!r}] must be one of {allowed}, got {shown(value[key])}")
    for key in ("scale_value", "reply_timeout_ms"):
        _finite_number(value[key], f"settings[{key!r}]")
    if value["reply_timeout_ms"] < 100:
        raise ProtocolError("settings['reply_timeout_ms'] must be at least 100")
    return value


class Checked(traitlets.TraitType):
    """A synced trait whose values are checked by a protocol check ``(value, Geometry) ->
    normalized value``; the geometry is the owner's ``protocol_geometry``. A refused value
    raises ``TraitError`` naming the problem and leaves the old value."""

    def __init__(self, default, check, **kwargs):
        self._check = check
        super().__init__(default_value=default, **kwargs)
        self.tag(sync=True)

    def make_dynamic_default(self):
        return copy.deepcopy(self.default_value)

    def validate(self, obj, value):
        try:
            return self._check(value, obj.protocol_geometry)
        except ProtocolError as err:
            raise traitlets.TraitError(str(err)) from None


class ExplorerState(traitlets.HasTraits):
    """The synced traits of the explorer (the trait schema). Small state only; see this
    module's docstring for what travels as messages.

    statement_layout: :func:`layout_state`; geometry: ``{num_layers, num_heads,
    num_kv_heads, head_dim, seq_len, model_name}``; catalogue: :func:`startup_catalogue`;
    focus: ``{"layer", "head"}``; selection: ``{}`` or ``{"start", "end"}`` span range;
    direction: ``"from" | "to"``; grid_measure: a measure's name; layer_range: ``[]`` or
    ``[first, last]``; ablations: ``[{"layer", "head", "mode"[, "value"]}]``; settings:
    ``DEFAULT_SETTINGS``' keys; prediction: ``{"clean", "ablated", "flipped"}``; views:
    view names; sweep_done: flips each time a sweep finishes; attention_run: which run
    the attention views show (``ATTENTION_RUNS``); statements: ``[{"index", "label"}]``
    of every statement the explorer holds; statement_index: the one shown;
    what_if_state: the what-if edits and both predictions (read only); what_if_difference:
    colour the grid and the statement by edited minus original.
    ``statement_layout``, ``geometry``, ``catalogue``, ``prediction`` and ``sweep_done``
    are read only (:data:`READ_ONLY_STATE`).
    """

    protocol_geometry = Geometry(num_layers=0, num_heads=0, num_spans=0)

    # read only from Python: set by the explorer itself (``set_trait``), never by a user
    statement_layout = traitlets.Dict(read_only=True).tag(sync=True)
    geometry = traitlets.Dict(read_only=True).tag(sync=True)
    catalogue = traitlets.Dict(read_only=True).tag(sync=True)
    # annotated: the trait replaces ipywidgets' DOMWidget.focus() method on the explorer
    focus: Checked = Checked({"layer": 0, "head": 0}, _check_focus)
    selection = Checked({}, _check_selection)
    direction = Checked("from", lambda v, g: _choice(v, "direction", DIRECTIONS))
    grid_measure = Checked("attention_to_selection", lambda v, g: _choice(v, "grid_measure", grid_measures()))
    layer_range = Checked([], lambda v, g: _layer_range(list(v) if isinstance(v, tuple) else v, g))
    ablations = Checked([], lambda v, g: _prefixed("ablations", validate_ablations, v, g))
    settings = Checked(dict(DEFAULT_SETTINGS), _check_settings)
    prediction = traitlets.Dict({}, read_only=True).tag(sync=True)
    views = Checked(list(DEFAULT_VIEW_NAMES), _check_views)
    sweep_done = traitlets.Bool(False, read_only=True).tag(sync=True)
    attention_run = Checked("clean", lambda v, g: _choice(v, "attention_run", ATTENTION_RUNS))
    statements = traitlets.List([]).tag(sync=True)
    statement_index = traitlets.Int(0).tag(sync=True)
    #: the what-if edits and both predictions (``finwidget.widgets.what_if.WhatIfStack.state``)
    what_if_state = traitlets.Dict({}, read_only=True).tag(sync=True)
    #: colour the grid and the statement by the difference edited minus original
    what_if_difference = traitlets.Bool(False).tag(sync=True)


def _prefixed(name: str, check, value, g: Geometry):
    try:
        return check(value, g)
    except ProtocolError as err:
        raise ProtocolError(f"{name}: {err}") from None


#: the traits only the explorer sets (a write from Python raises ``TraitError``)
READ_ONLY_STATE = ("statement_layout", "geometry", "catalogue", "prediction", "sweep_done", "what_if_state")

#: every synced trait (what an exported page embeds)
SYNCED_STATE = tuple(ExplorerState.class_trait_names(sync=True))


# ---------------------------------------------------------------------------- the statement layout
def layout_state(layout, token_texts: list[str], answer_position: int) -> dict:
    """The statement layout as the frontend's ``statement_layout`` trait (JSON; spans, lines, tokens).

    ``token_texts``: ``[T]`` the text shown for each token.
    """
    spans = []
    for s in layout.spans:
        value = s.value if s.value is None or math.isfinite(s.value) else None
        spans.append(
            {
                "index": s.index,
                "kind": s.kind,
                "text": s.text,
                "char_start": s.char_start,
                "char_end": s.char_end,
                "token_start": s.token_start,
                "token_end": s.token_end,
                "line": s.line,
                "category": s.category,
                "value": value,
                "year": s.year,
                "line_item": s.line_item,
                "in_statement": bool(s.in_statement),
            }
        )
    return {
        "text": layout.text,
        "tokens": list(token_texts),
        "token_to_span": [int(v) for v in layout.token_to_span],
        "spans": spans,
        "lines": [list(map(int, line)) for line in layout.lines],
        "line_items": [
            {
                "name": li.name,
                "line": li.line,
                "name_span": li.name_span,
                "number_spans": list(li.number_spans),
                "category": li.category,
            }
            for li in layout.line_items
        ],
        "answer_position": int(answer_position),
    }


# ---------------------------------------------------------------------------- state -> requests
def canonical_json(value) -> str:
    """Sorted keys, no spaces: the same text as ``canonicalJSON`` in js/protocol.ts."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_key(message: dict) -> str:
    """The key of a request without its id (as ``requestKey`` in js/protocol.ts)."""
    return canonical_json({k: v for k, v in message.items() if k != "id"})


def selection_param(selection: dict) -> list[int]:
    start, end = selection.get("start"), selection.get("end")
    if _is_int(start) and _is_int(end) and end > start:
        return [start, end]
    return []


def grid_request(measure: str, selection: list[int], direction: str = "to") -> dict:
    """The grid request of ``measure`` (with the selection only if the measure uses it, and
    the direction only if it follows the direction switch)."""
    m = head_measure(measure)
    msg: dict[str, object] = {"kind": "grid", "measure": measure}
    if m.uses_selection:
        msg["selection"] = selection
    if m.follows_direction:
        msg["direction"] = direction
    return msg


def requests_for_state(state: dict) -> list[dict]:
    """The data requests (without ids) the frontend makes for a widget state.

    Mirrors ``requestsForState`` in js/protocol.ts exactly: an exported page embeds the
    replies to these requests under their keys.
    """
    views = set(state["views"])
    selection = selection_param(state["selection"])
    focus = state["focus"]
    run = state.get("attention_run", "clean")
    run_params = {} if run == "clean" else {"run": run, "ablations": list(state.get("ablations", []))}
    out: list[dict] = []
    if "matrix" in views:
        out.append({"kind": "head_matrix", "layer": focus["layer"], "head": focus["head"], **run_params})
    if "statement" in views:
        scope = state["settings"]["statement_heads"]
        msg = {
            "kind": "token_values",
            "scope": scope,
            "selection": selection,
            "direction": state["direction"],
        }
        if scope == "focus":
            msg.update(layer=focus["layer"], head=focus["head"])
        elif scope == "layer":
            msg["layer"] = focus["layer"]
        else:
            layer_range = state["layer_range"]
            msg["layer_range"] = (
                list(layer_range) if len(layer_range) == 2 else [0, state["geometry"]["num_layers"] - 1]
            )
        msg.update(run_params)
        out.append(msg)
    if "grid" in views:
        out.append(grid_request(state["grid_measure"], selection, state["direction"]))
    if "flow" in views:
        out.append({"kind": "flow", "selection": selection, "direction": state["direction"], **run_params})
    if "circuit" in views:
        # The clean run's circuit, first-order (the view's "exact" button asks for path patching).
        out.append({"kind": "circuit", "method": "attribution"})
    return what_if_requests(state, out)


def what_if_requests(state: dict, requests: list[dict]) -> list[dict]:
    """``requests`` with the difference colouring of a what-if (``whatIfRequests`` in
    js/protocol.ts): the grid asks for ``what_if: "difference"``; the statement for the
    difference of the attention from the answer position (no selection, no run)."""
    if not state.get("what_if_difference") or not (state.get("what_if_state") or {}).get("edits"):
        return requests
    out = []
    for r in requests:
        if r["kind"] == "grid":
            r = {**r, "what_if": "difference"}
        elif r["kind"] == "token_values":
            r = {k: v for k, v in r.items() if k not in ("run", "ablations")}
            r.update(selection=[], direction="from", what_if="difference")
        out.append(r)
    return out
