"""A circuit as a value: nodes (spans, heads, the answer), edges, faithfulness; strict JSON.

:class:`CircuitGraph` is what :func:`finwidget.circuits.find_circuit` returns and what the
explorer's circuit view draws. It holds no model and no tensors; ``to_json()`` writes it as
strict JSON (finite floats only), ``from_json()`` reads it back.

The JSON schema (every key always present)::

    {"metric": "logit_diff", "clean_value": float, "method": "attribution" | "path_patching",
     "nodes": [{"id": "L0H1", "kind": "head", "layer": 0, "head": 1, "effect": float},
               {"id": "span:3", "kind": "span", "label": "Net income", "token_range": [start, end]},
               {"id": "answer", "kind": "answer", "label": "increase - decrease"}],
     "edges": [{"source": "L0H1", "target": "L1H0", "channel": "q" | "k" | "v" | "direct" | "reads",
                "effect": float, "exact": bool}],
     "faithfulness": {"mode": "mean" | "zero", "kept_when_outside_ablated": float,
                      "removed_when_circuit_ablated": float, ...optional keys} | null}

- head -> head edges carry the receiving head's input channel ``q``, ``k`` or ``v``;
  head -> answer edges are ``direct``; span -> head edges are ``reads``.
- ``token_range`` is ``[start, end)`` in prompt token positions.
- ``effect`` is in units of the metric (the answer's logit difference): how much of the
  clean answer the node or edge carries, i.e. minus the change of the metric when it is
  patched from the reference run, signed so that a positive effect supports the clean
  answer (whatever the sign of the clean logit difference). See
  :mod:`finwidget.circuits.attribution` for how each is measured; ``exact`` is True when
  the edge's effect was measured by path patching rather than estimated to first order.
- ``faithfulness`` may carry the optional keys ``statements``, ``kept_raw``,
  ``removed_raw``, ``target``, ``target_reached`` and ``added_heads`` (see
  :class:`FaithfulnessReport`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from finwidget.errors import InputError
from finwidget.strict_json import strict_dumps

METRICS = ("logit_diff",)
METHODS = ("attribution", "path_patching")
HEAD_CHANNELS = ("q", "k", "v")
CHANNELS = (*HEAD_CHANNELS, "direct", "reads")
FAITHFULNESS_MODES = ("mean", "zero")
ANSWER_ID = "answer"


def head_id(layer: int, head: int) -> str:
    """The node id of query head ``head`` in ``layer``: ``"L0H1"``."""
    return f"L{int(layer)}H{int(head)}"


def span_id(index: int) -> str:
    """The node id of span ``index`` (its position in the statement's line items): ``"span:3"``."""
    return f"span:{int(index)}"


def _finite(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{what} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{what} must be finite, got {value}")
    return value


def _int(value, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{what} must be an int >= {minimum}, got {value!r}")
    return value


# ---------------------------------------------------------------------------- nodes


@dataclass(frozen=True)
class HeadNode:
    """Query head ``head`` of ``layer``; ``effect``: what its whole output carries (the first-order
    effect of patching it from the reference into the clean run, negated and signed so that a
    head supporting the clean answer is positive)."""

    layer: int
    head: int
    effect: float
    kind = "head"

    def __post_init__(self):
        _int(self.layer, "a head node's layer")
        _int(self.head, "a head node's head")
        object.__setattr__(self, "effect", _finite(self.effect, f"effect of {head_id(self.layer, self.head)}"))

    @property
    def id(self) -> str:
        return head_id(self.layer, self.head)

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": "head", "layer": self.layer, "head": self.head, "effect": self.effect}


@dataclass(frozen=True)
class SpanNode:
    """A span of the prompt (a line item of the statement): tokens ``[start, end)``.

    ``index`` numbers the span among the statement's line items (its id is ``span:index``).
    """

    index: int
    label: str
    token_range: tuple[int, int]
    kind = "span"

    def __post_init__(self):
        _int(self.index, "a span node's index")
        if not isinstance(self.label, str):
            raise InputError(f"a span node's label must be a string, got {type(self.label).__name__}")
        try:
            start, end = self.token_range
        except (TypeError, ValueError):
            raise InputError(f"a span's token_range must be [start, end), got {self.token_range!r}") from None
        start, end = _int(start, "a span's start"), _int(end, "a span's end")
        if end <= start:
            raise InputError(f"span {self.label!r}: token_range [{start}, {end}) is empty")
        object.__setattr__(self, "token_range", (start, end))

    @property
    def id(self) -> str:
        return span_id(self.index)

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": "span", "label": self.label, "token_range": list(self.token_range)}


@dataclass(frozen=True)
class AnswerNode:
    """The metric's node: ``label`` names the answer difference, e.g. ``"increase - decrease"``."""

    label: str
    kind = "answer"

    def __post_init__(self):
        if not isinstance(self.label, str):
            raise InputError(f"the answer node's label must be a string, got {type(self.label).__name__}")

    @property
    def id(self) -> str:
        return ANSWER_ID

    def to_dict(self) -> dict:
        return {"id": ANSWER_ID, "kind": "answer", "label": self.label}


Node = HeadNode | SpanNode | AnswerNode


# ---------------------------------------------------------------------------- edges


@dataclass(frozen=True)
class CircuitEdge:
    """``source`` -> ``target`` (node ids) through ``channel``; ``effect`` in metric units;
    ``exact``: measured by path patching (True) or a first-order estimate (False)."""

    source: str
    target: str
    channel: str
    effect: float
    exact: bool = False

    def __post_init__(self):
        if self.channel not in CHANNELS:
            raise InputError(f"edge channel must be one of {', '.join(CHANNELS)}; got {self.channel!r}")
        if not isinstance(self.exact, bool):
            raise InputError(f"an edge's `exact` must be a bool, got {self.exact!r}")
        object.__setattr__(self, "effect", _finite(self.effect, f"effect of edge {self.source}->{self.target}"))

    @property
    def key(self) -> tuple[str, str, str]:
        """``(source, target, channel)``: what identifies an edge in a graph."""
        return (self.source, self.target, self.channel)

    def to_dict(self) -> dict:
        return {"source": self.source, "target": self.target, "channel": self.channel,
                "effect": self.effect, "exact": self.exact}


# ---------------------------------------------------------------------------- faithfulness


@dataclass(frozen=True)
class FaithfulnessReport:
    """How much of the metric the circuit carries, measured by ablating heads with ``mode``.

    kept_when_outside_ablated: share of the clean metric kept when every head outside the
        circuit is ablated (1.0: the circuit alone does everything).
    removed_when_circuit_ablated: share of the clean metric removed when the circuit's heads
        are ablated (1.0: nothing else carries the answer).
    statements: how many statements the shares are pooled over.
    kept_raw, removed_raw: the same shares of the clean logit difference itself rather than
        of its distance from the all-ablated baseline (see
        :mod:`finwidget.circuits.faithfulness`), or None.

    target: the share both had to reach when the circuit was grown to be faithful
        (``find_circuit(faithfulness_target=...)``), or None.
    target_reached: whether both reached ``target`` (False: the circuit is the most faithful
        one tried, still short of the target), or None.
    added_heads: ids of the heads added to the pruned circuit to reach the target, or None.

    ``statements``, ``kept_raw``, ``removed_raw``, ``target``, ``target_reached`` and
    ``added_heads`` are optional keys of the JSON object (written when known).
    """

    mode: str
    kept_when_outside_ablated: float
    removed_when_circuit_ablated: float
    statements: int | None = field(default=None, compare=False)
    kept_raw: float | None = field(default=None, compare=False)
    removed_raw: float | None = field(default=None, compare=False)
    target: float | None = field(default=None, compare=False)
    target_reached: bool | None = field(default=None, compare=False)
    added_heads: tuple[str, ...] | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.mode not in FAITHFULNESS_MODES:
            raise InputError(f"faithfulness mode must be one of {', '.join(FAITHFULNESS_MODES)}; got {self.mode!r}")
        object.__setattr__(self, "kept_when_outside_ablated",
                           _finite(self.kept_when_outside_ablated, "kept_when_outside_ablated"))
        object.__setattr__(self, "removed_when_circuit_ablated",
                           _finite(self.removed_when_circuit_ablated, "removed_when_circuit_ablated"))
        for key in ("kept_raw", "removed_raw"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, _finite(getattr(self, key), key))
        if self.statements is not None:
            _int(self.statements, "statements", minimum=1)
        if self.target is not None:
            object.__setattr__(self, "target", _finite(self.target, "target"))
        if self.target_reached is not None and not isinstance(self.target_reached, bool):
            raise InputError(f"target_reached must be a bool, got {self.target_reached!r}")
        if self.added_heads is not None:
            if isinstance(self.added_heads, str) or not all(isinstance(h, str) for h in self.added_heads):
                raise InputError(f"added_heads must be a list of head ids, got {self.added_heads!r}")
            object.__setattr__(self, "added_heads", tuple(self.added_heads))

    def to_dict(self) -> dict:
        data = {"mode": self.mode, "kept_when_outside_ablated": self.kept_when_outside_ablated,
                "removed_when_circuit_ablated": self.removed_when_circuit_ablated}
        for key in ("statements", "kept_raw", "removed_raw", "target", "target_reached"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.added_heads is not None:
            data["added_heads"] = list(self.added_heads)
        return data


# ---------------------------------------------------------------------------- the graph


@dataclass
class CircuitGraph:
    """A pruned circuit from the statement's spans through heads to the answer.

    metric: ``"logit_diff"`` (the answer's logit difference).
    clean_value: the metric on the clean statement (mean over statements when several).
    method: ``"attribution"`` (first-order edge scores) or ``"path_patching"`` (every kept
        head -> head and head -> answer edge measured exactly).
    nodes: spans, heads and the answer node (ids unique).
    edges: between nodes of the graph.
    faithfulness_report: the faithfulness measured when the graph was found, or None
        (the JSON key is ``faithfulness``; :meth:`faithfulness` measures it).
    """

    metric: str
    clean_value: float
    method: str
    nodes: list[Node]
    edges: list[CircuitEdge]
    faithfulness_report: FaithfulnessReport | None = None

    def __post_init__(self):
        if self.metric not in METRICS:
            raise InputError(f"metric must be one of {', '.join(METRICS)}; got {self.metric!r}")
        if self.method not in METHODS:
            raise InputError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}")
        self.clean_value = _finite(self.clean_value, "clean_value")
        self.nodes, self.edges = list(self.nodes), list(self.edges)
        ids = [node.id for node in self.nodes]
        duplicates = sorted({node_id for node_id in ids if ids.count(node_id) > 1})
        if duplicates:
            raise InputError(f"circuit nodes must have unique ids; repeated: {', '.join(duplicates)}")
        kinds = dict(zip(ids, (node.kind for node in self.nodes), strict=True))
        for edge in self.edges:
            missing = [end for end in (edge.source, edge.target) if end not in kinds]
            if missing:
                raise InputError(f"edge {edge.source}->{edge.target} names nodes not in the graph: {missing}")
            expected = _EDGE_KINDS[edge.channel]
            if (kinds[edge.source], kinds[edge.target]) != expected:
                raise InputError(f"a {edge.channel!r} edge goes {expected[0]} -> {expected[1]}; "
                                 f"{edge.source}->{edge.target} is {kinds[edge.source]} -> {kinds[edge.target]}")
            if edge.channel in HEAD_CHANNELS:
                source, target = self.node(edge.source), self.node(edge.target)
                assert isinstance(source, HeadNode) and isinstance(target, HeadNode)
                if source.layer >= target.layer:
                    raise InputError(f"head edge {edge.source}->{edge.target} must go to a later layer")

    # ------------------------------------------------------------ lookups
    def node(self, node_id: str) -> Node:
        """The node with id ``node_id`` (KeyError naming the ids present when absent)."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(f"no node {node_id!r} in the circuit; nodes: {[n.id for n in self.nodes]}")

    @property
    def heads(self) -> list[HeadNode]:
        """The head nodes, in graph order."""
        return [node for node in self.nodes if isinstance(node, HeadNode)]

    @property
    def spans(self) -> list[SpanNode]:
        return [node for node in self.nodes if isinstance(node, SpanNode)]

    @property
    def head_locations(self) -> list[tuple[int, int]]:
        """``[(layer, head), ...]`` of the head nodes."""
        return [(node.layer, node.head) for node in self.heads]

    def edges_into(self, node_id: str) -> list[CircuitEdge]:
        return [edge for edge in self.edges if edge.target == node_id]

    def edges_from(self, node_id: str) -> list[CircuitEdge]:
        return [edge for edge in self.edges if edge.source == node_id]

    def edge(self, source: str, target: str, channel: str) -> CircuitEdge:
        for edge in self.edges:
            if edge.key == (source, target, channel):
                return edge
        raise KeyError(f"no edge {source}->{target} through {channel!r} in the circuit")

    # ------------------------------------------------------------ faithfulness
    def faithfulness(self, model, task_or_tokenizer, statements, *, reference=None,
                     mode: str = "mean") -> FaithfulnessReport:
        """Ablate every head outside the circuit, then the circuit's heads, on one or many
        statements; see :func:`finwidget.circuits.faithfulness.measure_faithfulness`."""
        from finwidget.circuits.faithfulness import measure_faithfulness

        return measure_faithfulness(model, task_or_tokenizer, statements, self.head_locations,
                                    reference=reference, mode=mode)

    # ------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        """The JSON schema's dict (see the module docstring)."""
        return {
            "metric": self.metric,
            "clean_value": self.clean_value,
            "method": self.method,
            "nodes": [node.to_dict() for node in self.nodes],
            "edges": [edge.to_dict() for edge in self.edges],
            "faithfulness": None if self.faithfulness_report is None else self.faithfulness_report.to_dict(),
        }

    def to_json(self, **kwargs) -> str:
        """Strict JSON (finite floats only) of :meth:`to_dict`; ``kwargs`` go to ``json.dumps``."""
        return strict_dumps(self.to_dict(), "circuit", **kwargs)

    @classmethod
    def from_dict(cls, data: dict) -> CircuitGraph:
        """The graph of a :meth:`to_dict` dict (InputError naming what is wrong)."""
        if not isinstance(data, dict):
            raise InputError(f"a circuit must be a JSON object, got {type(data).__name__}")
        required = {"metric", "clean_value", "method", "nodes", "edges", "faithfulness"}
        missing = sorted(required - set(data))
        if missing:
            raise InputError(f"a circuit's JSON lacks {', '.join(missing)}")
        try:
            nodes = [_node_from_dict(item) for item in data["nodes"]]
            edges = [CircuitEdge(item["source"], item["target"], item["channel"], item["effect"], item["exact"])
                     for item in data["edges"]]
            report = data["faithfulness"]
            faithfulness = None if report is None else FaithfulnessReport(
                report["mode"], report["kept_when_outside_ablated"], report["removed_when_circuit_ablated"],
                statements=report.get("statements"), kept_raw=report.get("kept_raw"),
                removed_raw=report.get("removed_raw"), target=report.get("target"),
                target_reached=report.get("target_reached"), added_heads=report.get("added_heads"))
        except (KeyError, TypeError) as error:
            raise InputError(f"a circuit's JSON is malformed: {error!r}") from None
        return cls(data["metric"], data["clean_value"], data["method"], nodes, edges, faithfulness)

    @classmethod
    def from_json(cls, text: str | bytes) -> CircuitGraph:
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as error:
            raise InputError(f"not valid JSON for a circuit: {error}") from None
        return cls.from_dict(data)

    def describe(self) -> str:
        """A few lines for a person: nodes by kind, the strongest edges, faithfulness."""
        lines = [(f"circuit ({self.method}): {self.metric} {self.clean_value:+.3f}, "
                 f"{len(self.heads)} heads, {len(self.spans)} spans, {len(self.edges)} edges")]
        for edge in sorted(self.edges, key=lambda e: -abs(e.effect)):
            mark = " (exact)" if edge.exact else ""
            lines.append(f"  {edge.source} -> {edge.target} [{edge.channel}] {edge.effect:+.3f}{mark}")
        if self.faithfulness_report is not None:
            report = self.faithfulness_report
            lines.append(f"  faithfulness ({report.mode}, {report.statements or 1} statements): "
                         f"kept {report.kept_when_outside_ablated:.3f} with everything else ablated, "
                         f"removed {report.removed_when_circuit_ablated:.3f} with the circuit ablated")
            if report.target is not None:
                added = ", ".join(report.added_heads or ()) or "none"
                state = "reached" if report.target_reached else "NOT reached"
                lines.append(f"  faithfulness target {report.target:.2f} {state} (heads added to the pruned "
                             f"circuit: {added})")
        return "\n".join(lines)

    __str__ = describe


_EDGE_KINDS = {"q": ("head", "head"), "k": ("head", "head"), "v": ("head", "head"),
               "direct": ("head", "answer"), "reads": ("span", "head")}


def _node_from_dict(item: dict) -> Node:
    kind = item.get("kind") if isinstance(item, dict) else None
    if kind == "head":
        node: Node = HeadNode(item["layer"], item["head"], item["effect"])
    elif kind == "span":
        node = SpanNode(_span_index(item["id"]), item["label"], tuple(item["token_range"]))
    elif kind == "answer":
        node = AnswerNode(item["label"])
    else:
        raise InputError(f"a circuit node's kind must be head, span or answer; got {kind!r}")
    if node.id != item.get("id"):
        raise InputError(f"node id {item.get('id')!r} does not match its content ({node.id!r})")
    return node


def _span_index(node_id) -> int:
    prefix, _, index = str(node_id).partition(":")
    if prefix != "span" or not index.isdigit():
        raise InputError(f"a span node's id must be 'span:<index>', got {node_id!r}")
    return int(index)
