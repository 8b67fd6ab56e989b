"""The widget protocol without a model or a browser: encodings, validation, request keys."""

import math

import numpy as np
import pytest

from finwidget.widgets.protocol import (
    Geometry,
    Payload,
    ProtocolError,
    decode_array,
    pack_lower_triangle,
    parse_request,
    quantize_sqrt_u8,
    quantize_u8,
    request_key,
    requests_for_state,
    unpack_lower_triangle,
    validate_ablations,
)

GEOMETRY = Geometry(num_layers=3, num_heads=4, num_spans=10)


def causal_matrix(n, seed=0):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, n)) * 3
    scores[np.triu_indices(n, 1)] = -np.inf
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def test_lower_triangle_packs_row_by_row_and_round_trips():
    m = np.arange(16, dtype=np.float32).reshape(4, 4)
    packed = pack_lower_triangle(m)
    assert packed.tolist() == [0, 4, 5, 8, 9, 10, 12, 13, 14, 15]
    assert np.array_equal(unpack_lower_triangle(packed, 4), np.tril(m))
    with pytest.raises(ValueError, match="needs 10 values"):
        unpack_lower_triangle(packed[:-1], 4)


def test_uint8_quantization_error_is_at_most_half_a_step():
    values = causal_matrix(50).ravel()
    q, scale, offset = quantize_u8(values)
    assert q.dtype == np.uint8 and offset == 0.0
    assert math.isclose(scale, values.max() / 255, rel_tol=1e-6)
    assert np.abs(offset + q * scale - values).max() <= scale / 2 + 1e-7
    signed = np.array([-2.0, 0.0, 1.0], dtype=np.float32)
    q, scale, offset = quantize_u8(signed)
    assert offset == -2.0 and np.allclose(offset + q * scale, signed, atol=scale / 2)
    q, scale, _ = quantize_u8(np.zeros(3))
    assert scale == 1.0 and q.tolist() == [0, 0, 0]


@pytest.mark.parametrize(
    "encoding,bytes_per_value,tolerance", [("u8", 1, 1 / 255 / 2), ("u8sqrt", 1, 1 / 255), ("f16", 2, 1e-3)]
)
def test_causal_matrix_sends_only_the_lower_triangle(encoding, bytes_per_value, tolerance):
    n = 64
    m = causal_matrix(n)
    payload = Payload()
    payload.add_causal_matrix("matrix", m, encoding)
    spec = payload.arrays["matrix"]
    assert spec["tril"] is True and spec["shape"] == [n, n] and spec["buffer"] == 0
    assert len(payload.buffers[0]) == n * (n + 1) // 2 * bytes_per_value
    back = decode_array(spec, payload.buffers)
    assert np.abs(back - m).max() <= tolerance * max(1.0, m.max())
    assert np.all(back[np.triu_indices(n, 1)] == 0)


def test_square_root_bytes_keep_small_attention_values():
    values = np.array([1.0, 0.01, 0.001, 0.0002, 0.0], dtype=np.float32)
    q, top = quantize_sqrt_u8(values)
    back = top * (q / 255.0) ** 2
    assert top == 1.0 and back[0] == 1.0 and back[-1] == 0.0
    # relative error of small values stays bounded; linear bytes would send 0 for all three
    assert np.all(np.abs(back[1:4] - values[1:4]) / values[1:4] < 0.3)
    linear, scale, offset = quantize_u8(values)
    assert np.all(offset + linear[2:4] * scale == 0)
    assert quantize_sqrt_u8(np.zeros(3))[0].tolist() == [0, 0, 0]
    q, top = quantize_sqrt_u8(np.array([4.0, -1.0, np.nan, np.inf, 1.0]))
    assert top == 4.0 and q.tolist() == [255, 0, 0, 0, 128]


def test_several_arrays_get_their_own_buffers():
    payload = Payload()
    payload.add_f16("a", np.array([1.5, -2.0]))
    payload.add_f32("b", np.array([[1.0, 2.0], [3.0, 4.0]]))
    payload.add_u8("c", np.array([0.0, 0.5, 1.0]))
    assert [payload.arrays[k]["buffer"] for k in "abc"] == [0, 1, 2]
    assert decode_array(payload.arrays["a"], payload.buffers).tolist() == [1.5, -2.0]
    assert decode_array(payload.arrays["b"], payload.buffers).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert np.allclose(decode_array(payload.arrays["c"], payload.buffers), [0, 0.5, 1.0], atol=1 / 510)


