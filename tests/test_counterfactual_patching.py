"""Activation patching between a demo statement and its counterfactual of another token length
(``finwidget.counterfactuals.span_patching``): the model card's truth (only the flipped rule line
carries the answer) now across lengths, and exact same-path equality where lengths agree."""

from __future__ import annotations

import numpy as np
import pytest

from finwidget.counterfactuals import SetChange, SetValue, SwapYears, counterfactual, span_patching
from finwidget.demo import make_statements
from finwidget.interventions import activation_patching

RULE_ITEMS = ("Net income", "Operating cash flow")


def increase_statements(n: int, seed: int = 77):
    return [s for s in make_statements(4 * n, seed) if s.label == "increase"][:n]


def test_patching_the_edited_rule_line_restores_the_answer_across_lengths(demo):
    """An "increase" statement edited so one rule item's change is -1,051 (the edit changes
    the token length of the line): patching the original rule line into the edited run
    restores "increase" at the input of every layer; no other line moves the answer."""
    model, tokenizer, task = demo
    lengths_differ = 0
    for statement in increase_statements(4):
        for item in RULE_ITEMS:
            cf = counterfactual(statement, SetChange(item, -1051))
            aligned = cf.token_alignment(tokenizer, task)
            lengths_differ += len(aligned.original_ids) != len(aligned.edited_ids)
            result = span_patching(model, task, cf)
            assert result.clean_logit_diff > 0 > result.corrupted_logit_diff
            rule = result.columns.index(item)
            for layer in range(result.recovered.shape[0]):
                row = result.recovered[layer]
                assert row[rule] >= 0.9, (item, layer, dict(zip(result.columns, row.round(3))))
                assert np.abs(np.delete(row, rule)).max() <= 0.1, (item, layer, dict(zip(result.columns, row.round(3))))
    assert lengths_differ >= 4  # the point of the test: most of these pairs differ in length


def test_leaving_extra_digits_unpatched_loses_layer_one(demo):
    """With ``unmatched="leave"`` the edited number's extra digit tokens keep their own residual.
    At layer 0 (token embeddings) the sign token decides and the line still restores the answer;
    at layer 1 those digits already carry the edited line's negative sign (written by L0H1), and
    for some longer edits the answer stays "decrease" (measured: recovered 0.003-0.02 against
    0.96-1.0 with the default ``"cover"``)."""
    model, tokenizer, task = demo
    layer_one = []
    for statement in increase_statements(4):
        for item in RULE_ITEMS:
            cf = counterfactual(statement, SetChange(item, -1051))
            aligned = cf.token_alignment(tokenizer, task)
            if len(aligned.original_ids) == len(aligned.edited_ids):
                continue
            strict = span_patching(model, task, cf, unmatched="leave")
            rule = strict.columns.index(item)
            assert strict.recovered[0, rule] >= 0.9
            layer_one.append(strict.recovered[1, rule])
    assert layer_one and min(layer_one) < 0.5, layer_one


def test_same_length_matches_activation_patching_exactly(demo):
    """Where the token lengths agree (a swap of the two years), the span-aligned patch is the
    positional one: the same numbers, bit for bit, as ``activation_patching`` with the same groups."""
    model, tokenizer, task = demo
    statement = increase_statements(1, seed=5)[0]
    cf = counterfactual(statement, SwapYears("Net income"))
    aligned = cf.token_alignment(tokenizer, task)
    assert len(aligned.original_ids) == len(aligned.edited_ids)
    groups = aligned.pairs_by("line", cover=True)
    assert all(a == b for pairs in groups.values() for a, b in pairs)
    ours = span_patching(model, task, cf)
    theirs = activation_patching(model, task, cf.original, cf.text,
                                 position_groups={name: [b for _, b in pairs] for name, pairs in groups.items()})
    assert ours.columns == theirs.columns
    assert np.array_equal(ours.patched_logit_diff, theirs.patched_logit_diff)
    assert ours.clean_logit_diff == theirs.clean_logit_diff


def test_identical_statements_patch_to_themselves_exactly(demo):
    model, tokenizer, task = demo
    statement = make_statements(1, seed=12)[0]
    same = counterfactual(statement, SetValue("Revenue", statement.numbers["Revenue"]["current"]))
    assert same.text == same.original and not same.changes
    ours = span_patching(model, task, same, by="segment", layers=[1])
    positions = {name: [b for _, b in pairs] for name, pairs in
                 same.token_alignment(tokenizer, task).pairs_by("segment", cover=True).items()}
    theirs = activation_patching(model, task, same.original, same.text, layers=[1], position_groups=positions)
    assert np.array_equal(ours.patched_logit_diff[1], theirs.patched_logit_diff[1])
    assert np.all(ours.patched_logit_diff[1] == ours.patched_logit_diff[1][0])  # every patch is a no-op
    assert np.isnan(ours.patched_logit_diff[0]).all()  # layer 0 not asked for


def test_edited_as_source(demo):
    model, _tokenizer, task = demo
    statement = increase_statements(1)[0]
    cf = counterfactual(statement, SetChange("Net income", -1051))
    back = span_patching(model, task, cf, source="edited", layers=[0])
    forward = span_patching(model, task, cf, layers=[0])
    assert back.clean_logit_diff == forward.corrupted_logit_diff
    rule = back.columns.index("Net income")
    assert back.recovered[0, rule] >= 0.9  # the edited line alone makes the original answer "decrease"


@pytest.mark.parametrize("layout", ["markdown", "aligned"])
def test_tables_on_the_layouts_model(layout):
    """The layouts demo model reads the rule from markdown and aligned tables: the edited table
    (an aligned column re-padded) patches across lengths the same way, and the rule item's change
    flips the answer between -50 and 50."""
    from finwidget.counterfactuals import sensitivity
    from finwidget.demo import load_demo_model
    from finwidget.task import EarningsTask

    model, tokenizer = load_demo_model(variant="layouts")
    task = EarningsTask(tokenizer)
    statement = next(s for s in make_statements(12, 77, layout=layout) if s.label == "increase")
    cf = counterfactual(statement, SetChange("Net income", -1051))
    result = span_patching(model, task, cf)
    rule = result.columns.index("Net income")
    assert (result.recovered[:, rule] >= 0.9).all(), result.recovered[:, rule]
    assert np.abs(np.delete(result.recovered, rule, axis=1)).max() <= 0.1
    curve = sensitivity(model, tokenizer, statement, "Net income", range(-350, 400, 100), quantity="change", task=task)
    assert [(p.below, p.above, p.direction) for p in curve.flip_points] == [(-50, 50, "up")]
