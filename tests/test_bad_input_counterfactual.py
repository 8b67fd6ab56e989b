"""Bad-input catalogue: counterfactual statements (``finwidget.statement.edits``), patching across
lengths and sensitivity sweeps (``finwidget.counterfactuals``). Each case names the finwidget error
it must raise and the words the message must hold; the statement given is left as it was, and
the cases with the demo model leave the model untouched (``bad_input_common.refused``)."""

from __future__ import annotations

import math

import pytest
from bad_input_common import refused

from finwidget.counterfactuals import sensitivity, span_patching
from finwidget.demo import make_statements
from finwidget.errors import FinwidgetError, InputError, LocationError
from finwidget.interventions import activation_patching
from finwidget.statement.edits import (
    FlipChange,
    Scale,
    SetChange,
    SetNumber,
    SetValue,
    SwapYears,
    counterfactual,
    counterfactual_family,
    family_frame,
)

STATEMENT = make_statements(1, seed=21)[0]
YEAR = STATEMENT.current_year
NI_AT = STATEMENT.text.index("Net income")
TITLE_WORD = STATEMENT.text.index("anonymized")
YEAR_AT = STATEMENT.text.index(f"{YEAR}:")

CASES = [
    ("unknown item lists the items", lambda s: counterfactual(s, SetValue("Net profit", 1)), InputError,
     "no line item named 'Net profit'; the statement has: .*'Net income'"),
    ("item None", lambda s: counterfactual(s, SetValue(None, 1)), InputError, "non-empty str"),
    ("year not in the statement", lambda s: counterfactual(s, SetValue("Net income", 1, year=1999)), InputError,
     f"no amount for 1999; its years are {YEAR}, {YEAR - 1}"),
    ("year a string", lambda s: counterfactual(s, SetValue("Net income", 1, year="2020")), InputError, "year must"),
    ("span on a word", lambda s: counterfactual(s, SetNumber((TITLE_WORD, TITLE_WORD + 5), 1)), InputError,
     "not a number"),
    ("span on a year", lambda s: counterfactual(s, SetNumber((YEAR_AT, YEAR_AT + 4), 1)), InputError,
     "years are not edited"),
    ("span over two numbers", lambda s: counterfactual(s, SetNumber((NI_AT, NI_AT + 45), 1)), InputError,
     "cover .* numbers"),
    ("span outside the text", lambda s: counterfactual(s, SetNumber((0, 10 ** 6), 1)), InputError, "outside"),
    ("span empty", lambda s: counterfactual(s, SetNumber((5, 5), 1)), InputError, "empty"),
    ("span not a pair", lambda s: counterfactual(s, SetNumber(5, 1)), InputError, "span must be"),
    ("value NaN", lambda s: counterfactual(s, SetValue("Net income", math.nan)), InputError, "finite"),
    ("value inf", lambda s: counterfactual(s, SetChange("Net income", math.inf)), InputError, "finite"),
    ("value text not a number", lambda s: counterfactual(s, SetValue("Net income", "lots")), InputError,
     "'lots' is not a number"),
    ("value half a bracket", lambda s: counterfactual(s, SetValue("Net income", "(300")), InputError, "not a number"),
    ("value a bool", lambda s: counterfactual(s, SetValue("Net income", True)), InputError, "number"),
    ("value None", lambda s: counterfactual(s, SetValue("Net income", None)), InputError, "number"),
    ("scale NaN", lambda s: counterfactual(s, Scale(math.nan)), InputError, "finite"),
    ("edits collide", lambda s: counterfactual(s, [SetValue("Net income", 1), FlipChange("Net income")]),
     InputError, "edits collide"),
    ("edit collides with totals", lambda s: counterfactual(
        s, [SetValue("Revenue", 1), SetValue("Gross profit", 2)], totals={"Gross profit": ("Revenue", "-Cost of revenue")}),
     InputError, "collide.*totals"),
    ("totals with an unknown part", lambda s: counterfactual(s, SetValue("Revenue", 1), totals={"Gross profit": ("Sales",)}),
     InputError, "no line item named 'Sales'"),
    ("totals not a dict", lambda s: counterfactual(s, SetValue("Revenue", 1), totals=["Gross profit"]), InputError,
     "totals must be"),
    ("no edits", lambda s: counterfactual(s, []), InputError, "no edits"),
    ("edits a string", lambda s: counterfactual(s, "Net income"), InputError, "edits must be"),
    ("not an edit", lambda s: counterfactual(s, [("Net income", 1)]), InputError, "unknown edit"),
    ("statement None", lambda s: counterfactual(None, SetValue("Net income", 1)), InputError, "statement must be"),
    ("statement empty", lambda s: counterfactual("  ", SetValue("Net income", 1)), InputError, "empty"),
    ("one year only", lambda s: counterfactual("Revenue: 2024: 100", SwapYears("Revenue")), InputError,
     "two years"),
    ("locale unknown", lambda s: counterfactual(s, SetValue("Net income", 1), number_locale="fr"), InputError,
     "number_locale"),
    ("family kind unknown", lambda s: counterfactual_family(s, kinds=("shuffle",)), InputError, "kinds"),
    ("family_frame of text", lambda s: family_frame([s.text]), InputError, "CounterfactualStatement"),
]