def test_request_key_is_the_same_text_as_the_js_side():
    # js/test/protocol.test.ts expects exactly this string for the same request.
    key = request_key({"selection": [3, 5], "kind": "grid", "id": 17, "measure": "entropy"})
    assert key == '{"kind":"grid","measure":"entropy","selection":[3,5]}'


def test_valid_requests_are_normalized():
    r = parse_request({"kind": "head_matrix", "id": 4, "layer": 2, "head": 3}, GEOMETRY)
    assert (r.kind, r.id, r.params) == ("head_matrix", 4, {"layer": 2, "head": 3, "encoding": "u8sqrt"})
    r = parse_request(
        {
            "kind": "token_values",
            "id": 1,
            "scope": "range",
            "selection": [],
            "direction": "to",
            "layer_range": [],
        },
        GEOMETRY,
    )
    assert r.params["layer_range"] == [0, 2]
    r = parse_request(
        {
            "kind": "set_ablations",
            "id": 2,
            "ablations": [
                {"layer": 2, "head": 0, "mode": "scale", "value": 2},
                {"layer": 0, "head": 1, "mode": "zero"},
            ],
        },
        GEOMETRY,
    )
    assert r.params["ablations"] == [
        {"layer": 0, "head": 1, "mode": "zero"},
        {"layer": 2, "head": 0, "mode": "scale", "value": 2.0},
    ]


