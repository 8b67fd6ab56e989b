"""Truth test: the circuit found in the shipped demo model is the mechanism its model card documents.

    increase  iff  change in Net income > 0  AND  change in Operating cash flow > 0

The card (``finwidget/demo/model/MODEL_CARD.md``): layer-0 head 1 writes the sign of each
line's change into that line's digits; the layer-1 heads 0, 3 (and 1) read the net income
and operating cash flow lines from the answer position. ``find_circuit`` over the eight
clean/corrupted pairs of seed 555 (the corrupted statement swaps one rule item's two
yearly values, flipping its change and the label) must recover that graph, and ablating
outside it / ablating it must keep / remove at least 90% of the answer (mean ablation over
64 reference statements of seed 8080; measured on 200 held-out statements of seed 424242).

Measured on this CPU (for the report; the assertions below are the claims): kept 0.951,
removed 0.998 (raw shares of the logit difference: 0.949, 1.049); zero ablation 1.017 /
1.005. Strongest edges: L1H0, L1H3, L1H1 -> answer (4.7, 4.3, 3.2); L0H1 -> L1H0, L1H3,
L1H1 through v (0.52, 0.51, 0.31); no kept k or q edge. Agreement of the first-order scores
with exact path patching over all 56 candidate edges (Spearman of the mean over pairs):
0.924 for steps=1, 0.752 for steps=3 (the default, which integrated gradients need to see
L0H1 at all: with steps=1 the circuit lacks it and keeps -0.08 of the answer).
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import single_thread
from scipy.stats import spearmanr

from finwidget import find_circuit
from finwidget.circuits.find import integrated_attribution
from finwidget.circuits.path_patching import DirectEdge, HeadEdge, exact_edge_effects
from finwidget.demo import make_statement_pairs, make_statements
from finwidget.interventions import CachedRun, HeadOutputs

PAIRS_SEED = 555
REFERENCE_SEED = 8_080
HELD_OUT_SEED = 424_242

one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)


@pytest.fixture(scope="module")
def found(demo):
    model, _tokenizer, task = demo
    pairs = make_statement_pairs(8, PAIRS_SEED)
    reference = HeadOutputs.record(model, task.encode([s.text for s in make_statements(64, REFERENCE_SEED)]))
    graph = find_circuit(model, task, [p.clean for p in pairs], [p.corrupted for p in pairs], reference=reference)
    return model, task, pairs, reference, graph


def test_the_circuit_has_the_cards_heads(found):
    *_, graph = found
    heads = {node.id for node in graph.heads}
    assert {"L0H1", "L1H0", "L1H3"} <= heads, graph.describe()
    assert heads <= {"L0H0", "L0H1", "L0H2", "L1H0", "L1H1", "L1H3"}, "L0H3 and L1H2 do nothing in the card"


def test_layer_1_heads_carry_the_answer_directly(found):
    *_, graph = found
    direct = {edge.source: edge.effect for edge in graph.edges_into("answer")}
    assert {"L1H0", "L1H3"} <= set(direct), graph.describe()
    assert all(effect > 0 for effect in direct.values())
    strongest = sorted(graph.edges, key=lambda e: -abs(e.effect))[:2]
    assert {e.source for e in strongest} == {"L1H0", "L1H3"} and all(e.channel == "direct" for e in strongest)


def test_l0h1_feeds_the_readers_through_their_values(found):
    *_, graph = found
    out_of_l0h1 = graph.edges_from("L0H1")
    targets = {edge.target for edge in out_of_l0h1}
    assert {"L1H0", "L1H3"} <= targets, graph.describe()
    by_channel = {channel: sum(e.effect for e in out_of_l0h1 if e.channel == channel) for channel in "qkv"}
    assert by_channel["v"] > 0 and by_channel["v"] > abs(by_channel["k"]) + abs(by_channel["q"]), by_channel


def test_the_rule_lines_are_the_sources_the_readers_read(found, demo):
    _, task, pairs, _, graph = found
    tokenizer = demo[1]
    labels = {node.label for node in graph.spans}
    assert {"Net income", "Operating cash flow"} <= labels, graph.describe()
    for reader in ("L1H0", "L1H3"):
        read = {graph.node(e.source).label for e in graph.edges_into(reader) if e.channel == "reads"}
        assert read == {"Net income", "Operating cash flow"}, (reader, read)
    ids = task.encode([pairs[0].clean.text])["input_ids"][0].tolist()
    for node in graph.spans:  # token ranges are the first statement's: its line of that item
        start, end = node.token_range
        assert tokenizer.decode(ids[start:end]).strip().startswith(f"{node.label}: change"), node


def test_faithfulness_on_held_out_statements(found):
    model, task, _, reference, graph = found
    assert graph.faithfulness_report is not None and graph.faithfulness_report.mode == "mean"
    held_out = make_statements(200, HELD_OUT_SEED)
    report = graph.faithfulness(model, task, held_out, reference=reference)
    assert report.kept_when_outside_ablated >= 0.9, report
    assert report.removed_when_circuit_ablated >= 0.9, report
    assert report.kept_raw >= 0.9 and report.removed_raw >= 0.9, report


def test_first_order_scores_rank_edges_like_exact_path_patching(found):
    model, task, pairs, _, _ = found
    batch = task.encode([p.clean.text for p in pairs])
    corrupted = [p.corrupted.text for p in pairs]
    edges = [HeadEdge((0, u), (1, r), c) for u in range(4) for r in range(4) for c in "qkv"]
    edges += [DirectEdge((layer, h)) for layer in range(2) for h in range(4)]
    agreement = {}
    exact = None
    for steps in (1, 3):
        scores, deltas, _ = integrated_attribution(model, task, batch, corrupted=corrupted, steps=steps)
        if exact is None:
            exact = exact_edge_effects(model, CachedRun(model, task, batch), deltas, edges).mean(dim=1)
        first = torch.stack([
            scores.head_edges[:, 1, "qkv".index(e.channel), e.receiver[1], 0, e.sender[1]] if isinstance(e, HeadEdge)
            else scores.direct_edges[:, e.sender[0], e.sender[1]] for e in edges]).mean(dim=1)
        agreement[steps] = float(spearmanr(first.numpy(), exact.numpy()).statistic)
    assert agreement[1] >= 0.8 and agreement[3] >= 0.6, agreement


def test_mean_ablation_reference_finds_the_same_heads(found):
    """With a mean-ablation reference instead of corrupted pairs (8 statements of seed 31337),
    the heads are the card's too. Measured: L0H1, L0H2, L1H0, L1H1, L1H3; faithfulness on those
    statements kept 0.74 (L0H0, left out, matters under mean ablation), removed 0.99; its reads
    compare each head's values with its mean value and also flag Operating income, the line the
    model must tell apart from Operating cash flow (see the module docstring of
    finwidget.circuits.attribution)."""
    model, task, _, reference, _ = found
    graph = find_circuit(model, task, make_statements(8, 31_337), reference=reference, faithfulness=False)
    heads = {node.id for node in graph.heads}
    assert {"L0H1", "L1H0", "L1H3"} <= heads, graph.describe()
    assert "Net income" in {node.label for node in graph.spans}


@pytest.fixture(scope="module")
def explorer_reference(demo):
    model, _tokenizer, task = demo
    return HeadOutputs.record(model, task.encode([s.text for s in make_statements(64, REFERENCE_SEED)]))


@pytest.mark.parametrize("statement", [make_statements(1, 3)[0], *make_statements(4, 31_337)],
                         ids=["seed3", "held0", "held1", "held2", "held3"])
def test_the_circuit_grows_until_faithful_under_mean_ablation(demo, explorer_reference, statement):
    """What the explorer's circuit view asks for: one statement, a mean-ablation reference.
    Measured (this CPU): the pruned circuit of the seed-3 statement is L1H0, L1H1, L1H3 (no
    L0H1), kept 0.838 / removed 1.058; grown, L0H1 is added: kept 0.986, removed 1.074."""
    model, _tokenizer, task = demo
    graph = find_circuit(model, task, statement.text, reference=explorer_reference)
    report = graph.faithfulness_report
    assert report is not None and report.target == 0.9 and report.target_reached, graph.describe()
    assert report.kept_when_outside_ablated >= 0.9 and report.removed_when_circuit_ablated >= 0.9, graph.describe()
    assert "L0H1" in {node.id for node in graph.heads}, graph.describe()
    # the report is the real ablation of the graph's heads (same path: identical numbers)
    again = graph.faithfulness(model, task, statement.text, reference=explorer_reference)
    assert again.kept_when_outside_ablated == report.kept_when_outside_ablated
    assert again.removed_when_circuit_ablated == report.removed_when_circuit_ablated
    # every head reaches the answer through the graph's edges
    reaches = {"answer"}
    for node in sorted(graph.heads, key=lambda n: -n.layer):
        if any(edge.target in reaches for edge in graph.edges_from(node.id)):
            reaches.add(node.id)
    assert {node.id for node in graph.heads} <= reaches, graph.describe()
    pruned = find_circuit(model, task, statement.text, reference=explorer_reference, faithfulness_target=None)
    added = set(report.added_heads or ())
    assert {node.id for node in graph.heads} == {node.id for node in pruned.heads} | added


def test_seed_3_needs_the_growth(demo, explorer_reference):
    """The case that motivated the growth: without it the seed-3 circuit lacks L0H1 and keeps
    under 90% of the answer."""
    model, _tokenizer, task = demo
    pruned = find_circuit(model, task, make_statements(1, 3)[0].text, reference=explorer_reference,
                          faithfulness_target=None)
    assert "L0H1" not in {node.id for node in pruned.heads}
    assert pruned.faithfulness_report is not None and pruned.faithfulness_report.target is None
    assert pruned.faithfulness_report.kept_when_outside_ablated < 0.9


def test_an_unreachable_target_is_reported(demo, explorer_reference):
    model, _tokenizer, task = demo
    graph = find_circuit(model, task, make_statements(1, 3)[0].text, reference=explorer_reference,
                         faithfulness_max_heads=3)
    report = graph.faithfulness_report
    assert report is not None and report.target_reached is False and report.added_heads == ()
    assert report.kept_when_outside_ablated < 0.9
    data = json.loads(graph.to_json())["faithfulness"]
    assert data["target"] == 0.9 and data["target_reached"] is False and data["added_heads"] == []
    assert "NOT reached" in graph.describe()


def test_mean_ablation_circuit_of_several_statements_is_faithful_on_held_out(demo, explorer_reference):
    """Grown on 8 statements (seed 31337), the mean-ablation circuit is the card's and holds on
    200 held-out statements. Measured: L0H0, L0H1, L0H2, L1H0, L1H1, L1H3 (L0H0 added), kept
    0.951, removed 0.998 held out. (A circuit grown on one statement is faithful on that
    statement only: the seed-3 one, L0H1 and the readers, keeps 0.04 held out, since L0H0 and
    L0H2 carry other statements' answers.)"""
    model, _tokenizer, task = demo
    graph = find_circuit(model, task, make_statements(8, 31_337), reference=explorer_reference)
    assert {"L0H1", "L1H0", "L1H3"} <= {node.id for node in graph.heads}, graph.describe()
    held_out = graph.faithfulness(model, task, make_statements(200, HELD_OUT_SEED), reference=explorer_reference)
    assert held_out.kept_when_outside_ablated >= 0.9 and held_out.removed_when_circuit_ablated >= 0.9, held_out
