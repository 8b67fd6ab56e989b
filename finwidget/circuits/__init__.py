"""Circuits: which heads feed which through their queries, keys or values, to the answer.

- :class:`CircuitGraph` and its nodes and edges, with strict JSON (``graph``).
"""

from finwidget.circuits.graph import (
    AnswerNode,
    CircuitEdge,
    CircuitGraph,
    FaithfulnessReport,
    HeadNode,
    SpanNode,
)

__all__ = [
    "AnswerNode",
    "CircuitEdge",
    "CircuitGraph",
    "FaithfulnessReport",
    "HeadNode",
    "SpanNode",
]
