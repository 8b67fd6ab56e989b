"""The circuit graph as a value: its JSON schema, a round trip, and bad graphs refused."""

from __future__ import annotations

import json

import pytest

from finwidget.circuits import AnswerNode, CircuitEdge, CircuitGraph, FaithfulnessReport, HeadNode, SpanNode
from finwidget.errors import InputError, OutputError


def hand_built(faithfulness: bool = True) -> CircuitGraph:
    return CircuitGraph(
        metric="logit_diff",
        clean_value=7.25,
        method="attribution",
        nodes=[
            SpanNode(3, "Net income", (40, 61)),
            HeadNode(0, 1, 4.5),
            HeadNode(1, 0, -1.25),
            AnswerNode("increase - decrease"),
        ],
        edges=[
            CircuitEdge("span:3", "L0H1", "reads", 0.5),
            CircuitEdge("L0H1", "L1H0", "v", 2.0, exact=True),
            CircuitEdge("L0H1", "L1H0", "k", -0.25),
            CircuitEdge("L1H0", "answer", "direct", 1.5),
        ],
        faithfulness_report=FaithfulnessReport("mean", 0.95, 0.91) if faithfulness else None,
    )


def test_to_json_writes_exactly_the_schema():
    data = json.loads(hand_built().to_json())
    assert data == {
        "metric": "logit_diff",
        "clean_value": 7.25,
        "method": "attribution",
        "nodes": [
            {"id": "span:3", "kind": "span", "label": "Net income", "token_range": [40, 61]},
            {"id": "L0H1", "kind": "head", "layer": 0, "head": 1, "effect": 4.5},
            {"id": "L1H0", "kind": "head", "layer": 1, "head": 0, "effect": -1.25},
            {"id": "answer", "kind": "answer", "label": "increase - decrease"},
        ],
        "edges": [
            {"source": "span:3", "target": "L0H1", "channel": "reads", "effect": 0.5, "exact": False},
            {"source": "L0H1", "target": "L1H0", "channel": "v", "effect": 2.0, "exact": True},
            {"source": "L0H1", "target": "L1H0", "channel": "k", "effect": -0.25, "exact": False},
            {"source": "L1H0", "target": "answer", "channel": "direct", "effect": 1.5, "exact": False},
        ],
        "faithfulness": {"mode": "mean", "kept_when_outside_ablated": 0.95, "removed_when_circuit_ablated": 0.91},
    }
    assert json.loads(hand_built(faithfulness=False).to_json())["faithfulness"] is None


def test_optional_faithfulness_keys_are_written_when_known():
    report = FaithfulnessReport("zero", 0.9, 0.8, statements=12, kept_raw=0.7, removed_raw=1.1)
    assert report.to_dict() == {"mode": "zero", "kept_when_outside_ablated": 0.9, "removed_when_circuit_ablated": 0.8,
                                "statements": 12, "kept_raw": 0.7, "removed_raw": 1.1}
    graph = hand_built()
    graph.faithfulness_report = report
    assert CircuitGraph.from_json(graph.to_json()).faithfulness_report.to_dict() == report.to_dict()
    grown = FaithfulnessReport("mean", 0.95, 0.97, target=0.9, target_reached=True, added_heads=("L0H1",))
    assert grown.to_dict() == {"mode": "mean", "kept_when_outside_ablated": 0.95, "removed_when_circuit_ablated": 0.97,
                               "target": 0.9, "target_reached": True, "added_heads": ["L0H1"]}
    graph.faithfulness_report = grown
    again = CircuitGraph.from_json(graph.to_json())
    assert again.faithfulness_report.to_dict() == grown.to_dict() and "target 0.90 reached" in again.describe()
    with pytest.raises(InputError, match="target_reached"):
        FaithfulnessReport("mean", 0.95, 0.97, target_reached="yes")
    with pytest.raises(InputError, match="added_heads"):
        FaithfulnessReport("mean", 0.95, 0.97, added_heads="L0H1")


def test_round_trip_and_lookups():
    graph = hand_built()
    again = CircuitGraph.from_json(graph.to_json())
    assert again.to_dict() == graph.to_dict()
    assert graph.head_locations == [(0, 1), (1, 0)]
    assert graph.edge("L0H1", "L1H0", "v").exact
    assert [e.channel for e in graph.edges_into("L1H0")] == ["v", "k"]
    assert "L0H1 -> L1H0 [v] +2.000 (exact)" in graph.describe()


def test_non_finite_numbers_are_refused():
    with pytest.raises(InputError, match="finite"):
        HeadNode(0, 1, float("nan"))
    with pytest.raises(InputError, match="finite"):
        CircuitEdge("L0H1", "L1H0", "q", float("inf"))
    graph = hand_built()
    graph.clean_value = float("nan")  # set after validation: to_json still refuses it
    with pytest.raises(OutputError, match="clean_value"):
        graph.to_json()


@pytest.mark.parametrize("edit, message", [
    (lambda g: g.edges.append(CircuitEdge("L1H0", "L0H1", "q", 1.0)), "later layer"),
    (lambda g: g.edges.append(CircuitEdge("L0H1", "L9H9", "q", 1.0)), "not in the graph"),
    (lambda g: g.edges.append(CircuitEdge("span:3", "answer", "direct", 1.0)), "head -> answer"),
    (lambda g: g.nodes.append(HeadNode(0, 1, 0.0)), "unique"),
])
def test_bad_graphs_are_refused(edit, message):
    graph = hand_built()
    edit(graph)
    with pytest.raises(InputError, match=message):
        CircuitGraph(graph.metric, graph.clean_value, graph.method, graph.nodes, graph.edges)


@pytest.mark.parametrize("bad", [
    lambda: CircuitEdge("L0H1", "L1H0", "o", 1.0),
    lambda: SpanNode(0, "Revenue", (5, 5)),
    lambda: FaithfulnessReport("resample", 1.0, 1.0),
    lambda: CircuitGraph("loss", 1.0, "attribution", [], []),
    lambda: CircuitGraph("logit_diff", 1.0, "ig", [], []),
    lambda: CircuitGraph.from_json("{}"),
    lambda: CircuitGraph.from_json("not json"),
])
def test_bad_values_name_the_problem(bad):
    with pytest.raises(InputError):
        bad()
