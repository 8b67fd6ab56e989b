"""The explorer's circuit view on the Python side: the "circuit" request kind (schema,
parser, requests_for_state), the session method behind it and its handler."""

import json

import pytest
from helpers import sweep_in_progress

from finwidget.widgets import AttentionExplorer
from finwidget.widgets.protocol import (
    DEFAULT_VIEW_NAMES,
    VIEW_NAMES,
    Geometry,
    ProtocolError,
    parse_request,
    request_key,
    requests_for_state,
    startup_catalogue,
)

GEOMETRY = Geometry(num_layers=3, num_heads=4, num_spans=10)


def test_circuit_request_defaults_to_the_first_order_estimate_and_checks_the_method():
    assert parse_request({"kind": "circuit", "id": 1}, GEOMETRY).params == {"method": "attribution"}
    exact = parse_request({"kind": "circuit", "id": 2, "method": "path_patching"}, GEOMETRY)
    assert exact.params == {"method": "path_patching"}
    with pytest.raises(ProtocolError, match="method must be one of attribution, path_patching, got 'exact'"):
        parse_request({"kind": "circuit", "id": 3, "method": "exact"}, GEOMETRY)
    with pytest.raises(ProtocolError, match="unknown keys"):
        parse_request({"kind": "circuit", "id": 4, "edges": 10}, GEOMETRY)


def test_the_circuit_view_is_in_the_catalogue_but_opt_in():
    assert "circuit" in VIEW_NAMES and "circuit" not in DEFAULT_VIEW_NAMES
    views = {v["name"]: v for v in startup_catalogue()["views"]}
    assert views["circuit"] == {"name": "circuit", "label": "circuit", "lane": "circuit", "column": "right"}
    state = {
        "views": list(DEFAULT_VIEW_NAMES), "selection": {}, "focus": {"layer": 0, "head": 0},
        "direction": "from", "grid_measure": "entropy", "layer_range": [],
        "settings": {"statement_heads": "focus"}, "geometry": {"num_layers": 3},
    }
    assert not any(r["kind"] == "circuit" for r in requests_for_state(state))
    planned = requests_for_state({**state, "views": ["circuit"]})
    # The same request (and key) as requestsForState in js/protocol.ts plans.
    assert planned == [{"kind": "circuit", "method": "attribution"}]
    assert request_key(planned[0]) == '{"kind":"circuit","method":"attribution"}'


# ------------------------------------------------------------------ with a model
@pytest.fixture(scope="module")
def explorer(demo, text):
    model, tokenizer, task = demo
    return AttentionExplorer(model, tokenizer, text, task, views=["grid", "prediction", "circuit"])


def ask(explorer, **message):
    reply, buffers = explorer.handle_request({"id": 7, **message})
    json.dumps(reply, allow_nan=False)  # what reaches the browser is strict JSON
    return reply, buffers


def test_an_explorer_shows_the_circuit_view_only_when_asked(demo, text, explorer):
    assert "circuit" in explorer.views
    model, tokenizer, task = demo
    plain = AttentionExplorer(model, tokenizer, text, task)
    assert plain.views == list(DEFAULT_VIEW_NAMES)


def test_a_recorded_session_says_why_it_has_no_circuit(explorer):
    session = explorer.session
    recorded = AttentionExplorer.from_attention(session.capture, session.layout, views=["grid", "circuit"])
    reply, buffers = ask(recorded, kind="circuit")
    assert reply["ok"] is False and buffers == []
    assert "needs the model" in reply["error"] and "recorded attention" in reply["error"]


def _hand_built_graph(method):
    from finwidget.circuits import AnswerNode, CircuitEdge, CircuitGraph, HeadNode, SpanNode

    return CircuitGraph(
        metric="logit_diff", clean_value=1.5, method=method,
        nodes=[SpanNode(0, "Net income", (3, 6)), HeadNode(0, 1, 0.8), HeadNode(1, 0, 1.2),
               AnswerNode("increase - decrease")],
        edges=[CircuitEdge("span:0", "L0H1", "reads", 0.5), CircuitEdge("L0H1", "L1H0", "v", 0.7),
               CircuitEdge("L1H0", "answer", "direct", 1.1)],
    )


