"""The demo statement generator: deterministic, well-formed, labelled by the planted rule."""

import re
from collections import Counter

import pytest

from finwidget.demo import (
    LINE_ITEMS,
    RULE_ITEMS,
    make_statement_pairs,
    make_statements,
)
from finwidget.demo.statements import SECTIONS, TITLE
from finwidget.errors import InputError
from finwidget.task import DEFAULT_QUESTION

LINE = re.compile(
    r"^(?P<item>[A-Za-z' ]+): change (?P<change>[+-][\d,]+|0) \| (?P<cur_year>\d{4}): (?P<cur>-?[\d,]+)"
    r" \| (?P<prev_year>\d{4}): (?P<prev>-?[\d,]+)$"
)
NUMBER_WITH_SEPARATORS = re.compile(r"^-?\d{1,3}(,\d{3})*$")


def parse(text: str) -> tuple[dict, list[str]]:
    """Read a statement back from its text alone (independently of the generator's numbers)."""
    items, headers = {}, []
    for line in text.splitlines():
        match = LINE.match(line)
        if match is None:
            headers.append(line)
            continue
        for key in ("cur", "prev"):
            assert NUMBER_WITH_SEPARATORS.match(match[key].lstrip("+")), line
        items[match["item"]] = {
            "change": int(match["change"].replace(",", "")),
            "current": int(match["cur"].replace(",", "")),
            "previous": int(match["prev"].replace(",", "")),
            "years": (int(match["cur_year"]), int(match["prev_year"])),
        }
    return items, headers


def test_same_seed_same_statements_and_other_seed_differs():
    first, again, other = make_statements(30, 5), make_statements(30, 5), make_statements(30, 6)
    assert first == again
    assert [s.text for s in first] != [s.text for s in other]


def test_text_format_matches_the_numbers():
    for statement in make_statements(200, 11):
        items, headers = parse(statement.text)
        assert statement.text.endswith(DEFAULT_QUESTION)
        assert headers[0] == TITLE and headers[-1] == DEFAULT_QUESTION
        assert sorted(headers[1:-1]) == sorted(SECTIONS)
        assert sorted(items) == sorted(LINE_ITEMS)
        for name, parsed in items.items():
            assert parsed["years"] == (statement.current_year, statement.previous_year)
            assert statement.previous_year == statement.current_year - 1
            assert parsed["change"] == parsed["current"] - parsed["previous"]
            expected = statement.numbers[name]
            assert (parsed["current"], parsed["previous"], parsed["change"]) == (
                expected["current"], expected["previous"], expected["change"])
        assert list(statement.line_order) == [
            line.split(":")[0] for line in statement.text.splitlines() if LINE.match(line)]


def test_accounts_add_up():
    for statement in make_statements(100, 12):
        n = statement.numbers
        for year in ("current", "previous"):
            assert n["Gross profit"][year] == n["Revenue"][year] - n["Cost of revenue"][year]
            assert n["Total assets"][year] == n["Total liabilities"][year] + n["Shareholders' equity"][year]


def test_label_follows_the_planted_rule_read_from_the_text():
    labels = Counter()
    for statement in make_statements(1000, 13):
        items, _ = parse(statement.text)
        rises = [items[item]["change"] > 0 for item in RULE_ITEMS]
        assert statement.label == ("increase" if all(rises) else "decrease")
        assert all(items[item]["change"] != 0 for item in RULE_ITEMS)
        labels[statement.label] += 1
    assert 0.45 < labels["increase"] / 1000 < 0.55


def test_line_order_varies():
    orders = {s.line_order for s in make_statements(50, 14)}
    assert len(orders) > 40
    positions = Counter(s.line_order.index("Net income") for s in make_statements(300, 15))
    assert len(positions) >= 8  # the rule item turns up almost anywhere


def test_each_rule_item_alone_is_not_enough():
    statements = make_statements(2000, 16)
    for i in range(2):
        alone = sum((s.rule_signs[i] > 0) == (s.label == "increase") for s in statements) / len(statements)
        assert 0.75 < alone < 0.9


def test_pairs_flip_the_label_and_keep_the_token_length(demo_tokenizer):
    for pair in make_statement_pairs(100, 21):
        clean, corrupted = pair
        assert clean.label != corrupted.label
        assert pair.flipped_item in RULE_ITEMS
        assert len(demo_tokenizer(clean.text)["input_ids"]) == len(demo_tokenizer(corrupted.text)["input_ids"])
        clean_lines, corrupted_lines = clean.text.splitlines(), corrupted.text.splitlines()
        changed = [a for a, b in zip(clean_lines, corrupted_lines) if a != b]
        assert len(changed) == 1 and changed[0].startswith(pair.flipped_item + ":")
        flipped_clean, flipped_corrupted = clean.numbers[pair.flipped_item], corrupted.numbers[pair.flipped_item]
        assert flipped_corrupted["change"] == -flipped_clean["change"]
        assert flipped_corrupted["current"] == flipped_clean["previous"]


def test_pairs_are_deterministic_and_balanced():
    pairs = make_statement_pairs(400, 22)
    assert pairs == make_statement_pairs(400, 22)
    share = sum(p.clean.label == "increase" for p in pairs) / len(pairs)
    assert 0.4 < share < 0.6
    assert {p.flipped_item for p in pairs} == set(RULE_ITEMS)


@pytest.mark.parametrize("distractors", [0, 3, 7])
def test_fewer_distractors_for_a_curriculum(distractors):
    for statement in make_statements(50, 17, distractors=distractors):
        items, _ = parse(statement.text)
        assert set(RULE_ITEMS) <= set(items)
        assert len(items) == len(RULE_ITEMS) + distractors
        assert sorted(items) == sorted(statement.numbers)
        rises = [items[item]["change"] > 0 for item in RULE_ITEMS]
        assert statement.label == ("increase" if all(rises) else "decrease")


def test_bad_distractor_count_is_a_clear_error():
    with pytest.raises(InputError, match="distractors must be"):
        make_statements(3, 0, distractors=-2)


@pytest.mark.parametrize("bad", [-1, 2.5, "3", None])
def test_bad_count_is_a_clear_error(bad):
    with pytest.raises(InputError, match="n must be"):
        make_statements(bad, 0)
    with pytest.raises(InputError, match="n must be"):
        make_statement_pairs(bad, 0)


def test_bad_seed_is_a_clear_error():
    with pytest.raises(InputError, match="seed must be"):
        make_statements(3, "x")


def test_zero_statements_is_an_empty_list():
    assert make_statements(0, 1) == []


@pytest.fixture(scope="module")
def demo_tokenizer():
    from transformers import AutoTokenizer

    from finwidget.demo import MODEL_DIR

    return AutoTokenizer.from_pretrained(MODEL_DIR)
