"""Circuits on a random grouped-query Qwen2: the first-order scores are the derivative of the
exact path patching, the GQA split adds up to the shared projection, the model is left as
it was, bad input is refused, and the graph is strict JSON."""

from __future__ import annotations

import json
import re

import pytest
import torch
from helpers import single_thread, statement

from finwidget import CircuitGraph, find_circuit
from finwidget.circuits import (
    DirectEdge,
    HeadEdge,
    ReadEdge,
    edge_attribution,
    exact_edge_effects,
    record_channel_gradients,
)
from finwidget.circuits.find import reference_deltas
from finwidget.circuits.recording import record_reference_run
from finwidget.errors import InputError
from finwidget.interventions import CachedRun
from finwidget.model_parts import ModelGeometry, qkv_projections

one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)

_DIGIT_SWAP = str.maketrans("0123456789", "3816092547")


def corrupt(text: str) -> str:
    """The same statement with every digit replaced by another one (same tokens, same length)."""
    return re.sub(r"\d", lambda m: m.group().translate(_DIGIT_SWAP), text)


@pytest.fixture(scope="module")
def setup(tiny_setup):
    model, tokenizer, task = tiny_setup(seed=5, layers=3, noisy_weights=True)
    clean = [statement(11, lines=3), statement(12, lines=2)]  # different lengths: left padding
    return model, tokenizer, task, clean, [corrupt(text) for text in clean]


def _carried(model, task, cached, clean_batch, scale, edges, corrupted_outputs, corrupted_values, recorded):
    deltas = [scale * (corrupted_outputs[l] - recorded.head_outputs[l]) for l in range(len(corrupted_outputs))]
    baseline = [v + scale * (cv - v) for v, cv in zip(recorded.values, corrupted_values)]
    return exact_edge_effects(model, cached, deltas, edges, value_baseline=baseline)