@pytest.mark.parametrize(
    "message,problem",
    [
        ("hello", "JSON object"),
        ({"kind": "grid", "measure": "entropy"}, "integer id"),
        ({"kind": "grid", "id": True, "measure": "entropy"}, "integer id"),
        ({"kind": "grid", "id": -1, "measure": "entropy"}, "integer id"),
        ({"kind": "launch", "id": 1}, "unknown request kind"),
        ({"kind": "grid", "id": 1}, "missing ['measure']"),
        ({"kind": "grid", "id": 1, "measure": "entropy", "extra": 1}, "unknown keys ['extra']"),
        ({"kind": "grid", "id": 1, "measure": "loudness"}, "measure must be one of"),
        ({"kind": "head_matrix", "id": 1, "layer": 3, "head": 0}, "layer 3 is outside the model"),
        ({"kind": "head_matrix", "id": 1, "layer": 0, "head": -1}, "head -1 is outside the model"),
        ({"kind": "head_matrix", "id": 1, "layer": "0", "head": 0}, "layer must be an integer"),
        ({"kind": "head_matrix", "id": 1, "layer": 1.0, "head": 0}, "layer must be an integer"),
        (
            {"kind": "head_matrix", "id": 1, "layer": 0, "head": 0, "encoding": "png"},
            "encoding must be one of",
        ),
        ({"kind": "flow", "id": 1, "selection": [5, 3]}, "out of range"),
        ({"kind": "flow", "id": 1, "selection": [0, 11]}, "out of range"),
        ({"kind": "flow", "id": 1, "selection": "0:3"}, "must be a list"),
        ({"kind": "flow", "id": 1, "selection": [1, 2, 3]}, "two integers"),
        ({"kind": "flow", "id": 1, "selection": [], "direction": "up"}, "direction"),
        ({"kind": "grid", "id": 1, "measure": "attention_to_selection", "direction": "up"}, "direction"),
        (
            {
                "kind": "token_values",
                "id": 1,
                "scope": "layer",
                "selection": [],
                "direction": "sideways",
                "layer": 0,
            },
            "direction must be one of",
        ),
        (
            {
                "kind": "token_values",
                "id": 1,
                "scope": "focus",
                "selection": [],
                "direction": "from",
                "layer": 0,
            },
            "head must be an integer",
        ),
        (
            {"kind": "token_values", "id": 1, "scope": "range", "selection": [], "direction": "from"},
            "needs layer_range",
        ),
        (
            {
                "kind": "token_values",
                "id": 1,
                "scope": "range",
                "selection": [],
                "direction": "from",
                "layer_range": [2, 1],
            },
            "out of range",
        ),
        ({"kind": "set_ablations", "id": 1, "ablations": {"layer": 0}}, "must be a list"),
        ({"kind": "set_ablations", "id": 1, "ablations": [[0, 1]]}, "must be a dict"),
        (
            {"kind": "set_ablations", "id": 1, "ablations": [{"layer": 0, "head": 1, "mode": "explode"}]},
            "mode must be",
        ),
        (
            {
                "kind": "set_ablations",
                "id": 1,
                "ablations": [{"layer": 0, "head": 1, "mode": "scale", "value": float("nan")}],
            },
            "finite number",
        ),
        (
            {
                "kind": "set_ablations",
                "id": 1,
                "ablations": [{"layer": 0, "head": 1, "mode": "zero", "value": 3}],
            },
            "takes no value",
        ),
        (
            {
                "kind": "set_ablations",
                "id": 1,
                "ablations": [{"layer": 0, "head": 1}, {"layer": 0, "head": 1}],
            },
            "listed twice",
        ),
        (
            {"kind": "set_ablations", "id": 1, "ablations": [{"layer": 0, "head": 1, "positions": [1]}]},
            "unknown keys",
        ),
        (
            {
                "kind": "set_ablations",
                "id": 1,
                "ablations": [{"layer": 0, "head": h % 4, "mode": "zero"} for h in range(13)],
            },
            "only 12 heads",
        ),
        ({"kind": "sweep", "id": 1, "mode": "scale", "value": "2"}, "finite number"),
        ({"kind": "png", "id": 1, "view": "matrix", "data_url": "javascript:alert(1)"}, "PNG data URL"),
        (
            {"kind": "png", "id": 1, "view": "desktop", "data_url": "data:image/png;base64,"},
            "view must be one of",
        ),
    ],
)
def test_malformed_requests_are_rejected_with_a_reason(message, problem):
    with pytest.raises(ProtocolError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        parse_request(message, GEOMETRY)


def test_validate_ablations_accepts_an_empty_set():
    assert validate_ablations([], GEOMETRY) == []


def test_requests_for_state_mirror_the_frontend():
    state = {
        "views": ["statement", "grid", "matrix", "flow", "prediction"],
        "selection": {"start": 2, "end": 4},
        "focus": {"layer": 1, "head": 3},
        "direction": "to",
        "grid_measure": "financial_focus",
        "layer_range": [],
        "settings": {"statement_heads": "layer"},
        "geometry": {"num_layers": 3},
    }
    assert requests_for_state(state) == [
        {"kind": "head_matrix", "layer": 1, "head": 3},
        {"kind": "token_values", "scope": "layer", "selection": [2, 4], "direction": "to", "layer": 1},
        {"kind": "grid", "measure": "financial_focus"},
        {"kind": "flow", "selection": [2, 4], "direction": "to"},
    ]
    # a measure that follows the direction switch carries it, in both directions
    for direction in ("from", "to"):
        planned = requests_for_state({**state, "views": ["grid", "flow"], "grid_measure": "attention_to_selection",
                                      "direction": direction})
        assert planned == [
            {"kind": "grid", "measure": "attention_to_selection", "selection": [2, 4], "direction": direction},
            {"kind": "flow", "selection": [2, 4], "direction": direction},
        ]
        for request in planned:
            assert parse_request({**request, "id": 0}, GEOMETRY).params["direction"] == direction
    # one that reads the selection but not the switch does not
    state.update(views=["grid"], grid_measure="entropy", selection={})
    assert requests_for_state(state) == [{"kind": "grid", "measure": "entropy", "selection": []}]
    # Every planned request is itself valid.
    for measure in ("entropy", "attention_to_selection"):
        for request in requests_for_state({**state, "grid_measure": measure,
                                           "views": ["statement", "grid", "matrix", "flow"]}):
            parse_request({**request, "id": 0}, GEOMETRY)


def _ts_interface_fields(name: str) -> set[str]:
    """Field names of ``export interface <name> { ... }`` in js/protocol.ts."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "js" / "protocol.ts").read_text(encoding="utf-8")
    body = re.search(rf"export interface {name} \{{(.*?)\n\}}", text, re.DOTALL).group(1)
    return set(re.findall(r"^\s+(\w+)\??:", body, re.MULTILINE))


def test_the_typescript_shapes_name_what_python_sends():
    from finwidget.widgets.protocol import SYNCED_STATE, startup_catalogue

    assert _ts_interface_fields("ExplorerTraits") == set(SYNCED_STATE)
    catalogue = startup_catalogue()
    assert _ts_interface_fields("Catalogue") == set(catalogue)
    for interface, key in [("ModeInfo", "modes"), ("MeasureInfo", "measures"), ("ViewInfo", "views")]:
        for entry in catalogue[key]:
            assert set(entry) == _ts_interface_fields(interface), (interface, entry)
