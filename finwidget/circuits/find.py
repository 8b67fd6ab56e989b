"""``find_circuit``: score every edge, prune to a small graph from the line items to the answer.

1. Edge scores (:mod:`finwidget.circuits.attribution`) between the clean statement(s) and
   a reference: ``corrupted`` statements (each head's output on the corrupted statement,
   position by position; same token lengths) or ``reference`` statements (each head's
   output replaced by its mean over them: mean ablation). By default the gradients are
   averaged over ``steps`` points of the straight path from the clean outputs towards the
   reference (every head's output shifted by ``alpha * (reference - clean)``, ``alpha =
   0, 1/steps, ...``: a left Riemann sum of integrated gradients; ``steps=1`` is plain
   edge attribution patching at the clean run). Cost: ``steps`` forward + backward passes
   and one forward pass of the reference.
2. Pruning: the ``top_edges`` largest head -> head and head -> answer edges whose effect is
   at least ``threshold`` times the clean logit difference; then only edges on a path that
   reaches the answer (a head is kept if it has a kept edge to the answer or to a kept
   head of a later layer).
3. Spans: the statement's line items (:func:`finwidget.statement.read_statement`) with the
   tokens on their lines; a ``reads`` edge from a line item to a kept head when the head
   reads at least ``reads_threshold`` of its total (absolute) reads from it.
4. ``method="path_patching"`` measures every kept head -> head and head -> answer edge
   exactly (:mod:`finwidget.circuits.path_patching`; ``exact: true``), and the ``reads``
   edges too when there is one statement; ``exact_edges`` lists edges to measure exactly
   in either method.
5. Faithfulness (:mod:`finwidget.circuits.faithfulness`) of the kept heads, on the clean
   statements or ``faithfulness_statements``. With ``faithfulness_target`` (default 0.9),
   heads are first added to the pruned circuit in the order of their first-order effect
   until ablating everything outside it keeps, and ablating it removes, at least that share
   (:mod:`finwidget.circuits.growth`: real ablations, a logarithmic number of batched
   candidates); the report says whether the target was reached and which heads were added.

With several statements, every effect is the mean over them of its sign-aligned value
(positive: supports each statement's clean answer); span nodes are matched by line-item
name and their ``token_range`` is the first statement's; the graph's ``clean_value`` is then
the mean absolute clean logit difference (one statement: its signed logit difference).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import torch

from finwidget.analysis.line_items import line_item_tokens
from finwidget.circuits.attribution import (
    EdgeAttribution,
    all_receiver_weights,
    edge_attribution,
    mean_attribution,
)
from finwidget.circuits.faithfulness import measure_faithfulness
from finwidget.circuits.graph import (
    AnswerNode,
    CircuitEdge,
    CircuitGraph,
    FaithfulnessReport,
    HeadNode,
    Node,
    SpanNode,
    head_id,
    span_id,
)
from finwidget.circuits.growth import grow_to_target
from finwidget.circuits.path_patching import DirectEdge, HeadEdge, ReadEdge, exact_edge_effects
from finwidget.circuits.recording import check_batch_lengths, record_channel_gradients, record_reference_run
from finwidget.errors import InputError
from finwidget.interventions import CachedRun, HeadOutputs
from finwidget.interventions.cached_run import encode_statements, statement_texts
from finwidget.interventions.head_outputs import check_token_ids
from finwidget.model_parts import ModelGeometry
from finwidget.statement import read_statement
from finwidget.task import EarningsTask, TwoAnswerTask, model_device


def as_task(task_or_tokenizer) -> TwoAnswerTask:
    """A task from a task or a tokenizer (then the earnings task, ``EarningsTask(tokenizer)``)."""
    if isinstance(task_or_tokenizer, TwoAnswerTask):
        return task_or_tokenizer
    if callable(getattr(task_or_tokenizer, "encode", None)) and hasattr(task_or_tokenizer, "convert_tokens_to_ids"):
        return EarningsTask(task_or_tokenizer)
    raise InputError(f"pass an EarningsTask (or TwoAnswerTask) or the model's tokenizer, got "
                     f"{type(task_or_tokenizer).__name__}")


def _texts(statements, what: str) -> list[str]:
    texts = statement_texts(statements if not hasattr(statements, "text") else [statements])
    if texts is None:
        raise InputError(f"{what} must be a statement (str or an object with .text) or a list of them, "
                         f"got {type(statements).__name__}")
    return texts


def reference_deltas(model, task, batch, clean_outputs: list[torch.Tensor], corrupted=None,
                     reference=None) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """Per layer ``[B, T, H*D]``: the reference output minus the clean output of every head; and
    the values the heads read in the corrupted run (``[B, H, T, D]`` per layer; None for a mean
    reference)."""
    device = model_device(model)
    if corrupted is not None:
        corrupted_batch = encode_statements(task, corrupted, device, "corrupted")
        check_batch_lengths(batch, corrupted_batch, "corrupted")
        check_token_ids(model, corrupted_batch["input_ids"], "corrupted")
        outputs, values = record_reference_run(model, corrupted_batch)
        return [outputs[l].to(out.device) - out for l, out in enumerate(clean_outputs)], values
    if reference is None:
        raise InputError("find_circuit needs a reference run: corrupted= (statements of the same token lengths, "
                         "e.g. finwidget.demo.make_statement_pairs) or reference= (statements or HeadOutputs to "
                         "mean-ablate over)")
    if not isinstance(reference, HeadOutputs):
        reference = HeadOutputs.record(model, encode_statements(task, reference, device, "reference"))
    return [reference.mean_over_tokens(l).to(out.device) - out for l, out in enumerate(clean_outputs)], None


def integrated_attribution(model, task, batch, corrupted=None, reference=None, steps: int = 3
                           ) -> tuple[EdgeAttribution, list[torch.Tensor], list[torch.Tensor] | None]:
    """Edge scores averaged over ``steps`` points of the path towards the reference, the deltas,
    and the corrupted run's values (None for a mean reference)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be an int >= 1, got {steps!r}")
    clean = record_channel_gradients(model, task, batch)
    deltas, values = reference_deltas(model, task, batch, clean.head_outputs, corrupted, reference)
    mask = batch["attention_mask"].to(deltas[0].device).unsqueeze(-1).float()
    deltas = [delta * mask for delta in deltas]
    receivers = all_receiver_weights(model, deltas[0].device)
    parts = [edge_attribution(model, clean, deltas, value_baseline=values, receiver_weights=receivers)]
    for step in range(1, steps):
        alpha = step / steps
        shifted = record_channel_gradients(model, task, batch, shifts=[alpha * d for d in deltas])
        parts.append(edge_attribution(model, shifted, deltas, clean_logit_diff=clean.clean_logit_diff,
                                      with_reads=False, receiver_weights=receivers))
    return mean_attribution(parts), deltas, values