def test_first_order_scores_are_the_derivative_of_exact_path_patching(setup):
    """Every edge kind: the first-order score of a patch ``eps * (corrupted - clean)`` is the
    derivative at eps = 0 of the exact path-patched answer. Checked against central
    differences at eps and eps/2, whose gap measures the truncation error in this test."""
    model, _tokenizer, task, clean, corrupted = setup
    geometry = ModelGeometry.of(model)
    batch = task.encode(clean)
    recorded = record_channel_gradients(model, task, batch)
    corrupted_outputs, corrupted_values = record_reference_run(model, task.encode(corrupted))
    deltas, values = reference_deltas(model, task, batch, recorded.head_outputs, corrupted=corrupted)
    scores = edge_attribution(model, recorded, deltas, value_baseline=values)

    edges, first_order = [], []
    for l in range(1, geometry.num_layers):
        for r in range(geometry.num_heads):
            for c, channel in enumerate("qkv"):
                for j in range(l):
                    for u in range(geometry.num_heads):
                        edges.append(HeadEdge((j, u), (l, r), channel))
                        first_order.append(scores.head_edges[:, l, c, r, j, u])
    for j in range(geometry.num_layers):
        for u in range(geometry.num_heads):
            edges.append(DirectEdge((j, u)))
            first_order.append(scores.direct_edges[:, j, u])
    width = batch["input_ids"].shape[1]
    shortest = int(batch["attention_mask"].sum(dim=1).min())
    for layer, head in ((1, 2), (2, 0)):
        tokens = tuple(range(3, min(9, shortest)))  # statement positions, same in both rows
        edges.append(ReadEdge(tokens, (layer, head)))
        pads = [width - int(n) for n in batch["attention_mask"].sum(dim=1)]
        first_order.append(torch.stack([scores.token_reads[b, layer, head, [pads[b] + t for t in tokens]].sum()
                                        for b in range(len(pads))]))
    first_order = torch.stack(first_order)  # [edges, B]

    cached = CachedRun(model, task, batch)
    args = (model, task, cached, batch)

    def central(eps):
        plus = _carried(*args, eps, edges, corrupted_outputs, corrupted_values, recorded)
        minus = _carried(*args, -eps, edges, corrupted_outputs, corrupted_values, recorded)
        return (plus - minus) / (2 * eps)

    eps = 0.02
    coarse, fine = central(eps), central(eps / 2)
    truncation = (coarse - fine).abs()  # ~ 3/4 of the coarse error, ~ 3x the fine one
    rounding = 16 * torch.finfo(torch.float32).eps * (recorded.clean_logit_diff.abs().max() + 1) / eps
    assert first_order.abs().max() > 1e-2, "the edges must carry something for the comparison to mean anything"
    error = (first_order - fine).abs()
    worst = int(torch.argmax(error - truncation).item() // error.shape[1])
    assert bool((error <= truncation + rounding).all()), (
        f"{edges[worst]}: first order {first_order[worst].tolist()}, central difference {fine[worst].tolist()}, "
        f"truncation {truncation[worst].tolist()}")


def test_grouped_query_split_adds_up_to_the_shared_projection(setup):
    """The k/v gradients of the query heads of one KV group sum to the gradient of the group's
    shared k_proj/v_proj output (before the rotary embedding, as the projection computes it);
    q gradients equal q_proj's. The q comparison measures this test's numerical drift."""
    model, _tokenizer, task, clean, _ = setup
    geometry = ModelGeometry.of(model)
    batch = task.encode(clean)
    recorded = record_channel_gradients(model, task, batch)

    outputs: dict[tuple[int, int], torch.Tensor] = {}
    handles = []
    for layer in range(geometry.num_layers):
        for index, projection in enumerate(qkv_projections(model, layer)):
            def keep(module, args, output, key=(layer, index)):
                outputs[key] = output
            handles.append(projection.register_forward_hook(keep))
    try:
        with torch.enable_grad():
            embeds = model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_(True)
            logits = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"], logits_to_keep=1).logits
            keys = sorted(outputs)
            grads = dict(zip(keys, torch.autograd.grad(task.logit_diff(logits[:, -1]).sum(), [outputs[k] for k in keys])))
    finally:
        for handle in handles:
            handle.remove()

    b, t = batch["input_ids"].shape
    h, hkv, d = geometry.num_heads, geometry.num_kv_heads, geometry.head_dim
    drift = 0.0
    for layer in range(geometry.num_layers):
        query = grads[(layer, 0)].view(b, t, h, d).transpose(1, 2)
        drift = max(drift, float((recorded.channel_gradients[layer][0] - query).abs().max()))
    scale = max(float(g.abs().max()) for g in grads.values())
    for layer in range(geometry.num_layers):
        for channel in (1, 2):
            shared = grads[(layer, channel)].view(b, t, hkv, d).transpose(1, 2)  # [B, Hkv, T, D]
            split = recorded.channel_gradients[layer][channel].view(b, hkv, h // hkv, t, d).sum(dim=2)
            assert float((split - shared).abs().max()) <= 4 * drift + 1e-6 * scale, (layer, channel, drift)


def _model_state(model):
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    implementations = sorted({str(getattr(m.config, "_attn_implementation_internal", None))
                              for m in model.modules() if hasattr(m, "config")})
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return hooks, implementations, len(grads), model.training


def test_find_circuit_leaves_the_model_as_it_was(setup):
    model, _tokenizer, task, clean, corrupted = setup
    batch = task.encode(clean)
    before_state = _model_state(model)
    with torch.no_grad():
        before = model(**batch).logits
    graph = find_circuit(model, task, clean, corrupted, method="path_patching")
    with pytest.raises(InputError):
        find_circuit(model, task, clean, [corrupted[0], corrupted[0]])  # wrong lengths: refused midway
    assert _model_state(model) == before_state
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, before)
    assert graph.heads, "the random model's circuit has heads"


def test_the_graph_is_strict_json_in_the_schema(setup):
    model, tokenizer, task, clean, corrupted = setup
    graph = find_circuit(model, tokenizer, clean[0], corrupted[0], method="path_patching", top_edges=6)
    data = json.loads(graph.to_json())
    assert set(data) == {"metric", "clean_value", "method", "nodes", "edges", "faithfulness"}
    assert data["method"] == "path_patching" and data["metric"] == "logit_diff"
    ids = {node["id"] for node in data["nodes"]}
    assert "answer" in ids and all(edge["source"] in ids and edge["target"] in ids for edge in data["edges"])
    head_edges = [edge for edge in data["edges"] if edge["channel"] != "reads"]
    assert head_edges and all(edge["exact"] for edge in head_edges)
    assert all(edge["exact"] for edge in data["edges"]), "one statement: reads edges are measured exactly too"
    assert data["faithfulness"]["mode"] == "zero"  # no reference given
    assert CircuitGraph.from_json(graph.to_json()).to_dict() == graph.to_dict()
    attributed = find_circuit(model, task, clean[0], corrupted[0], top_edges=6)
    assert {e.key for e in attributed.edges} == {e.key for e in graph.edges}, "same pruning, other measurement"
    assert not any(edge.exact for edge in attributed.edges)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "needs a reference run"),
    ({"corrupted": "CORRUPTED", "method": "ig"}, "method must be"),
    ({"corrupted": "CORRUPTED", "top_edges": 0}, "top_edges"),
    ({"corrupted": "CORRUPTED", "threshold": 1.5}, "threshold"),
    ({"corrupted": "CORRUPTED", "steps": 0}, "steps"),
    ({"corrupted": "CORRUPTED", "exact_edges": [("L0H0", "L9H9", "q")]}, "not in the pruned graph"),
    ({"corrupted": ["CORRUPTED", "CORRUPTED"]}, "one corrupted statement per clean"),
    ({"corrupted": "Revenue: change +1 | 2 | 1"}, "same token lengths"),
    ({"reference": ["x"], "faithfulness_mode": "resample"}, "faithfulness mode"),
    ({"corrupted": "CORRUPTED", "faithfulness_target": 1.5}, "faithfulness_target"),
    ({"corrupted": "CORRUPTED", "faithfulness_target": 0}, "faithfulness_target"),
    ({"corrupted": "CORRUPTED", "faithfulness_max_heads": 0}, "faithfulness_max_heads"),
])
def test_bad_input_is_refused_with_a_clear_error(setup, kwargs, message):
    model, _tokenizer, task, clean, corrupted = setup
    kwargs = {key: (corrupted[0] if value == "CORRUPTED" else
                    [corrupted[0]] * 2 if value == ["CORRUPTED", "CORRUPTED"] else value)
              for key, value in kwargs.items()}
    with pytest.raises(InputError, match=message):
        find_circuit(model, task, clean[0], **kwargs)


