"""Bad-input catalogue: the explorer widget's protocol and traits. Every request, however
malformed, gets a reply (``ok: false`` with an error echoing at most a short prefix of the bad
value), never an exception; every reply is strict JSON; read-only traits refuse writes; the
model is untouched. A Hypothesis fuzz test sends random requests."""

from __future__ import annotations

import json
import math
import re

import pytest
import traitlets
from bad_input_common import assert_untouched, model_snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finwidget.demo import load_demo_model, make_statements
from finwidget.widgets import AttentionExplorer
from finwidget.widgets.protocol import ECHO_CHARS, MAX_ERROR_CHARS, READ_ONLY_STATE, REQUEST_KINDS


@pytest.fixture(scope="module")
def demo():
    return load_demo_model()


@pytest.fixture(scope="module")
def explorer(demo):
    model, tokenizer = demo
    return AttentionExplorer(model, tokenizer, make_statements(1, seed=3)[0].text)


def strict(reply) -> str:
    return json.dumps(reply, allow_nan=False)


def answer(explorer, content):
    """The reply to ``content``: it must come back (never raise), be strict JSON, and leave the model alone."""
    model = explorer.session.model
    before = model_snapshot(model)
    reply, buffers = explorer.handle_request(content)
    assert isinstance(reply, dict) and reply["kind"] == "reply" and isinstance(reply["ok"], bool)
    assert isinstance(buffers, list)
    strict(reply)
    if not reply["ok"]:
        assert isinstance(reply["error"], str) and 0 < len(reply["error"]) <= MAX_ERROR_CHARS
    assert_untouched(model, before)
    return reply