def test_the_handler_asks_find_circuit_for_the_shown_statement_with_the_explorers_reference(
        demo, text, monkeypatch):
    """The wiring (what the session passes, what the reply holds, caching per method), with
    find_circuit replaced by a recorder; the real search is tested below."""
    import finwidget.circuits

    model, tokenizer, task = demo
    widget = AttentionExplorer(model, tokenizer, text, task, views=["circuit"])
    calls = []

    def recorder(model_, task_, statement, corrupted=None, *, reference=None, method="attribution", **kw):
        calls.append((model_, task_, statement, reference, method))
        return _hand_built_graph(method)

    monkeypatch.setattr(finwidget.circuits, "find_circuit", recorder, raising=False)
    reply, buffers = ask(widget, kind="circuit")
    assert reply["ok"], reply
    assert buffers == [] and reply["method"] == "attribution"
    assert reply["graph"] == _hand_built_graph("attribution").to_dict()
    assert json.loads(_hand_built_graph("attribution").to_json()) == reply["graph"]
    [(m, t, statement, reference, method)] = calls
    assert m is model and t is widget.session.task and statement == text and method == "attribution"
    # "mean" in the circuit averages over the explorer's reference set (the demo's default).
    assert reference is widget.session.reference_set.outputs and reference is not None
    ask(widget, kind="circuit")
    assert len(calls) == 1  # found once per method and statement
    reply, _ = ask(widget, kind="circuit", method="path_patching")
    assert reply["graph"]["method"] == "path_patching" and len(calls) == 2


def test_a_circuit_request_is_refused_while_a_sweep_holds_the_model(explorer):
    with sweep_in_progress(explorer):
        reply, _ = ask(explorer, kind="circuit")
    assert reply["ok"] is False and "a sweep is running" in reply["error"]


def test_a_saved_page_embeds_the_circuit_it_shows(demo, text, monkeypatch):
    import finwidget.circuits
    from finwidget.widgets.export import embedded_replies

    model, tokenizer, task = demo
    widget = AttentionExplorer(model, tokenizer, text, task, views=["grid", "circuit"])
    monkeypatch.setattr(finwidget.circuits, "find_circuit",
                        lambda *a, method="attribution", **k: _hand_built_graph(method), raising=False)
    replies = {r["key"]: r["reply"] for r in embedded_replies(widget)}
    circuit = replies['{"kind":"circuit","method":"attribution"}']
    assert circuit["ok"] and circuit["graph"] == _hand_built_graph("attribution").to_dict()


def test_the_demo_explorer_answers_with_the_circuit_find_circuit_finds(explorer):
    """The real search on the demo model: the reply is find_circuit's graph for the shown
    statement with the explorer's reference (its heads inside the model, faithfulness by
    mean ablation over the demo reference set), and the exact method marks its edges exact."""
    from finwidget.circuits import CircuitGraph

    reply, _ = ask(explorer, kind="circuit")
    assert reply["ok"], reply.get("error")
    graph = CircuitGraph.from_dict(reply["graph"])
    assert graph.method == "attribution" and graph.metric == "logit_diff"
    # the same statement: the graph's clean answer is the one the explorer predicts
    assert (graph.clean_value > 0) == (explorer.prediction["clean"]["logit_diff"] > 0)
    assert abs(graph.clean_value) > 1  # the demo model answers its statements decisively
    assert graph.heads and all(0 <= h.layer < 2 and 0 <= h.head < 4 for h in graph.heads)
    assert reply["graph"]["faithfulness"]["mode"] == "mean"
    assert not any(e["exact"] for e in reply["graph"]["edges"])
    exact, _ = ask(explorer, kind="circuit", method="path_patching")
    assert exact["ok"], exact.get("error")
    assert all(e["exact"] for e in exact["graph"]["edges"] if e["channel"] != "reads")


def test_without_a_reference_set_the_view_says_how_to_give_one(tiny_setup, text, monkeypatch):
    """A model other than the demo, no reference statements: find_circuit has nothing to patch
    from, and the reply says what to pass the explorer (not find_circuit's own arguments)."""
    import finwidget.circuits

    model, tokenizer, task = tiny_setup()
    widget = AttentionExplorer(model, tokenizer, text, task, views=["circuit"])
    assert not widget.session.reference_set.available
    monkeypatch.setattr(finwidget.circuits, "find_circuit",
                        lambda *a, **k: pytest.fail("find_circuit must not run without a reference"))
    reply, _ = ask(widget, kind="circuit")
    assert reply["ok"] is False
    assert "needs a reference set" in reply["error"] and "AttentionExplorer(..., reference=" in reply["error"]
    with_reference = AttentionExplorer(model, tokenizer, text, task, views=["circuit"],
                                       reference=[text, text.replace("2009", "2008")])
    monkeypatch.setattr(finwidget.circuits, "find_circuit",
                        lambda *a, reference=None, method="attribution", **k: _hand_built_graph(method))
    reply, _ = ask(with_reference, kind="circuit")
    assert reply["ok"], reply.get("error")