def _line_items(task, tokenizer, texts, batch) -> tuple[list[str], list[tuple[int, int]], np.ndarray]:
    """Line-item names (the first statement's, in order), their token ranges in the first
    statement, and ``[B, items, T]`` masks of each item's tokens in each batch row."""
    mask = batch["attention_mask"].cpu()
    width = mask.shape[1]
    layouts = [read_statement(text, tokenizer, task=task) for text in texts]
    names = [item.name for item in layouts[0].line_items]
    if not names:
        raise InputError("the statement has no line items that finwidget can read; spans need them")
    masks = np.zeros((len(texts), len(names), width), dtype=bool)
    ranges = []
    for row, layout in enumerate(layouts):
        pad = width - int(mask[row].sum())
        tokens = line_item_tokens(layout)
        for index, name in enumerate(names):
            positions = tokens.get(name)
            if positions is None or positions.size == 0:
                continue
            masks[row, index, pad + positions] = True
            if row == 0:
                ranges.append((int(positions.min()), int(positions.max()) + 1))
        if row == 0 and len(ranges) != len(names):
            raise InputError("a line item of the statement has no tokens")
    return names, ranges, masks


def _select_edges(scores: EdgeAttribution, geometry: ModelGeometry, clean_value: float, top_edges: int,
                  threshold: float) -> list[tuple]:
    """Kept edges ``("head", (j,u), (l,r), channel, effect)`` / ``("direct", (j,u), effect)``."""
    edges = scores.head_edges.mean(dim=0)  # [L, 3, H, L, H]
    direct = scores.direct_edges.mean(dim=0)  # [L, H]
    candidates = []
    for l in range(1, geometry.num_layers):
        for c, channel in enumerate(("q", "k", "v")):
            for r in range(geometry.num_heads):
                for j in range(l):
                    for u in range(geometry.num_heads):
                        candidates.append(("head", (j, u), (l, r), channel, float(edges[l, c, r, j, u])))
    for j in range(geometry.num_layers):
        for u in range(geometry.num_heads):
            candidates.append(("direct", (j, u), float(direct[j, u])))
    floor = threshold * abs(clean_value)
    candidates = [e for e in candidates if abs(e[-1]) >= floor and abs(e[-1]) > 0]
    candidates.sort(key=lambda e: -abs(e[-1]))
    kept = candidates[:top_edges]
    live: set[tuple[int, int]] = {e[1] for e in kept if e[0] == "direct"}
    on_path = [e for e in kept if e[0] == "direct"]
    for l in range(geometry.num_layers - 1, 0, -1):
        for edge in kept:
            if edge[0] == "head" and edge[2][0] == l and edge[2] in live:
                on_path.append(edge)
                live.add(edge[1])
    return on_path


