"""Statement layouts: the same statement written as lines, a markdown table or an aligned text table.

The default layout must stay exactly what it was (other tests, the shipped demo model and
its card depend on it); every layout must carry the same numbers, with the change column
first after the line item's name.
"""

import hashlib
import re
from collections import Counter

import pytest

from finwidget.demo import LAYOUTS, RULE_ITEMS, make_statements
from finwidget.demo.statements import SECTIONS, TITLE
from finwidget.errors import InputError
from finwidget.task import DEFAULT_QUESTION

# sha256 over the texts and labels of make_statements(50, seed) for seeds 0, 7, 12345, and
# over make_statements(50, 3, distractors=2): recorded with the generator as it was before
# layouts existed (main at 435b00f), so any change to the default statements fails here.
DEFAULT_DIGEST = "1b7eb7f67bb5e1f06381c1300743a642eb3b14dee171fa0737cbcea608c08d96"
CURRICULUM_DIGEST = "dd4efcb45e763502f968e1540f5814e5dca085cef42aa2be5700a6bd6e8ac550"

NUMBER = r"-?\d{1,3}(?:,\d{3})*"
CHANGE = r"[+-]\d{1,3}(?:,\d{3})*|0"
MARKDOWN_ROW = re.compile(rf"^\| (?P<item>[A-Za-z' ]+) \| (?P<change>{CHANGE}) \| (?P<cur>{NUMBER}) \| (?P<prev>{NUMBER}) \|$")
MARKDOWN_HEADER = re.compile(r"^\| Item \| Change \| (?P<cur_year>\d{4}) \| (?P<prev_year>\d{4}) \|$")
ALIGNED_ROW = re.compile(rf"^  (?P<item>[A-Za-z' ]+?) +(?P<change>{CHANGE}) +(?P<cur>{NUMBER}) +(?P<prev>{NUMBER})$")
ALIGNED_HEADER = re.compile(r"^ +Change +(?P<cur_year>\d{4}) +(?P<prev_year>\d{4})$")


def _digest(statements, with_labels: bool = True) -> str:
    digest = hashlib.sha256()
    for statement in statements:
        digest.update(statement.text.encode())
        if with_labels:
            digest.update(statement.label.encode())
    return digest.hexdigest()


def test_default_statements_are_the_ones_made_before_layouts_existed():
    assert _digest(s for seed in (0, 7, 12345) for s in make_statements(50, seed)) == DEFAULT_DIGEST
    assert _digest(make_statements(50, 3, distractors=2), with_labels=False) == CURRICULUM_DIGEST
    assert make_statements(30, 9) == make_statements(30, 9, layout="line")
    assert {s.layout for s in make_statements(30, 9)} == {"line"}


def _to_int(text: str) -> int:
    return int(text.replace(",", ""))


def parse_table(text: str, layout: str) -> tuple[dict, tuple[int, int], list[str]]:
    """Read a markdown or aligned statement back from its text alone:
    (item -> numbers, (current year, previous year), lines that are neither rows nor headers)."""
    row, header = (MARKDOWN_ROW, MARKDOWN_HEADER) if layout == "markdown" else (ALIGNED_ROW, ALIGNED_HEADER)
    items, years, other = {}, set(), []
    for line in text.splitlines():
        if (match := header.match(line)) is not None:
            years.add((int(match["cur_year"]), int(match["prev_year"])))
        elif (match := row.match(line)) is not None:
            items[match["item"]] = {"change": _to_int(match["change"]), "current": _to_int(match["cur"]),
                                    "previous": _to_int(match["prev"])}
        else:
            other.append(line)
    assert len(years) == 1, years
    return items, years.pop(), other


@pytest.mark.parametrize("layout", ["markdown", "aligned"])
def test_tables_carry_the_same_numbers_years_and_order_as_the_line_layout(layout):
    lines = make_statements(60, 41)
    tables = make_statements(60, 41, layout=layout)
    for line, table in zip(lines, tables):
        assert table.layout == layout
        assert (table.numbers, table.label, table.line_order) == (line.numbers, line.label, line.line_order)
        items, years, other = parse_table(table.text, layout)
        assert items == table.numbers
        assert years == (table.current_year, table.previous_year)
        assert [line for line in other if line not in {"|---|---|---|---|"} and not set(line) <= {" ", "-"}] == (
            [TITLE] + [title for title in _section_order(table)] + [DEFAULT_QUESTION])
        found_order = [name for name in (_row_item(line, layout) for line in table.text.splitlines()) if name]
        assert tuple(found_order) == table.line_order


def _row_item(line: str, layout: str) -> str | None:
    match = (MARKDOWN_ROW if layout == "markdown" else ALIGNED_ROW).match(line)
    return match["item"] if match else None


def _section_order(statement) -> list[str]:
    order = []
    for item in statement.line_order:
        title = next(title for title, items in SECTIONS.items() if item in items)
        if title not in order:
            order.append(title)
    return order


def test_aligned_columns_line_up():
    for statement in make_statements(30, 43, layout="aligned"):
        lines = statement.text.splitlines()
        table = [line for line in lines[1:-1] if line.startswith(" ")]
        assert len({len(line) for line in table}) == 1  # every row and the header end in the same column
        # each number column ends where its header (a year or "Change") ends
        header = table[0]
        ends = [m.end() for m in re.finditer(r"\S+", header)]
        for line in table[1:]:
            assert [m.end() for m in re.finditer(r"\S+", line)][-3:] == ends


def test_mixed_draws_every_layout_and_keeps_each_statements_numbers():
    mixed = make_statements(300, 44, layout="mixed")
    counts = Counter(s.layout for s in mixed)
    assert set(counts) == set(LAYOUTS)
    assert all(80 <= count <= 120 for count in counts.values()), counts
    by_layout = {layout: make_statements(300, 44, layout=layout) for layout in LAYOUTS}
    for i, statement in enumerate(mixed):
        assert statement == by_layout[statement.layout][i]
    assert mixed == make_statements(300, 44, layout="mixed")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_keeps_the_curriculum_and_the_rule(layout):
    for statement in make_statements(40, 45, distractors=2, layout=layout):
        assert len(statement.numbers) == len(RULE_ITEMS) + 2
        rises = [statement.numbers[item]["change"] > 0 for item in RULE_ITEMS]
        assert statement.label == ("increase" if all(rises) else "decrease")
        for item in statement.numbers:
            assert item in statement.text


@pytest.mark.parametrize("bad", ["table", "", None, 3])
def test_unknown_layout_is_a_clear_error(bad):
    with pytest.raises(InputError, match="layout must be one of"):
        make_statements(2, 0, layout=bad)