HUGE = "x" * 10_000_000
BAD_REQUESTS = [
    ("kind is a list", {"id": 1, "kind": ["grid"], "measure": "entropy"}, "unknown request kind"),
    ("kind is a dict", {"id": 1, "kind": {"a": 1}}, "unknown request kind"),
    ("kind is None", {"id": 1, "kind": None}, "unknown request kind"),
    ("kind is a number", {"id": 1, "kind": 3}, "unknown request kind"),
    ("kind is a float NaN", {"id": 1, "kind": math.nan}, "unknown request kind"),
    ("kind is unknown", {"id": 1, "kind": "delete_everything"}, "unknown request kind"),
    ("kind is huge", {"id": 1, "kind": HUGE}, "unknown request kind"),
    ("no kind", {"id": 1}, "unknown request kind"),
    ("no id", {"kind": "grid", "measure": "entropy"}, "id"),
    ("id is a string", {"id": "1", "kind": "grid", "measure": "entropy"}, "id"),
    ("id is negative", {"id": -1, "kind": "grid", "measure": "entropy"}, "id"),
    ("id is a float", {"id": 1.5, "kind": "grid", "measure": "entropy"}, "id"),
    ("id is a bool", {"id": True, "kind": "grid", "measure": "entropy"}, "id"),
    ("id is huge", {"id": HUGE, "kind": "grid", "measure": "entropy"}, "id"),
    ("content is a list", ["grid"], "JSON object"),
    ("content is None", None, "JSON object"),
    ("content is a string", "grid", "JSON object"),
    ("unknown key", {"id": 1, "kind": "grid", "measure": "entropy", "colour": "red"}, "unknown keys"),
    ("huge unknown key", {"id": 1, "kind": "grid", "measure": "entropy", HUGE: 1}, "unknown keys"),
    ("missing param", {"id": 1, "kind": "head_matrix", "layer": 0}, "missing"),
    ("layer a float", {"id": 1, "kind": "head_matrix", "layer": 0.0, "head": 0}, "integer"),
    ("layer a bool", {"id": 1, "kind": "head_matrix", "layer": True, "head": 0}, "integer"),
    ("layer a string", {"id": 1, "kind": "head_matrix", "layer": "0", "head": 0}, "integer"),
    ("layer beyond float", {"id": 1, "kind": "head_matrix", "layer": 10**400, "head": 0}, "outside the model"),
    ("layer negative", {"id": 1, "kind": "head_matrix", "layer": -1, "head": 0}, "outside the model"),
    ("head out of range", {"id": 1, "kind": "head_matrix", "layer": 0, "head": 4}, "outside the model"),
    ("encoding a list", {"id": 1, "kind": "head_matrix", "layer": 0, "head": 0, "encoding": ["f16"]}, "encoding"),
    ("scope unknown", {"id": 1, "kind": "token_values", "scope": "all", "selection": [], "direction": "from"},
     "scope"),
    ("selection a dict", {"id": 1, "kind": "token_values", "scope": "layer", "selection": {"a": 1},
                          "direction": "from", "layer": 0}, "selection"),
    ("selection reversed", {"id": 1, "kind": "flow", "selection": [3, 1]}, "out of range"),
    ("selection of floats", {"id": 1, "kind": "flow", "selection": [0.5, 1.5]}, "two integers"),
    ("selection huge", {"id": 1, "kind": "flow", "selection": [0, 10**30]}, "out of range"),
    ("direction a dict", {"id": 1, "kind": "token_values", "scope": "layer", "selection": [],
                          "direction": {"to": 1}, "layer": 0}, "direction"),
    ("range without layer_range", {"id": 1, "kind": "token_values", "scope": "range", "selection": [],
                                   "direction": "to"}, "layer_range"),
    ("layer_range reversed", {"id": 1, "kind": "token_values", "scope": "range", "selection": [],
                              "direction": "to", "layer_range": [1, 0]}, "out of range"),
    ("measure a list", {"id": 1, "kind": "grid", "measure": ["entropy"]}, "measure"),
    ("measure unknown", {"id": 1, "kind": "grid", "measure": "beauty"}, "measure"),
    ("ablations not a list", {"id": 1, "kind": "set_ablations", "ablations": {"layer": 0}}, "list"),
    ("ablation not a dict", {"id": 1, "kind": "set_ablations", "ablations": [[0, 1]]}, "dict"),
    ("ablation mode a list", {"id": 1, "kind": "set_ablations",
                              "ablations": [{"layer": 0, "head": 1, "mode": ["zero"]}]}, "mode"),
    ("ablation mode a dict", {"id": 1, "kind": "set_ablations",
                              "ablations": [{"layer": 0, "head": 1, "mode": {"zero": 1}}]}, "mode"),
    ("ablation NaN value", {"id": 1, "kind": "set_ablations",
                            "ablations": [{"layer": 0, "head": 1, "mode": "scale", "value": math.nan}]}, "finite"),
    ("ablation inf value", {"id": 1, "kind": "set_ablations",
                            "ablations": [{"layer": 0, "head": 1, "mode": "scale", "value": -math.inf}]}, "finite"),
    ("ablation int beyond float", {"id": 1, "kind": "set_ablations",
                                   "ablations": [{"layer": 0, "head": 1, "mode": "scale", "value": 10**400}]},
     "finite"),
    ("ablation value 1e39", {"id": 1, "kind": "set_ablations",
                             "ablations": [{"layer": 0, "head": 1, "mode": "scale", "value": 1e39}]},
     "beyond the largest float32"),
    ("ablation value 1e300", {"id": 1, "kind": "set_ablations",
                              "ablations": [{"layer": 0, "head": 1, "mode": "scale", "value": 1e300}]},
     "beyond the largest float32"),
    ("ablation value 1e30", {"id": 1, "kind": "set_ablations",
                             "ablations": [{"layer": 0, "head": 1, "mode": "scale", "value": 1e30}]},
     "too large"),
    ("ablation value a string", {"id": 1, "kind": "set_ablations",
                                 "ablations": [{"layer": 0, "head": 1, "mode": "scale", "value": "2"}]}, "finite"),
    ("ablation value on zero", {"id": 1, "kind": "set_ablations",
                                "ablations": [{"layer": 0, "head": 1, "mode": "zero", "value": 3}]}, "takes no value"),
    ("ablation twice", {"id": 1, "kind": "set_ablations",
                        "ablations": [{"layer": 0, "head": 1}, {"layer": 0, "head": 1}]}, "listed twice"),
    ("too many ablations", {"id": 1, "kind": "set_ablations", "ablations": [{"layer": 0, "head": 0}] * 9},
     "only 8 heads"),
    ("ablation unknown key", {"id": 1, "kind": "set_ablations", "ablations": [{"layer": 0, "head": 1, "x": 1}]},
     "unknown keys"),
    ("ablation mode resample", {"id": 1, "kind": "set_ablations",
                                "ablations": [{"layer": 0, "head": 1, "mode": "resample"}]}, "mode"),
    ("sweep mode a dict", {"id": 1, "kind": "sweep", "mode": {"zero": 1}}, "mode"),
    ("sweep value huge", {"id": 1, "kind": "sweep", "mode": "scale", "value": 1e39}, "beyond the largest float32"),
    ("sweep value NaN", {"id": 1, "kind": "sweep", "mode": "scale", "value": math.nan}, "finite"),
    ("sweep layer_range of strings", {"id": 1, "kind": "sweep", "mode": "zero", "layer_range": ["0", "1"]},
     "two integers"),
    ("png not a data URL", {"id": 1, "kind": "png", "view": "grid", "data_url": "http://x"}, "PNG data URL"),
    ("png view unknown", {"id": 1, "kind": "png", "view": HUGE, "data_url": "data:image/png;base64,"}, "view"),
    ("png too big", {"id": 1, "kind": "png", "view": "grid", "data_url": "data:image/png;base64," + HUGE * 2},
     "larger than"),
]