def test_a_task_or_a_tokenizer_but_nothing_else(setup):
    model, _tokenizer, _task, clean, corrupted = setup
    with pytest.raises(InputError, match="EarningsTask"):
        find_circuit(model, "tokenizer", clean[0], corrupted[0])


def test_rotary_transpose_is_the_transpose_of_the_rotary_embedding():
    """<rotate(x), g> == <x, rotary_transpose(g)> for the Qwen2/Llama rotary embedding."""
    from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

    from finwidget.model_parts import rotary_transpose

    generator = torch.Generator().manual_seed(0)
    x, g = (torch.randn(2, 3, 5, 8, generator=generator, dtype=torch.float64) for _ in range(2))
    angles = torch.randn(2, 5, 4, generator=generator, dtype=torch.float64)
    cos, sin = torch.cat([angles.cos()] * 2, dim=-1), torch.cat([angles.sin()] * 2, dim=-1)
    rotated, _ = apply_rotary_pos_emb(x, x, cos, sin)
    assert torch.allclose((rotated * g).sum(), (x * rotary_transpose(g, cos, sin)).sum(), rtol=1e-12, atol=1e-12)


def test_faithfulness_needs_heads_and_a_reference_for_mean(setup):
    from finwidget.circuits import measure_faithfulness

    model, _tokenizer, task, clean, _ = setup
    with pytest.raises(InputError, match="no heads"):
        measure_faithfulness(model, task, clean, [], mode="zero")
    with pytest.raises(InputError, match="needs reference"):
        measure_faithfulness(model, task, clean, [(0, 1)], mode="mean")
    with pytest.raises(InputError, match="'mean' or 'zero'"):
        measure_faithfulness(model, task, clean, [(0, 1)], mode="resample")
    report = measure_faithfulness(model, task, clean, [(0, 1), (2, 3)], mode="zero")
    assert report.statements == 2 and report.mode == "zero"