@pytest.mark.parametrize("name, call, error, match", CASES, ids=[c[0] for c in CASES])
def test_refused(name, call, error, match):
    before = (STATEMENT.text, {k: dict(v) for k, v in STATEMENT.numbers.items()})
    with pytest.raises(error, match=match) as info:
        call(STATEMENT)
    assert isinstance(info.value, FinwidgetError)
    assert (STATEMENT.text, STATEMENT.numbers) == before


# ------------------------------------------------------------ with the model: nothing about it may change
EDITED = counterfactual(STATEMENT, SetChange("Net income", -1051))

MODEL_CASES = [
    ("patching a text, not a counterfactual", lambda m, k, t: span_patching(m, t, EDITED.text), InputError,
     "CounterfactualStatement"),
    ("patching source unknown", lambda m, k, t: span_patching(m, t, EDITED, source="clean"), InputError, "source"),
    ("patching groups unknown", lambda m, k, t: span_patching(m, t, EDITED, by="token"), InputError, "by must be"),
    ("patching unmatched unknown", lambda m, k, t: span_patching(m, t, EDITED, unmatched="drop"), InputError,
     "unmatched"),
    ("patching a layer outside the model", lambda m, k, t: span_patching(m, t, EDITED, layers=[7]), LocationError,
     "layer 7"),
    ("pairs outside the prompt", lambda m, k, t: activation_patching(
        m, t, EDITED.original, EDITED.text, position_pairs={"x": [(0, 10 ** 6)]}), LocationError, "corrupted prompt"),
    ("pairs patch a position twice", lambda m, k, t: activation_patching(
        m, t, EDITED.original, EDITED.text, position_pairs={"x": [(0, 1), (2, 1)]}), InputError, "twice"),
    ("pairs not pairs", lambda m, k, t: activation_patching(
        m, t, EDITED.original, EDITED.text, position_pairs={"x": [0, 1]}), InputError, "each entry"),
    ("pairs with heads", lambda m, k, t: activation_patching(
        m, t, EDITED.original, EDITED.text, over="heads", position_pairs={"x": [(0, 1)]}), InputError,
     "over='residual'"),
    ("different lengths without pairs", lambda m, k, t: activation_patching(m, t, EDITED.original, EDITED.text),
     InputError, "same token length"),
    ("sweep quantity unknown", lambda m, k, t: sensitivity(m, k, STATEMENT, "Net income", [1], quantity="ratio"),
     InputError, "quantity"),
    ("sweep no values", lambda m, k, t: sensitivity(m, k, STATEMENT, "Net income", []), InputError, "empty"),
    ("sweep a NaN", lambda m, k, t: sensitivity(m, k, STATEMENT, "Net income", [1, math.nan]), InputError, "finite"),
    ("sweep values a string", lambda m, k, t: sensitivity(m, k, STATEMENT, "Net income", "100"), InputError,
     "values must be"),
    ("sweep batch_size 0", lambda m, k, t: sensitivity(m, k, STATEMENT, "Net income", [1], batch_size=0), InputError,
     "batch_size"),
    ("sweep unknown item", lambda m, k, t: sensitivity(m, k, STATEMENT, "Net profit", [1]), InputError,
     "no line item named 'Net profit'"),
    ("sweep a year not there", lambda m, k, t: sensitivity(m, k, STATEMENT, "Net income", [1], year=1990), InputError,
     "no amount for 1990"),
    ("sweep task a string", lambda m, k, t: sensitivity(m, k, STATEMENT, "Net income", [1], task="earnings"),
     InputError, "EarningsTask"),
]


@pytest.mark.parametrize("name, call, error, match", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_refused_with_the_model(demo, name, call, error, match):
    model, tokenizer, task = demo
    refused(model, error, lambda: call(model, tokenizer, task), match)