@pytest.mark.parametrize("name,content,words", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_get_an_error_reply(explorer, name, content, words):
    prediction, ablations = dict(explorer.prediction), list(explorer.ablations)
    reply = answer(explorer, content)
    assert reply["ok"] is False
    assert words in reply["error"], reply["error"][:300]
    assert "x" * (ECHO_CHARS + 1) not in reply["error"]  # a huge value is echoed as a short prefix at most
    assert len(reply["error"]) < 1000
    assert explorer.prediction == prediction and explorer.ablations == ablations  # nothing changed


def test_the_reply_id_is_only_echoed_when_it_is_a_valid_id(explorer):
    assert answer(explorer, {"id": HUGE, "kind": "grid", "measure": "entropy"})["id"] is None
    assert answer(explorer, {"id": 7, "kind": ["grid"]})["id"] == 7
    assert answer(explorer, {"id": 7, "kind": ["grid"]})["request"] is None


def test_a_huge_but_finite_scale_is_refused_and_the_prediction_keeps_its_value(explorer):
    """Before: scale 1e39 replied ok: true with a NaN prediction (not strict JSON)."""
    before = dict(explorer.prediction)
    for value in (1e39, 1e30, 1e20):
        reply = answer(explorer, {"id": 2, "kind": "set_ablations",
                                  "ablations": [{"layer": 0, "head": 2, "mode": "scale", "value": value}]})
        assert reply["ok"] is False
    assert explorer.prediction == before
    strict(explorer.get_state())


def test_good_requests_still_answer(explorer):
    reply = answer(explorer, {"id": 3, "kind": "set_ablations",
                              "ablations": [{"layer": 0, "head": 2, "mode": "scale", "value": 2.0}]})
    assert reply["ok"] is True and math.isfinite(reply["prediction"]["ablated"]["logit_diff"])
    assert answer(explorer, {"id": 4, "kind": "set_ablations", "ablations": []})["ok"] is True


@pytest.mark.parametrize("name", READ_ONLY_STATE)
def test_read_only_traits_refuse_writes_from_python(explorer, name):
    old = getattr(explorer, name)
    with pytest.raises(traitlets.TraitError, match="read-only"):
        setattr(explorer, name, {} if isinstance(old, dict) else not old)
    assert getattr(explorer, name) == old


def test_a_sweep_with_nan_outside_its_layers_still_replies_strict_json(explorer):
    reply = answer(explorer, {"id": 5, "kind": "sweep", "mode": "zero", "layer_range": [1, 1]})
    assert reply["ok"] is True


def test_an_exported_page_is_strict_json(explorer, tmp_path):
    explorer.sweep("zero", layers=[1])  # NaN outside layer 1 in the grid
    page = explorer.save_html(tmp_path / "page.html").read_text(encoding="utf-8")
    blocks = re.findall(r'<script type="application/json" id="([^"]+)">(.*?)</script>', page, flags=re.DOTALL)
    assert {"fw-state"} <= {name for name, _ in blocks}

    def refuse(constant):
        raise AssertionError(f"{constant} in an embedded JSON block")

    for _, text in blocks:
        json.loads(text, parse_constant=refuse)


# ---------------------------------------------------------------------------- fuzzing
PARAM_NAMES = ["layer", "head", "encoding", "scope", "selection", "direction", "layer_range", "measure",
               "ablations", "grid", "mode", "value", "view", "data_url", "id", "kind"]
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["zero", "scale", "mean", "entropy", "from", "to", "focus", "layer", "range", "grid", "u8"]),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(PARAM_NAMES + ["x"]), inner, max_size=4)),
    max_leaves=12)
requests = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"id": st.one_of(st.integers(min_value=0, max_value=1000), json_scalars),
         "kind": st.one_of(st.sampled_from(REQUEST_KINDS), json_values)},
        optional={name: json_values for name in PARAM_NAMES if name not in ("id", "kind")},
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(content=requests)
def test_fuzzed_requests_always_get_a_strict_json_reply(explorer, content):
    reply, _ = explorer.handle_request(content)
    assert reply["kind"] == "reply" and isinstance(reply["ok"], bool)
    strict(reply)
    if not reply["ok"]:
        assert 0 < len(reply["error"]) <= MAX_ERROR_CHARS
    assert not explorer.session.model._forward_hooks and not explorer.session.model._forward_pre_hooks


def test_an_ablation_set_from_python_that_overflows_is_refused_and_undone(explorer):
    """Before: the error left the new ablations in place next to the old prediction."""
    from finwidget.errors import NonFiniteError

    explorer.reset()
    before = dict(explorer.prediction)
    with pytest.raises(NonFiniteError, match="too large"):
        explorer.ablate(0, 2, "scale", 1e30)
    assert explorer.ablations == [] and explorer.prediction == before
    with pytest.raises(traitlets.TraitError, match="finite"):
        explorer.ablate(0, 2, "scale", math.inf)
    assert explorer.ablations == []
