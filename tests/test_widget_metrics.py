"""The grid shows the analysis layer's numbers: one definition per measure.

For every grid measure and several selections, the value the explorer's grid computes
for each head equals the value ``head_metric_table`` (or the decision pathway, or the
sweep table) gives for the same head and selection: the same code path, so exactly
equal; what reaches the browser differs from it only by float16 rounding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_widget_explorer import make_model
from transformers import AutoTokenizer

from finwidget.analysis import (
    ATTENTION_MEASURES,
    HEAD_MEASURES,
    FinancialAttentionAnalyzer,
    head_measure,
    head_metric_table,
    measure_catalogue,
)
from finwidget.demo import MODEL_DIR, make_statements
from finwidget.errors import InputError
from finwidget.widgets import AttentionExplorer
from finwidget.widgets.protocol import decode_array, startup_catalogue

F16_RELATIVE = 2.0**-11  # float16 rounds to 11 significant bits
F16_SMALLEST = 2.0**-24  # its smallest subnormal step


@pytest.fixture(scope="module")
def explorer():
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    model = make_model(tokenizer)
    return AttentionExplorer(model, tokenizer, make_statements(1, seed=5)[0].text)


def selections(explorer) -> list[list[int]]:
    layout = explorer.session.layout
    number = next(s for s in layout.spans if s.kind == "number" and s.in_statement)
    item = layout.line_items[0]
    row = [item.name_span, max(item.number_spans) + 1]
    return [[], [number.index, number.index + 1], row]


def test_every_attention_measure_in_the_grid_equals_the_dataframe(explorer):
    session = explorer.session
    for direction in ("to", "from"):
        for selection in selections(explorer):
            table = head_metric_table(session.capture, session.layout, selection=selection or None, direction=direction)
            assert list(table.columns) == ["layer", "head", *ATTENTION_MEASURES]
            for name in ATTENTION_MEASURES:
                grid, _ = session.grid(name, selection, direction)
                expected = table.pivot(index="layer", columns="head", values=name).to_numpy(dtype=np.float32)
                assert np.array_equal(grid, expected), (name, selection, direction)
                request = {"id": 1, "kind": "grid", "measure": name, "selection": selection, "direction": direction}
                reply, buffers = explorer.handle_request(request)
                shown = decode_array(reply["arrays"]["values"], buffers).reshape(grid.shape)
                assert np.all(np.abs(shown - grid) <= np.abs(grid) * F16_RELATIVE + F16_SMALLEST), (name, selection)


def test_the_direction_switch_changes_only_the_measures_that_say_they_follow_it(explorer):
    session = explorer.session
    _, number, row = selections(explorer)
    follow = [m.name for m in HEAD_MEASURES if m.follows_direction]
    assert follow == ["attention_to_selection"]
    for name in ATTENTION_MEASURES:
        for selection in (number, row):
            changed = not np.array_equal(session.grid(name, selection, "to")[0], session.grid(name, selection, "from")[0])
            assert changed == head_measure(name).follows_direction, (name, selection)
        # without a selection both readings are the answer position's attention to the numbers
        assert np.array_equal(session.grid(name, [], "to")[0], session.grid(name, [], "from")[0]), name
    # "from": the selection's own rows (entropy reads the same rows), not the answer position's
    legend_to = session.grid("attention_to_selection", row, "to")[1]
    legend_from = session.grid("attention_to_selection", row, "from")[1]
    assert legend_to.startswith("answer position's attention to “") and legend_from.startswith("attention of “")
    with pytest.raises(InputError, match="direction must be"):
        head_metric_table(session.capture, session.layout, direction="sideways")
    reply, _ = explorer.handle_request({"id": 1, "kind": "grid", "measure": "entropy", "direction": "up"})
    assert not reply["ok"] and "direction" in reply["error"]


def test_the_flow_follows_the_direction_switch(explorer):
    session = explorer.session
    row = selections(explorer)[2]
    for direction in ("from", "to"):
        flow = session.flow(row, direction)
        mass = session.grid("attention_to_selection", row, direction)[0].mean(axis=-1)
        assert flow["selection_mass"] == [float(v) for v in mass]
        reply, _ = explorer.handle_request({"id": 1, "kind": "flow", "selection": row, "direction": direction})
        assert reply["ok"] and reply["label"] == flow["label"]
    from_flow, to_flow = session.flow(row, "from"), session.flow(row, "to")
    assert "look at" in to_flow["label"] and "looks," in from_flow["label"]
    assert not np.array_equal(from_flow["spread"], to_flow["spread"])
    # causal: in direction "to", no span before the selection's first token attends to it
    first = session.layout.spans[row[0]].token_start
    before = [s.index for s in session.layout.spans if s.token_end <= first]
    assert before and np.all(to_flow["spread"][:, before] == 0)
    assert np.all(to_flow["spread"][:, row[0]] > 0)


def test_selection_changes_only_the_measures_that_say_they_use_it(explorer):
    session = explorer.session
    _, number, row = selections(explorer)
    for name in ATTENTION_MEASURES:
        changed = not np.array_equal(session.grid(name, number)[0], session.grid(name, row)[0])
        assert changed == head_measure(name).uses_selection, name


def test_the_model_measures_in_the_grid_are_the_decision_pathway_and_the_sweep(explorer):
    session = explorer.session
    grid, _ = session.grid("direct_logit_diff", [])
    heads = session.decision.heads
    for layer, head, contribution in heads[["layer", "head", "contribution"]].itertuples(index=False):
        assert grid[layer, head] == np.float32(contribution)
    table = explorer.sweep("zero", layers=[1, 2])
    grid, legend = session.grid("ablation_effect", [])
    assert np.isnan(grid[0]).all() and "zero" in legend
    for layer, head, change in table[["layer", "head", "change"]].itertuples(index=False):
        assert grid[layer, head] == np.float32(change)


def test_financial_attention_is_the_analyzers(explorer):
    """The analyzer's per-head financial attention at the answer position equals the grid's.

    The two add the same float32 probabilities in a different order (per span, then over
    spans): at most T roundings of values that sum to <= 1 apart.
    """
    session = explorer.session
    analyzer = FinancialAttentionAnalyzer(session.capture, layout=session.layout)
    per_layer = analyzer.analyze_prediction_attention(position=-1)
    grid, _ = session.grid("financial_attention", [])
    bound = session.seq_len * np.finfo(np.float32).eps
    for layer in range(session.num_layers):
        expected = per_layer[f"layer_{layer}"]["financial_attention"]["per_head"]
        assert np.allclose(grid[layer], expected, rtol=0, atol=bound)


def test_entropy_is_normalized_and_entropy_nats_is_not(explorer):
    session = explorer.session
    normalized, _ = session.grid("entropy", [])
    nats, _ = session.grid("entropy_nats", [])
    # The answer row sees every token: normalized = nats / log(T), the same float32 values divided.
    assert np.allclose(normalized, nats / np.float32(math.log(session.seq_len)), rtol=4 * np.finfo(np.float32).eps)
    assert np.all((normalized >= 0) & (normalized <= 1 + 1e-6))


def test_the_widget_receives_the_catalogue_at_start_up(explorer):
    # the catalogue also says what "mean" averages over for this explorer (none here: not the demo model)
    assert explorer.catalogue == startup_catalogue(explorer.session.reference_set.to_dict())
    assert set(explorer.catalogue) == set(startup_catalogue())
    assert "catalogue" in explorer.get_state()


def test_the_catalogue_describes_every_measure_once():
    names = [m["name"] for m in measure_catalogue()]
    assert names == [m.name for m in HEAD_MEASURES] and len(set(names)) == len(names)
    for entry in measure_catalogue():
        assert entry["direction"] in ("more", "signed") and entry["description"] and entry["unit"]
    catalogue = startup_catalogue()
    assert [m["name"] for m in catalogue["measures"]] == names
    assert {"name", "takes_value", "default_value", "needs_reference", "needs_source", "summary"} <= set(
        catalogue["modes"][0]
    )
    assert [v["name"] for v in catalogue["views"]] == ["prediction", "statement", "grid", "matrix", "flow", "circuit"]


def test_head_metric_table_refuses_what_attention_cannot_give(explorer):
    session = explorer.session
    with pytest.raises(InputError, match="decision_pathway"):
        head_metric_table(session.capture, session.layout, names=["direct_logit_diff"])
    with pytest.raises(InputError, match="unknown head measure"):
        head_metric_table(session.capture, session.layout, names=["vibes"])
    with pytest.raises(InputError, match="selection must be"):
        head_metric_table(session.capture, session.layout, selection=(5, 2))
