"""The one protocol file on the Python side of the explorer widget.

The JS side of the same protocol is ``js/protocol.ts``. Small state (focus, selection,
ablation set, settings) lives in traitlets; everything big travels as custom messages
with binary buffers, asked for by the frontend:

Requests (JS -> Python), ``{"kind": <kind>, "id": <int>, ...params}``:

================  ===========================================================================
kind              params
================  ===========================================================================
head_matrix       layer, head [, encoding "u8sqrt"|"u8"|"f16"] -> the head's [T, T] attention
                  (lower triangle; default "u8sqrt")
token_values      scope "focus"|"layer"|"range", selection, direction "from"|"to",
                  layer+head (focus) | layer (layer) | layer_range (range) -> values [T]
grid              measure [, selection] -> values [L * H]
flow              selection -> spread [L, S], selection_mass [L], logit_lens [L]
set_ablations     ablations: [{layer, head, mode "zero"|"mean"|"scale" [, value]}] -> prediction
sweep             mode [, value, layer_range] -> values [L * H] (change in logit difference; NaN
                  outside layer_range); progress messages
png               view, data_url -> stored on the widget (``explorer.last_png``)
================  ===========================================================================

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
error reply naming the problem, never an exception out of the widget.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from finwidget.errors import InputError

PROTOCOL_VERSION = 1

DIRECTIONS = ("from", "to")
SCOPES = ("focus", "layer", "range")
ENCODINGS = ("u8sqrt", "u8", "f16")
GRID_MEASURES = (
    "attention_to_selection",
    "entropy",
    "financial_focus",
    "direct_logit_diff",
    "ablation_effect",
)
#: measures that depend on the selection (and so carry it in the grid request)
SELECTION_MEASURES = ("attention_to_selection", "entropy")
ABLATION_MODES = ("zero", "mean", "scale")
VIEW_NAMES = ("statement", "grid", "matrix", "flow", "prediction")
MATRIX_AGGREGATES = ("tokens", "spans", "line_items")
STATEMENT_HEADS = ("focus", "layer", "range")

#: request kind -> (required params, optional params)
REQUEST_PARAMS: dict[str, tuple[frozenset, frozenset]] = {
    "head_matrix": (frozenset({"layer", "head"}), frozenset({"encoding"})),
    "token_values": (
        frozenset({"scope", "selection", "direction"}),
        frozenset({"layer", "head", "layer_range"}),
    ),
    "grid": (frozenset({"measure"}), frozenset({"selection"})),
    "flow": (frozenset({"selection"}), frozenset()),
    "set_ablations": (frozenset({"ablations"}), frozenset({"grid"})),
    "sweep": (frozenset({"mode"}), frozenset({"value", "layer_range"})),
    "png": (frozenset({"view", "data_url"}), frozenset()),
}
REQUEST_KINDS = tuple(REQUEST_PARAMS)

MAX_PNG_BYTES = 16 * 2**20
PNG_PREFIX = "data:image/png;base64,"


class ProtocolError(InputError):
    """A message from the frontend that does not follow the protocol."""


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


def error_reply(message_id, kind, error: str) -> tuple[dict, list]:
    return {"kind": "reply", "id": message_id, "request": kind, "ok": False, "error": str(error)}, []


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


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_in(params: dict, name: str, upper: int, what: str) -> int:
    value = params.get(name)
    if not _is_int(value):
        raise ProtocolError(f"{name} must be an integer, got {value!r}")
    if not 0 <= value < upper:
        raise ProtocolError(f"{name} {value} is outside the model: {what} (0 to {upper - 1})")
    return value


def _choice(params: dict, name: str, options: tuple) -> str:
    value = params.get(name)
    if value not in options:
        raise ProtocolError(f"{name} must be one of {', '.join(options)}, got {value!r}")
    return value


def _range(value, upper: int, name: str, half_open: bool) -> list[int]:
    """``[]`` or ``[a, b]`` with ``0 <= a < b <= upper`` (half open) or ``0 <= a <= b < upper``."""
    if not isinstance(value, list):
        raise ProtocolError(f"{name} must be a list ([] or [start, end]), got {type(value).__name__}")
    if not value:
        return []
    if len(value) != 2 or not all(_is_int(v) for v in value):
        raise ProtocolError(f"{name} must be [] or two integers, got {value!r}")
    a, b = value
    ok = (0 <= a < b <= upper) if half_open else (0 <= a <= b < upper)
    if not ok:
        bound = f"0 <= start < end <= {upper}" if half_open else f"0 <= first <= last <= {upper - 1}"
        raise ProtocolError(f"{name} {value} is out of range (needs {bound})")
    return [a, b]


def _finite_number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProtocolError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def validate_ablations(items, geometry: Geometry) -> list[dict]:
    """The ablation list as sent by the frontend or set from Python -> normalized dicts, sorted.

    Each item: ``{"layer": int, "head": int, "mode": "zero"|"mean"|"scale"[, "value": float]}``
    (``value`` is the factor for "scale", default 0). One entry per head.
    """
    if not isinstance(items, (list, tuple)):
        raise ProtocolError(f"ablations must be a list, got {type(items).__name__}")
    limit = geometry.num_layers * geometry.num_heads
    if len(items) > limit:
        raise ProtocolError(f"{len(items)} ablations, but the model has only {limit} heads")
    out: dict[tuple[int, int], dict] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ProtocolError(f"ablation {i} must be a dict, got {type(item).__name__}")
        unknown = set(item) - {"layer", "head", "mode", "value"}
        if unknown:
            raise ProtocolError(f"ablation {i} has unknown keys {sorted(unknown)}")
        layer = _int_in(item, "layer", geometry.num_layers, f"{geometry.num_layers} layers")
        head = _int_in(item, "head", geometry.num_heads, f"{geometry.num_heads} heads per layer")
        mode = item.get("mode", "zero")
        if mode not in ABLATION_MODES:
            raise ProtocolError(
                f"ablation {i}: mode must be one of {', '.join(ABLATION_MODES)}, got {mode!r}"
            )
        entry = {"layer": layer, "head": head, "mode": mode}
        if mode == "scale":
            entry["value"] = _finite_number(item.get("value", 0.0), f"ablation {i} value")
        elif item.get("value") not in (None, 0, 0.0):
            raise ProtocolError(f"ablation {i}: mode {mode!r} takes no value (got {item.get('value')!r})")
        if (layer, head) in out:
            raise ProtocolError(f"ablation {i}: layer {layer} head {head} is listed twice")
        out[(layer, head)] = entry
    return [out[key] for key in sorted(out)]


def parse_request(content, geometry: Geometry) -> Request:
    """Validate one incoming custom message; raises :class:`ProtocolError` naming the problem."""
    if not isinstance(content, dict):
        raise ProtocolError(f"a request must be a JSON object, got {type(content).__name__}")
    message_id = content.get("id")
    if not _is_int(message_id) or message_id < 0:
        raise ProtocolError(f"a request needs a non-negative integer id, got {message_id!r}")
    kind = content.get("kind")
    if kind not in REQUEST_PARAMS:
        raise ProtocolError(f"unknown request kind {kind!r}; expected one of {', '.join(REQUEST_KINDS)}")
    required, optional = REQUEST_PARAMS[kind]
    params = {k: v for k, v in content.items() if k not in ("kind", "id")}
    missing = required - set(params)
    if missing:
        raise ProtocolError(f"{kind} request is missing {sorted(missing)}")
    unknown = set(params) - required - optional
    if unknown:
        raise ProtocolError(f"{kind} request has unknown keys {sorted(unknown)}")
    L, H, S = geometry.num_layers, geometry.num_heads, geometry.num_spans
    layers_what, heads_what = f"{L} layers", f"{H} heads per layer"
    clean: dict = {}
    if kind == "head_matrix":
        clean["layer"] = _int_in(params, "layer", L, layers_what)
        clean["head"] = _int_in(params, "head", H, heads_what)
        clean["encoding"] = _choice(params, "encoding", ENCODINGS) if "encoding" in params else "u8sqrt"
    elif kind == "token_values":
        clean["scope"] = scope = _choice(params, "scope", SCOPES)
        clean["selection"] = _range(params["selection"], S, "selection", half_open=True)
        clean["direction"] = _choice(params, "direction", DIRECTIONS)
        if scope in ("focus", "layer"):
            clean["layer"] = _int_in(params, "layer", L, layers_what)
        if scope == "focus":
            clean["head"] = _int_in(params, "head", H, heads_what)
        if scope == "range":
            if "layer_range" not in params:
                raise ProtocolError("token_values with scope 'range' needs layer_range")
            clean["layer_range"] = _range(params["layer_range"], L, "layer_range", half_open=False) or [
                0,
                L - 1,
            ]
    elif kind == "grid":
        clean["measure"] = _choice(params, "measure", GRID_MEASURES)
        clean["selection"] = _range(params.get("selection", []), S, "selection", half_open=True)
    elif kind == "flow":
        clean["selection"] = _range(params["selection"], S, "selection", half_open=True)
    elif kind == "set_ablations":
        clean["ablations"] = validate_ablations(params["ablations"], geometry)
        if "grid" in params:
            clean["grid"] = _choice(params, "grid", GRID_MEASURES)
    elif kind == "sweep":
        clean["mode"] = _choice(params, "mode", ABLATION_MODES)
        if clean["mode"] == "scale":
            clean["value"] = _finite_number(params.get("value", 0.0), "value")
        if "layer_range" in params:
            clean["layer_range"] = _range(params["layer_range"], L, "layer_range", half_open=False)
    elif kind == "png":
        view = params["view"]
        if not isinstance(view, str) or view not in VIEW_NAMES:
            raise ProtocolError(f"view must be one of {', '.join(VIEW_NAMES)}, got {view!r}")
        data_url = params["data_url"]
        if not isinstance(data_url, str) or not data_url.startswith(PNG_PREFIX):
            raise ProtocolError("data_url must be a PNG data URL (data:image/png;base64,...)")
        if len(data_url) > MAX_PNG_BYTES:
            raise ProtocolError(f"the PNG is larger than {MAX_PNG_BYTES // 2**20} MiB")
        clean["view"] = view
        clean["data_url"] = data_url
    return Request(kind=kind, id=message_id, params=clean)


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


def requests_for_state(state: dict) -> list[dict]:
    """The data requests (without ids) the frontend makes for a widget state.

    Mirrors ``requestsForState`` in js/store.ts exactly: an exported page embeds the
    replies to these requests under their keys.
    """
    views = set(state["views"])
    selection = selection_param(state["selection"])
    focus = state["focus"]
    out: list[dict] = []
    if "matrix" in views:
        out.append({"kind": "head_matrix", "layer": focus["layer"], "head": focus["head"]})
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
        out.append(msg)
    if "grid" in views:
        msg = {"kind": "grid", "measure": state["grid_measure"]}
        if state["grid_measure"] in SELECTION_MEASURES:
            msg["selection"] = selection
        out.append(msg)
    if "flow" in views:
        out.append({"kind": "flow", "selection": selection})
    return out
