"""Counterfactual statements (``finwidget.statement.edits``): the edited text is written as the
demo generator would write the edited numbers (an independent reference: ``finwidget.demo``'s
own renderer), general filings keep their number style, and the span and token alignments
cover both texts."""

from __future__ import annotations

import random

import pytest

from finwidget.demo import make_statements
from finwidget.demo.statements import SECTIONS, render
from finwidget.errors import InputError
from finwidget.statement import read_statement
from finwidget.statement.edits import (
    DEMO_TOTALS,
    CounterfactualStatement,
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

LAYOUTS = ("line", "markdown", "aligned")


def sections_of(statement):
    """The statement's (section title, items) in text order, as ``render`` takes them."""
    titles = sorted(SECTIONS, key=lambda title: statement.text.find("\n" + title + "\n"))
    return [(title, [i for i in statement.line_order if i in SECTIONS[title]]) for title in titles
            if any(i in SECTIONS[title] for i in statement.line_order)]


def rendered(statement, numbers) -> str:
    return render(numbers, statement.current_year, statement.previous_year, sections_of(statement),
                  style=statement.layout)


def with_values(numbers, item, current=None, previous=None):
    out = {name: dict(values) for name, values in numbers.items()}
    row = out[item]
    if current is not None:
        row["current"] = current
    if previous is not None:
        row["previous"] = previous
    row["change"] = row["current"] - row["previous"]
    return out


def squeeze(text: str) -> list[list[str]]:
    """Lines as lists of cells (runs of 2+ spaces are one separator): column widths left out
    (and the rule of dashes under the header, whose length is the column width)."""
    import re

    return [re.split(r" {2,}", line.strip()) for line in text.splitlines() if set(line) - {" ", "-"}]


def assert_written_like_demo(cf, statement, numbers):
    expected = rendered(statement, numbers)
    if statement.layout == "aligned":  # the generator re-fits every column; the edit keeps right edges
        assert squeeze(cf.text) == squeeze(expected)
    else:
        assert cf.text == expected


def assert_alignment_covers(cf: CounterfactualStatement):
    """The segments tile both texts; every segment not marked changed has the same characters."""
    original_end = edited_end = 0
    for span in cf.alignment:
        assert span.original_start == original_end and span.edited_start == edited_end
        original_end, edited_end = span.original_end, span.edited_end
        same = cf.original[span.original_start:span.original_end] == cf.text[span.edited_start:span.edited_end]
        assert same != span.changed
    assert original_end == len(cf.original) and edited_end == len(cf.text)
    kinds = {span.kind for span in cf.alignment}
    assert {"line_item", "number", "text"} <= kinds


@pytest.mark.parametrize("layout", LAYOUTS)
def test_edits_write_the_demo_generators_text(layout):
    rng = random.Random(7)
    for statement in make_statements(12, seed=41, layout=layout):
        numbers = statement.numbers
        item = rng.choice(statement.line_order)
        row = numbers[item]
        value = rng.choice([-123_456, -1_051, -7, 0, 3, 999, 1_000, 48_213])

        cf = counterfactual(statement, [SetValue(item, value)])
        assert_written_like_demo(cf, statement, with_values(numbers, item, current=value))
        assert_alignment_covers(cf)

        cf = counterfactual(statement, SetValue(item, value, year=statement.previous_year))
        assert_written_like_demo(cf, statement, with_values(numbers, item, previous=value))

        cf = counterfactual(statement, SetChange(item, value))
        assert_written_like_demo(cf, statement, with_values(numbers, item, current=row["previous"] + value))

        cf = counterfactual(statement, FlipChange(item))
        flipped = with_values(numbers, item, current=row["previous"] - row["change"])
        assert flipped[item]["change"] == -row["change"]
        assert_written_like_demo(cf, statement, flipped)

        cf = counterfactual(statement, SwapYears(item))
        assert_written_like_demo(cf, statement, with_values(numbers, item, current=row["previous"],
                                                            previous=row["current"]))

        cf = counterfactual(statement, Scale(3, item))
        assert_written_like_demo(cf, statement, with_values(numbers, item, current=3 * row["current"],
                                                            previous=3 * row["previous"]))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_whole_statement_edits_and_totals(layout):
    statement = make_statements(1, seed=5, layout=layout)[0]
    numbers = statement.numbers
    swapped = {name: {"current": v["previous"], "previous": v["current"], "change": -v["change"]}
               for name, v in numbers.items()}
    assert_written_like_demo(counterfactual(statement, SwapYears()), statement, swapped)
    doubled = {name: {k: 2 * x for k, x in v.items()} for name, v in numbers.items()}
    assert_written_like_demo(counterfactual(statement, Scale(2)), statement, doubled)

    # totals: revenue up by 500 -> gross profit up by 500; liabilities down 100 -> equity up 100
    cf = counterfactual(statement, [SetValue("Revenue", numbers["Revenue"]["current"] + 500),
                                    SetValue("Total liabilities", numbers["Total liabilities"]["previous"] - 100,
                                             year=statement.previous_year)], totals=DEMO_TOTALS)
    expected = with_values(numbers, "Revenue", current=numbers["Revenue"]["current"] + 500)
    expected = with_values(expected, "Gross profit", current=numbers["Gross profit"]["current"] + 500)
    expected = with_values(expected, "Total liabilities", previous=numbers["Total liabilities"]["previous"] - 100)
    expected = with_values(expected, "Shareholders' equity",
                           previous=numbers["Shareholders' equity"]["previous"] + 100)
    assert_written_like_demo(cf, statement, expected)
    causes = {(c.item, c.role, c.cause) for c in cf.changes}
    assert ("Gross profit", "value", "total") in causes and ("Gross profit", "change", "change") in causes
    # without totals= the total stays as written
    plain = counterfactual(statement, SetValue("Revenue", numbers["Revenue"]["current"] + 500))
    assert not any(c.item == "Gross profit" for c in plain.changes)


def test_no_change_recompute_when_asked():
    statement = make_statements(1, seed=2)[0]
    cf = counterfactual(statement, SetValue("Net income", 5), recompute_change=False)
    assert len(cf.changes) == 1 and cf.changes[0].role == "value"
    assert cf.value("Net income", "change") == statement.numbers["Net income"]["change"]


def test_double_clicked_span_sets_that_number(demo):
    _, tokenizer, task = demo
    statement = make_statements(1, seed=9)[0]
    layout = read_statement(statement.text, tokenizer, task=task)
    number = next(s for s in layout.spans if s.kind == "number" and s.line_item == "Net income"
                  and s.year == statement.current_year)
    cf = counterfactual(statement, SetNumber((number.char_start, number.char_end), "(1,250)"))
    expected = with_values(statement.numbers, "Net income", current=-1250)
    assert cf.text == rendered(statement, expected)
    # a span inside the number (the digits only) is the same number
    inner = counterfactual(statement, SetNumber((number.char_end - 1, number.char_end), -1250))
    assert inner.text == cf.text
    # the change column itself: set directly, not recomputed, years untouched
    change = next(s for s in layout.spans if s.kind == "number" and s.line_item == "Net income" and s.year is None)
    new_change = statement.numbers["Net income"]["change"] + 1000
    direct = counterfactual(statement, SetNumber((change.char_start, change.char_end), new_change))
    assert [(c.role, c.new) for c in direct.changes] == [("change", f"{new_change:+,}")]


def test_typed_values_in_the_statements_style():
    statement = make_statements(1, seed=11)[0]
    current = statement.numbers["Operating cash flow"]["current"]
    for typed in ("1,250", "1250", 1250, 1250.0, "+1,250", "$1,250"):
        cf = counterfactual(statement, SetValue("Operating cash flow", typed))
        assert cf.value("Operating cash flow") == 1250.0
        assert ": 1,250 |" in cf.text
    cf = counterfactual(statement, SetValue("Operating cash flow", "-3.5"))
    assert ": -3.5 |" in cf.text and cf.value("Operating cash flow", "change") == pytest.approx(
        -3.5 - statement.numbers["Operating cash flow"]["previous"])
    assert cf.original_values["Operating cash flow"][statement.current_year] == current


PIPE_FILING = """Consolidated results (in millions, except per share data)
| | 2024 | 2023 | Change | % Change |
|---|---|---|---|---|
| Revenue | $1,234.5 | $1,100.0 | $134.5 | 12.2% |
| Net loss | $(12.3) | $(8.1) | $(4.2) | (51.9)% |
"""

ALIGNED_FILING = """                                   Year ended December 31,
                                   2024           2023
Net sales                     $ 391,035      $ 383,285
Cost of sales                   210,352        214,137
Operating income (loss)          (1,150)         2,075
"""

PROSE = "Revenue grew to $3.7 billion in fiscal 2023 from $3.2 billion in fiscal 2022, up 15.6%."


def test_pipe_filing_keeps_currency_brackets_decimals_and_percent_change():
    cf = counterfactual(PIPE_FILING, SetValue("Revenue", 1300))
    assert "| Revenue | $1,300.0 | $1,100.0 | $200.0 | 18.2% |" in cf.text
    cf = counterfactual(PIPE_FILING, SetValue("Net loss", "5"))
    assert "| Net loss | $5.0 | $(8.1) | $13.1 | 161.7% |" in cf.text
    cf = counterfactual(PIPE_FILING, SetValue("Net loss", -20, year=2023))
    assert "| Net loss | $(12.3) | $(20.0) | $7.7 | 38.5% |" in cf.text
    assert_alignment_covers(cf)


def test_aligned_filing_keeps_right_edges():
    cf = counterfactual(ALIGNED_FILING, SetValue("Net sales", 1_000_000))
    line = next(x for x in cf.text.splitlines() if x.startswith("Net sales"))
    original = next(x for x in ALIGNED_FILING.splitlines() if x.startswith("Net sales"))
    assert line.split() == ["Net", "sales", "$", "1,000,000", "$", "383,285"]
    assert len(line) == len(original) and line.index("1,000,000") + 9 == original.index("391,035") + 7
    cf = counterfactual(ALIGNED_FILING, SetValue("Operating income (loss)", 30, year=2023))
    line = next(x for x in cf.text.splitlines() if x.startswith("Operating"))
    assert line.endswith("      30") and "(1,150)" in line
    cf = counterfactual(ALIGNED_FILING, SetValue("Operating income (loss)", -5))
    assert "(5)" in cf.text
    assert_alignment_covers(cf)


def test_prose_numbers_by_span():
    start = PROSE.index("$3.7")
    cf = counterfactual(PROSE, SetNumber((start, start + 4), 4.15))
    assert cf.text == PROSE.replace("$3.7 billion", "$4.15 billion")
    assert cf.changes[0].old == "$3.7 billion" and cf.changes[0].new == "$4.15 billion"


def test_token_alignment_pairs_like_for_like(demo):
    _, tokenizer, task = demo
    statement = make_statements(1, seed=3)[0]
    same = counterfactual(statement, SetValue("Revenue", statement.numbers["Revenue"]["current"]))
    aligned = same.token_alignment(tokenizer, task)
    assert aligned.original_ids == aligned.edited_ids
    assert aligned.pairs == [(t, t) for t in range(len(aligned.original_ids))]
    assert not aligned.changed_groups

    previous = statement.numbers["Net income"]["previous"]
    cf = counterfactual(statement, SetValue("Net income", previous - 1051))  # change -> -1,051
    aligned = cf.token_alignment(tokenizer, task)
    encoded = task.encode([cf.original, cf.text])
    for row, ids in ((0, aligned.original_ids), (1, aligned.edited_ids)):
        mask = encoded["attention_mask"][row].bool()
        assert tuple(encoded["input_ids"][row][mask].tolist()) == ids
    for side, n in (("original_positions", len(aligned.original_ids)), ("edited_positions", len(aligned.edited_ids))):
        assert sorted(p for g in aligned.groups for p in getattr(g, side)) == list(range(n))
    change = next(g for g in aligned.changed_groups if g.role == "change")
    text_a = [tokenizer.decode([aligned.original_ids[p]]) for p in change.original_positions]
    text_b = [tokenizer.decode([aligned.edited_ids[p]]) for p in change.edited_positions]
    assert "".join(text_b).strip() == "-1,051"
    pairs = dict(change.pairs)
    assert pairs[change.original_positions[0]] == change.edited_positions[0]  # sign with sign
    assert text_a[0].strip() in "+-" and text_b[0].strip() == "-"
    assert pairs[change.original_positions[-1]] == change.edited_positions[-1]  # units digit with units digit
    assert len(change.pairs) == len(change.original_positions)  # the shorter side pairs fully
    # everything outside the Net income line is identical token for token
    other = [g for g in aligned.groups if g.item != "Net income" and g.kind != "text"]
    assert all(g.identical for g in other)
    by_line = aligned.pairs_by("line")
    assert "Net income" in by_line and "Revenue" in by_line


def test_family_one_per_item_and_kind():
    statement = make_statements(1, seed=4, layout="markdown")[0]
    family = counterfactual_family(statement)
    assert len(family) == len(statement.line_order) * 3
    frame = family_frame(family)
    assert list(frame.columns[:2]) == ["item", "kind"]
    flips = frame[frame.kind == "flip_change"]
    assert (flips.change_after == -flips.change_before).all()
    scales = frame[frame.kind == "scale"]
    assert (scales.current_after == 2 * scales.current_before).all()
    rule = counterfactual_family(statement, items=["Net income", "Operating cash flow"], kinds=("swap_years",))
    assert [(cf.item, cf.kind) for cf in rule] == [("Net income", "swap_years"), ("Operating cash flow", "swap_years")]


def test_input_is_never_mutated():
    statement = make_statements(1, seed=8)[0]
    before = (statement.text, {k: dict(v) for k, v in statement.numbers.items()})
    edits = [SetValue("Net income", 1), FlipChange("Revenue")]
    counterfactual(statement, edits, totals=DEMO_TOTALS)
    assert (statement.text, statement.numbers) == before
    assert edits == [SetValue("Net income", 1), FlipChange("Revenue")]
    assert DEMO_TOTALS == {"Gross profit": ("Revenue", "-Cost of revenue"),
                           "Shareholders' equity": ("Total assets", "-Total liabilities")}


def test_root_exports():
    """``finwidget.counterfactual`` is the function and ``finwidget.counterfactuals`` the package
    that runs counterfactuals through the model; importing the package first does not replace
    the function (the names differ)."""
    import finwidget
    import finwidget.counterfactuals as package

    statement = make_statements(1, seed=6)[0]
    assert finwidget.counterfactual is counterfactual
    assert finwidget.counterfactuals is package
    assert finwidget.counterfactual(statement, FlipChange("Revenue")).text == \
        counterfactual(statement, FlipChange("Revenue")).text
    assert package.span_patching is finwidget.span_patching
    for name in ("SetNumber", "SetValue", "SetChange", "Scale", "FlipChange", "SwapYears", "sensitivity",
                 "plot_sensitivity", "counterfactual_family"):
        assert name in finwidget.__all__ and getattr(finwidget, name) is not None


EDGAR_HTML = """<table><tr><td></td><td colspan="2">2024</td><td colspan="2">2023</td></tr>
<tr><td>Net sales</td><td>$</td><td>29,915</td><td>$</td><td>27,100</td></tr>
<tr><td>Net income (loss)</td><td>$</td><td>(565</td><td>)</td><td>1,210</td></tr>
<tr><td>Other</td><td></td><td>&mdash;</td><td></td><td>12</td></tr></table>"""


def test_html_csv_and_other_locales():
    cf = counterfactual(EDGAR_HTML, SetValue("Net sales", 31000))
    assert "<td>31,000</td>" in cf.text and cf.original_values["Net sales"] == {2024: 29915.0, 2023: 27100.0}
    # EDGAR's split brackets: read as -565; another negative keeps the brackets where they are
    cf = counterfactual(EDGAR_HTML, SetValue("Net income (loss)", -80))
    assert cf.original_values["Net income (loss)"][2024] == -565.0
    assert "<td>(80</td><td>)</td>" in cf.text
    with pytest.raises(InputError, match="brackets sit in other table cells"):
        counterfactual(EDGAR_HTML, SetValue("Net income (loss)", 80))
    cf = counterfactual(EDGAR_HTML, SetValue("Net income (loss)", -7, year=2023))
    assert "<td>(7)</td>" in cf.text  # the statement writes negatives in brackets
    cf = counterfactual(EDGAR_HTML, SetValue("Other", 5))  # a nil dash
    assert "<td>5</td>" in cf.text and "&mdash;" not in cf.text

    csv = 'Item,2024,2023\nRevenue,1234.5,1100.0\nNet income,"(12.3)",8.1\n'
    assert counterfactual(csv, SetValue("Revenue", 1300)).text == csv.replace("1234.5", "1300.0")
    assert counterfactual(csv, SwapYears()).text == 'Item,2024,2023\nRevenue,1100.0,1234.5\nNet income,"8.1",(12.3)\n'

    german = "| Posten | 2024 | 2023 | Veränderung |\n|---|---|---|---|\n| Umsatz | 1.234,5 | 1.100,0 | 134,5 |\n"
    cf = counterfactual(german, SetValue("Umsatz", "2.000,25"), number_locale="de")
    assert "| Umsatz | 2.000,25 | 1.100,0 | 900,25 |" in cf.text


def test_token_alignment_with_a_chat_template():
    """The template around the statement (before and after it) pairs 1:1; the statement's tokens
    pair as without a template (a fresh tokenizer: the shared fixture's is left alone)."""
    from finwidget.demo import load_demo_model
    from finwidget.task import EarningsTask

    _, tokenizer = load_demo_model()
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
                               "<|assistant|>\n")
    task = EarningsTask(tokenizer, use_chat_template=True)
    statement = make_statements(1, seed=3)[0]
    cf = counterfactual(statement, SetChange("Net income", -1051))
    aligned = cf.token_alignment(tokenizer, task)
    templates = [g for g in aligned.groups if g.kind == "template"]
    assert [g.label for g in templates] == ["prompt before the statement", "prompt after the statement"]
    assert all(g.identical and len(g.pairs) == len(g.original_positions) > 0 for g in templates)
    assert sorted(p for g in aligned.groups for p in g.original_positions) == list(range(len(aligned.original_ids)))
    assert sorted(p for g in aligned.groups for p in g.edited_positions) == list(range(len(aligned.edited_ids)))
    assert {g.label for g in aligned.changed_groups} == {"Net income change", f"Net income {statement.current_year}"}


def test_counterfactuals_compare_and_hash_by_value():
    statement = make_statements(1, seed=10)[0]
    a, b = counterfactual(statement, FlipChange("Revenue")), counterfactual(statement, FlipChange("Revenue"))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != counterfactual(statement, SwapYears("Revenue"))