def _ranked_heads(head_effects: torch.Tensor) -> list[tuple[int, int]]:
    """Every ``(layer, head)``, largest ``|first-order effect of its whole output|`` first
    (``head_effects`` ``[L, H]``); ties in layer, head order."""
    layers, heads = head_effects.shape
    order = sorted(((l, h) for l in range(layers) for h in range(heads)),
                   key=lambda lh: -abs(float(head_effects[lh[0], lh[1]])))
    return order


def _connecting_edges(scores: EdgeAttribution, added: Sequence[tuple[int, int]], circuit: set[tuple[int, int]]
                      ) -> list[tuple]:
    """For each head added to reach the faithfulness target, its strongest first-order edge
    (any size) to the answer or into a head of the circuit in a later layer, in
    :func:`_select_edges`' format; every added head then lies on a path to the answer."""
    edges = scores.head_edges.mean(dim=0)  # [L, 3, H, L, H]
    direct = scores.direct_edges.mean(dim=0)  # [L, H]
    out = []
    for j, u in added:
        best: tuple = ("direct", (j, u), float(direct[j, u]))
        for l, r in sorted(circuit):
            if l <= j:
                continue
            for c, channel in enumerate(("q", "k", "v")):
                effect = float(edges[l, c, r, j, u])
                if abs(effect) > abs(best[-1]):
                    best = ("head", (j, u), (l, r), channel, effect)
        out.append(best)
    return out


def _count(statements) -> int:
    if isinstance(statements, str) or hasattr(statements, "text"):
        return 1
    if isinstance(statements, dict):
        return len(statements["input_ids"])
    return len(statements)


