"""Circuits: which heads feed which through their queries, keys or values, to the answer.

- :func:`find_circuit`: score every edge (first order, one pass per integrated-gradients
  step), prune to a small graph from the statement's line items to the answer, measure
  kept edges exactly on request and the circuit's faithfulness (``find``).
- :class:`CircuitGraph` and its nodes and edges, with strict JSON (``graph``).
- :func:`edge_attribution` / :func:`record_channel_gradients`: the first-order scores
  (``attribution``, ``recording``); :func:`exact_edge_effects`: path patching one edge at
  a time (``path_patching``); :func:`measure_faithfulness`, :func:`faithfulness_table`
  (``faithfulness``).
"""

from finwidget.circuits.attribution import EdgeAttribution, edge_attribution
from finwidget.circuits.faithfulness import faithfulness_table, measure_faithfulness
from finwidget.circuits.find import find_circuit
from finwidget.circuits.graph import (
    AnswerNode,
    CircuitEdge,
    CircuitGraph,
    FaithfulnessReport,
    HeadNode,
    SpanNode,
)
from finwidget.circuits.path_patching import DirectEdge, HeadEdge, ReadEdge, exact_edge_effects
from finwidget.circuits.recording import ChannelGradients, record_channel_gradients

__all__ = [
    "AnswerNode",
    "ChannelGradients",
    "CircuitEdge",
    "CircuitGraph",
    "DirectEdge",
    "EdgeAttribution",
    "FaithfulnessReport",
    "HeadEdge",
    "HeadNode",
    "ReadEdge",
    "SpanNode",
    "edge_attribution",
    "exact_edge_effects",
    "faithfulness_table",
    "find_circuit",
    "measure_faithfulness",
    "record_channel_gradients",
]