def test_a_statement_without_line_items_is_refused(setup):
    model, _tokenizer, task, _, _ = setup
    text = "The the the"
    with pytest.raises(InputError, match="line items"):
        find_circuit(model, task, text, text)


def test_growth_candidates_are_logarithmic_in_the_heads():
    from finwidget.circuits.growth import prefix_sizes

    assert prefix_sizes(3) == [0, 1, 2, 3]
    assert prefix_sizes(3, start=1) == [1, 2, 3]
    assert prefix_sizes(0) == [0] and prefix_sizes(0, start=1) == []
    sizes = prefix_sizes(144)
    assert sizes[:9] == list(range(9)) and sizes[-1] == 144 and sizes == sorted(set(sizes))
    assert len(sizes) <= 9 + 15  # x1.25 from 8 to 144: 13 steps


def test_growth_reaches_the_target_with_every_head_at_worst(setup):
    """Ablating nothing outside the whole model keeps everything; ablating every head removes
    everything: a circuit of every head always meets the target (here zero ablation on the
    random model, grown from a head that alone does not)."""
    from finwidget.circuits.faithfulness import faithfulness_of_circuits
    from finwidget.circuits.growth import grow_to_target

    model, _tokenizer, task, clean, _corrupted = setup
    every = [(l, h) for l in range(model.config.num_hidden_layers) for h in range(model.config.num_attention_heads)]
    (whole,) = faithfulness_of_circuits(model, task, clean, [every], mode="zero")
    assert whole["kept"] == pytest.approx(1.0, abs=1e-6) and whole["removed"] == pytest.approx(1.0, abs=1e-6)
    singles = faithfulness_of_circuits(model, task, clean, [[head] for head in every], mode="zero")
    start = next(head for head, share in zip(every, singles) if min(share["kept"], share["removed"]) < 0.9)
    growth = grow_to_target(model, task, clean, [start], every[::-1], target=0.9, mode="zero")
    assert growth.reached and growth.heads[0] == start and len(growth.heads) > 1
    assert min(growth.shares["kept"], growth.shares["removed"]) >= 0.9
    short = grow_to_target(model, task, clean, [start], every[::-1], target=0.9, mode="zero", max_heads=1)
    assert not short.reached and short.heads == [start] and short.circuits_measured == 1
    with pytest.raises(InputError, match="faithfulness_target"):
        grow_to_target(model, task, clean, [start], every, target=0.0, mode="zero")


def test_norm_pull_back_matches_back_propagating_each_cotangent(setup):
    """``_norm_vjp`` (one norm forward, its VJP mapped over the cotangents) against the plain
    way (the norm run on one copy of the residual per cotangent, back-propagated); the
    tolerance is the plain way's own float32 drift from float64, measured here."""
    from finwidget.circuits.attribution import _norm_vjp
    from finwidget.model_parts import attention_input_norm

    model = setup[0]
    norm = attention_input_norm(model, 1)
    generator = torch.Generator().manual_seed(3)
    residual = 3 * torch.randn(2, 7, model.config.hidden_size, generator=generator)
    cotangents = torch.randn(5, 2, 7, model.config.hidden_size, generator=generator)

    def plain(norm, residual, cotangents):
        with torch.enable_grad():
            inputs = residual.unsqueeze(0).expand_as(cotangents).clone().requires_grad_(True)
            (pulled,) = torch.autograd.grad(norm(inputs), inputs, cotangents)
        return pulled

    import copy
    norm64 = copy.deepcopy(norm).double()
    exact = plain(norm64, residual.double(), cotangents.double())
    drift = float((plain(norm, residual, cotangents).double() - exact).abs().max())
    scale = float(exact.abs().max())
    mapped = _norm_vjp(norm, residual, cotangents)
    assert not mapped.requires_grad
    assert float((mapped.double() - exact).abs().max()) <= max(4 * drift, 4 * torch.finfo(torch.float32).eps * scale)