def find_circuit(
    model,
    task_or_tokenizer,
    statement,
    corrupted=None,
    *,
    reference=None,
    method: str = "attribution",
    top_edges: int = 16,
    threshold: float = 0.02,
    reads_threshold: float = 0.15,
    steps: int = 3,
    exact_edges: Sequence[tuple[str, str, str]] | bool = False,
    faithfulness: bool = True,
    faithfulness_statements=None,
    faithfulness_mode: str | None = None,
    faithfulness_target: float | None = 0.9,
    faithfulness_max_heads: int | None = None,
) -> CircuitGraph:
    """The circuit of heads that carries the answer's logit difference, from line items to the answer.

    Args:
        model: a Hugging Face causal LM (Qwen2/Llama layout).
        task_or_tokenizer: an :class:`~finwidget.task.EarningsTask` (or ``TwoAnswerTask``) or the tokenizer.
        statement: the clean statement (text or demo ``Statement``), or a list of them.
        corrupted: statement(s) of the same token lengths, one per clean statement (e.g. the
            corrupted half of :func:`finwidget.demo.make_statement_pairs`): the reference run.
        reference: statements (or :class:`~finwidget.interventions.HeadOutputs`) whose mean head
            outputs are the reference when ``corrupted`` is None (mean ablation); also the
            reference of the faithfulness measurement.
        method: ``"attribution"`` (first-order scores) or ``"path_patching"`` (the kept
            head -> head and head -> answer edges measured exactly).
        top_edges: at most this many head -> head / head -> answer edges before pruning to paths.
        threshold: drop edges whose effect is below this share of the clean logit difference.
        reads_threshold: a line item -> head ``reads`` edge is kept when the head reads at least
            this share of its total absolute reads from the line item.
        steps: points of the integrated-gradients path (1: plain edge attribution patching).
        exact_edges: ``(source, target, channel)`` edges (ids as in the graph) to measure
            exactly, or True for every kept head -> head / head -> answer edge.
        faithfulness: measure the circuit's faithfulness (needs ``reference`` for mean
            ablation; without it, zero ablation).
        faithfulness_statements: statements to measure faithfulness on (default: ``statement``).
        faithfulness_mode: ``"mean"`` or ``"zero"`` (default: ``"mean"`` when ``reference`` is given).
        faithfulness_target: grow the pruned circuit, heads in the order of their first-order
            effect, until ablating everything outside it keeps and ablating it removes at least
            this share of the answer on the faithfulness statements
            (:mod:`finwidget.circuits.growth`; each added head comes with its strongest edge
            towards the answer); the report says whether the target was reached and which heads
            were added. None: keep the pruned circuit as it is (faithfulness only measured).
        faithfulness_max_heads: the largest circuit the growth tries (default: every head).

    Returns:
        A :class:`CircuitGraph`; ``graph.to_json()`` is what the circuit view reads.
    """
    if method not in ("attribution", "path_patching"):
        raise InputError(f"method must be 'attribution' or 'path_patching', got {method!r}")
    for name, value in (("top_edges", top_edges),):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be an int >= 1, got {value!r}")
    for name, value in (("threshold", threshold), ("reads_threshold", reads_threshold)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise InputError(f"{name} must be a number in [0, 1), got {value!r}")
    if faithfulness_target is not None and (isinstance(faithfulness_target, bool) or not isinstance(
            faithfulness_target, (int, float)) or not 0 < faithfulness_target <= 1):
        raise InputError(f"faithfulness_target must be a number in (0, 1] or None, got {faithfulness_target!r}")
    if faithfulness_max_heads is not None and (isinstance(faithfulness_max_heads, bool) or not isinstance(
            faithfulness_max_heads, int) or faithfulness_max_heads < 1):
        raise InputError(f"faithfulness_max_heads must be an int >= 1 or None, got {faithfulness_max_heads!r}")
    if faithfulness_mode not in (None, "mean", "zero"):
        raise InputError(f"faithfulness mode must be 'mean' or 'zero', got {faithfulness_mode!r}")
    if faithfulness and faithfulness_mode == "mean" and reference is None:
        raise InputError("faithfulness_mode='mean' needs reference= (statements to average each head's output over)")
    task = as_task(task_or_tokenizer)
    geometry = ModelGeometry.of(model)
    texts = _texts(statement, "statement")
    if corrupted is not None:
        corrupted_texts = _texts(corrupted, "corrupted")
        if len(corrupted_texts) != len(texts):
            raise InputError(f"pass one corrupted statement per clean statement ({len(texts)}), got {len(corrupted_texts)}")
        corrupted = corrupted_texts
    batch = task.encode(texts, device=model_device(model))
    check_token_ids(model, batch["input_ids"], "statement")
    names, ranges, item_masks = _line_items(task, task.tokenizer, texts, batch)

    scores, deltas, values = integrated_attribution(model, task, batch, corrupted, reference, steps)
    scale = float(scores.clean_logit_diff.abs().mean())
    clean_value = float(scores.clean_logit_diff[0]) if len(texts) == 1 else scale
    kept = _select_edges(scores, geometry, scale, top_edges, threshold)

    head_effects = scores.head_effects.mean(dim=0)  # [L, H]
    heads = sorted({e[1] for e in kept} | {e[2] for e in kept if e[0] == "head"})
    mode = faithfulness_mode or ("mean" if reference is not None else "zero")
    on = faithfulness_statements if faithfulness_statements is not None else texts
    report = None
    if faithfulness and faithfulness_target is not None:
        growth = grow_to_target(model, task, on, heads, _ranked_heads(head_effects), target=faithfulness_target,
                                reference=reference, mode=mode, max_heads=faithfulness_max_heads)
        kept += _connecting_edges(scores, growth.added, set(growth.heads))
        heads = sorted(growth.heads)
        report = FaithfulnessReport(mode, growth.shares["kept"], growth.shares["removed"], statements=_count(on),
                                    kept_raw=growth.shares["kept_raw"], removed_raw=growth.shares["removed_raw"],
                                    target=float(faithfulness_target), target_reached=growth.reached,
                                    added_heads=tuple(head_id(*head) for head in growth.added))
    reads = torch.einsum("blht,bit->blhi", scores.token_reads, torch.as_tensor(item_masks).float()).mean(dim=0)

    graph_edges: list[CircuitEdge] = []
    exact_rows: list = []
    for e in kept:
        if e[0] == "direct":
            graph_edges.append(CircuitEdge(head_id(*e[1]), "answer", "direct", e[-1]))
            exact_rows.append(DirectEdge(e[1]))
        else:
            graph_edges.append(CircuitEdge(head_id(*e[1]), head_id(*e[2]), e[3], e[-1]))
            exact_rows.append(HeadEdge(e[1], e[2], e[3]))
    used_spans: set[int] = set()
    for layer, head in heads:
        row = reads[layer, head]  # [items]
        total = float(row.abs().sum())
        for index in range(len(names)):
            if total > 0 and abs(float(row[index])) >= reads_threshold * total:
                graph_edges.append(CircuitEdge(span_id(index), head_id(layer, head), "reads", float(row[index])))
                used_spans.add(index)

    measure = set()
    if method == "path_patching" or exact_edges is True:  # reads too when there is one statement
        measure = {edge.key for edge in graph_edges if edge.channel != "reads" or len(texts) == 1}
    elif exact_edges:
        measure = {tuple(key) for key in exact_edges}
        known = {edge.key for edge in graph_edges}
        missing = sorted(measure - known)
        if missing:
            raise InputError(f"exact_edges names edges not in the pruned graph: {missing}; kept: {sorted(known)}")
    if measure:
        cached = CachedRun(model, cast(EarningsTask, task), batch)  # any two-answer task works
        chosen = [i for i, edge in enumerate(graph_edges) if edge.key in measure and edge.channel != "reads"]
        reads_chosen = [i for i, edge in enumerate(graph_edges) if edge.key in measure and edge.channel == "reads"]
        rows = [exact_rows[i] for i in chosen]
        for i in reads_chosen:
            edge = graph_edges[i]
            index = int(edge.source.split(":")[1])
            layer_head = next((l, h) for l, h in heads if head_id(l, h) == edge.target)
            rows.append(ReadEdge(tuple(range(*ranges[index])), layer_head))
        if len(texts) > 1 and reads_chosen:
            raise InputError("exact reads edges are measured on one statement (token ranges differ between statements)")
        effects = exact_edge_effects(model, cached, deltas, rows, value_baseline=values).mean(dim=1)
        for i, effect in zip(chosen + reads_chosen, effects.tolist()):
            old = graph_edges[i]
            graph_edges[i] = CircuitEdge(old.source, old.target, old.channel, effect, exact=True)

    nodes: list[Node] = [SpanNode(i, names[i], ranges[i]) for i in sorted(used_spans)]
    nodes += [HeadNode(l, h, float(head_effects[l, h])) for l, h in heads]
    nodes.append(AnswerNode(f"{task.labels[0]} - {task.labels[1]}"))
    if faithfulness and faithfulness_target is None and heads:
        report = measure_faithfulness(model, task, on, heads, reference=reference, mode=mode)
    return CircuitGraph("logit_diff", clean_value, method, nodes, graph_edges, report)
