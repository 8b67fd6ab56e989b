"""Families of counterfactuals through the demo model (``family_effects``): perturbing one item at
a time, the answer follows the planted rule on the edited numbers, so only the two rule items'
sign-changing edits ever flip it (the model card's truth, from whole edited statements)."""

from __future__ import annotations

from finwidget.counterfactuals import counterfactual_family, family_effects
from finwidget.demo import make_statements

RULE_ITEMS = ("Net income", "Operating cash flow")


def test_only_rule_items_flip_the_answer(demo):
    model, tokenizer, task = demo
    statements = make_statements(5, seed=99)
    family = [cf for s in statements for cf in counterfactual_family(s)]
    frame = family_effects(model, tokenizer, family, task=task)
    assert len(frame) == 5 * 9 * 3 and frame.statement.nunique() == 5
    assert list(frame.answer_before) == [statements[k].label for k in frame.statement]
    planted = ["increase" if all(cf.edited_values[item]["change"] > 0 for item in RULE_ITEMS) else "decrease"
               for cf in family]
    assert list(frame.answer_after) == planted
    distractors = frame[~frame["item"].isin(RULE_ITEMS)]
    assert not distractors.flipped.any()
    assert not frame[frame.kind == "scale"].flipped.any()  # scaling keeps every sign
    rule_flips = frame[frame["item"].isin(RULE_ITEMS) & (frame.kind != "scale")]
    assert rule_flips.flipped.any()
