"""Synthetic, anonymized financial statements with a planted earnings rule.

The statements follow the layout Kim, Muhn & Nikolaev (2024) fed to language
models: an income statement, a balance sheet and (here) a short cash-flow
statement for two fiscal years, numbers in thousands with thousands separators,
the company name removed, and the question at the end. Each line gives a line
item, its signed change from the prior year, and both years' values::

    Net income: change -1,433 | 2022: 13,937 | 2021: 15,370

The signed change right after the item's name is what makes the rule learnable by
a tiny model in minutes (see ``finwidget/demo/model/MODEL_CARD.md``).

The same numbers can be written in other layouts (``layout=``): ``"line"`` (the
default, above), ``"markdown"`` (a pipe table per section under a
``| Item | Change | 2022 | 2021 |`` header), ``"aligned"`` (a space-aligned text table
as 10-K filings print it, one header line with the years) and ``"mixed"`` (one of the
three per statement, at random). Every layout keeps the change column first after the
line item's name.

The planted rule (the demo model's known mechanism)::

    earnings increase  iff  change in Net income > 0  AND  change in Operating cash flow > 0

Every other line item is a distractor whose changes are drawn independently of the
label. Labels are balanced: half of the statements satisfy the rule; the other half
split evenly between "net income fell", "operating cash flow fell" and "both fell",
so each rule item alone predicts the label only ~83% of the time.

Everything is deterministic from the seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import NamedTuple

from finwidget.task import DEFAULT_QUESTION

TITLE = "Financial statements of an anonymized company (in thousands of USD)"

NET_INCOME = "Net income"
OPERATING_CASH_FLOW = "Operating cash flow"
RULE_ITEMS: tuple[str, str] = (NET_INCOME, OPERATING_CASH_FLOW)
RULE = (
    "increase iff the change in Net income is positive AND the change in Operating cash flow "
    "is positive; otherwise decrease"
)
BOTH_RULE = "both"  # the planted rule above (the shipped demo models)
NET_INCOME_ONLY_RULE = "net_income_only"  # increase iff the change in Net income is positive
# make_statements(rule=...) -> what the label means
RULES: dict[str, str] = {
    BOTH_RULE: RULE,
    NET_INCOME_ONLY_RULE: "increase iff the change in Net income is positive; otherwise decrease "
                          "(Operating cash flow is a distractor)",
}

# Section title -> its line items, in their conventional order (shuffled in the text).
SECTIONS: dict[str, tuple[str, ...]] = {
    "Income statement": ("Revenue", "Cost of revenue", "Gross profit", "Operating income", NET_INCOME),
    "Balance sheet": ("Total assets", "Total liabilities", "Shareholders' equity"),
    "Cash flow statement": (OPERATING_CASH_FLOW,),
}
LINE_ITEMS: tuple[str, ...] = tuple(item for items in SECTIONS.values() for item in items)

FIRST_YEAR, LAST_YEAR = 2008, 2024  # range of the current fiscal year t

LAYOUTS: tuple[str, ...] = ("line", "markdown", "aligned")  # how a statement is written
MIXED = "mixed"  # one of LAYOUTS per statement, drawn at random

# The three ways a statement can fail the rule, drawn with equal probability.
_DECREASE_PATTERNS = ((-1, +1), (+1, -1), (-1, -1))


@dataclass(frozen=True)
class Statement:
    """One synthetic statement.

    text: the statement, ending with the question line (``DEFAULT_QUESTION``), without
        the answer prefix; ``EarningsTask(tokenizer).prompt(text)`` makes the prompt.
    label: "increase" or "decrease", from the planted rule.
    numbers: line item name (as written in the text) -> ``{"current": int,
        "previous": int, "change": int}`` in thousands, ``change = current - previous``.
    current_year, previous_year: the two fiscal years (t and t-1) as written.
    line_order: the line items in the order they appear in the text.
    layout: how the text is written, one of ``LAYOUTS``.
    rule: which rule labelled it, a key of ``RULES`` (``"both"``: the planted rule).
    """

    text: str
    label: str
    numbers: dict[str, dict[str, int]]
    current_year: int
    previous_year: int
    line_order: tuple[str, ...] = field(default=())
    layout: str = "line"
    rule: str = BOTH_RULE

    def __hash__(self) -> int:  # numbers is a dict; the text determines the statement
        return hash((self.text, self.label))

    @property
    def rule_signs(self) -> tuple[int, int]:
        """Signs (+1/-1) of the changes of the two rule items (net income, operating cash flow)."""
        first, second = (1 if self.numbers[item]["change"] > 0 else -1 for item in RULE_ITEMS)
        return first, second


class StatementPair(NamedTuple):
    """A clean statement and a corrupted copy that differs only in one rule item.

    The corrupted statement swaps that item's two yearly values (so its change flips
    sign and the label flips); every other character is the same, and both texts
    tokenize to the same number of tokens. Unpacks as ``clean, corrupted = pair``;
    ``pair.flipped_item`` names the changed line item.
    """

    clean: Statement
    corrupted: Statement

    @property
    def flipped_item(self) -> str:
        """The rule item whose change has opposite signs in the two statements."""
        for item in RULE_ITEMS:
            if self.clean.numbers[item]["change"] != self.corrupted.numbers[item]["change"]:
                return item
        raise ValueError("the two statements of this pair do not differ in a rule item")


def _check_rule(rule) -> None:
    if not isinstance(rule, str) or rule not in RULES:
        from finwidget.errors import InputError

        raise InputError(f"rule must be one of {sorted(RULES)}, got {rule!r}")


def label_for(numbers: dict[str, dict[str, int]], rule: str = BOTH_RULE) -> str:
    """A rule (a key of ``RULES``; default the planted rule) applied to a statement's numbers."""
    _check_rule(rule)
    deciding = RULE_ITEMS if rule == BOTH_RULE else (NET_INCOME,)
    rising = all(numbers[item]["change"] > 0 for item in deciding)
    return "increase" if rising else "decrease"


def format_thousands(value: int) -> str:
    """``-1433 -> "-1,433"``, ``13937 -> "13,937"``."""
    return f"{value:,}"


def format_change(change: int) -> str:
    """Signed change: ``+1,433``, ``-1,433``, or ``0``."""
    if change > 0:
        return f"+{change:,}"
    return f"{change:,}"


def format_line(item: str, values: dict[str, int], current_year: int, previous_year: int) -> str:
    """``"Net income: change -1,433 | 2022: 13,937 | 2021: 15,370"``."""
    return (
        f"{item}: change {format_change(values['change'])} | "
        f"{current_year}: {format_thousands(values['current'])} | "
        f"{previous_year}: {format_thousands(values['previous'])}"
    )


def _pair(previous: int, current: int) -> dict[str, int]:
    return {"current": int(current), "previous": int(previous), "change": int(current) - int(previous)}


def _nonzero_step(rng: random.Random, base: int, sign: int, low: float, high: float) -> int:
    """A change of sign ``sign`` and size ``low..high`` times ``|base|`` (at least 1)."""
    return sign * max(1, round(abs(base) * rng.uniform(low, high)))


def _draw_numbers(rng: random.Random, rule_signs: tuple[int, int]) -> dict[str, dict[str, int]]:
    """Plausible line items; the rule items' changes have the given signs.

    The income statement adds up (gross profit = revenue - cost of revenue) and so
    does the balance sheet (assets = liabilities + equity). Net income and operating
    cash flow are drawn on their own so that their signs can be set.
    """
    scale = 10 ** rng.uniform(2.7, 4.8)  # revenue of the prior year, in thousands (0.5 to 63 million USD)
    revenue_prev = round(scale)
    revenue_cur = revenue_prev + _nonzero_step(rng, revenue_prev, rng.choice((-1, 1)), 0.01, 0.3)
    cost_prev = round(revenue_prev * rng.uniform(0.35, 0.8))
    cost_cur = round(revenue_cur * min(0.95, cost_prev / revenue_prev * rng.uniform(0.9, 1.1)))
    gross_prev, gross_cur = revenue_prev - cost_prev, revenue_cur - cost_cur
    opex_prev = round(gross_prev * rng.uniform(0.3, 0.85))
    opex_cur = round(opex_prev * rng.uniform(0.9, 1.15))
    operating_prev, operating_cur = gross_prev - opex_prev, gross_cur - opex_cur

    ni_sign, ocf_sign = rule_signs
    net_prev = round(revenue_prev * rng.uniform(0.02, 0.15))
    if rng.random() < 0.1:  # some companies report a net loss
        net_prev = -net_prev
    net_cur = net_prev + _nonzero_step(rng, net_prev, ni_sign, 0.02, 0.6)
    ocf_prev = round(revenue_prev * rng.uniform(0.04, 0.25))
    ocf_cur = ocf_prev + _nonzero_step(rng, ocf_prev, ocf_sign, 0.02, 0.6)

    assets_prev = round(revenue_prev * rng.uniform(0.6, 2.5))
    assets_cur = assets_prev + _nonzero_step(rng, assets_prev, rng.choice((-1, 1)), 0.01, 0.25)
    liabilities_prev = round(assets_prev * rng.uniform(0.3, 0.8))
    liabilities_cur = round(assets_cur * min(0.95, liabilities_prev / assets_prev * rng.uniform(0.9, 1.1)))

    return {
        "Revenue": _pair(revenue_prev, revenue_cur),
        "Cost of revenue": _pair(cost_prev, cost_cur),
        "Gross profit": _pair(gross_prev, gross_cur),
        "Operating income": _pair(operating_prev, operating_cur),
        NET_INCOME: _pair(net_prev, net_cur),
        "Total assets": _pair(assets_prev, assets_cur),
        "Total liabilities": _pair(liabilities_prev, liabilities_cur),
        "Shareholders' equity": _pair(assets_prev - liabilities_prev, assets_cur - liabilities_cur),
        OPERATING_CASH_FLOW: _pair(ocf_prev, ocf_cur),
    }


def _draw_layout(rng: random.Random) -> list[tuple[str, list[str]]]:
    """Section order and line order inside each section, both shuffled."""
    sections = [(title, list(items)) for title, items in SECTIONS.items()]
    rng.shuffle(sections)
    for _, items in sections:
        rng.shuffle(items)
    return sections


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _render_markdown(numbers, current_year: int, previous_year: int, sections) -> list[str]:
    """One pipe table per section: ``| Net income | +44 | 195 | 151 |``."""
    header = _markdown_row(["Item", "Change", str(current_year), str(previous_year)])
    lines = []
    for title, items in sections:
        lines += [title, header, "|---|---|---|---|"]
        lines += [_markdown_row([item, format_change(numbers[item]["change"]),
                                 format_thousands(numbers[item]["current"]),
                                 format_thousands(numbers[item]["previous"])]) for item in items]
    return lines


ALIGNED_GAP = 3  # spaces at least between two columns of an aligned table
ALIGNED_INDENT = 2  # line items are indented under their section title


def _render_aligned(numbers, current_year: int, previous_year: int, sections) -> list[str]:
    """A space-aligned text table (10-K style): one header line with the years, a rule of
    dashes under each number column, section titles flush left, line items indented,
    numbers right-aligned; the column widths fit this statement's numbers."""
    items = [item for _, section_items in sections for item in section_items]
    rows = {item: [format_change(numbers[item]["change"]), format_thousands(numbers[item]["current"]),
                   format_thousands(numbers[item]["previous"])] for item in items}
    header = ["Change", str(current_year), str(previous_year)]
    widths = [max([len(header[c])] + [len(cells[c]) for cells in rows.values()]) for c in range(3)]
    label_width = max(len(title) for title, _ in sections)
    label_width = max([label_width] + [ALIGNED_INDENT + len(item) for item in items])
    gap = " " * ALIGNED_GAP

    def row(label: str, cells: list[str]) -> str:
        return label.ljust(label_width) + "".join(gap + cell.rjust(width) for cell, width in zip(cells, widths))

    lines = [row("", header), row("", ["-" * width for width in widths])]
    for title, section_items in sections:
        lines.append(title)
        lines += [row(" " * ALIGNED_INDENT + item, rows[item]) for item in section_items]
    return lines


def render(numbers: dict[str, dict[str, int]], current_year: int, previous_year: int,
           layout: list[tuple[str, list[str]]], question: str = DEFAULT_QUESTION, style: str = "line") -> str:
    """The statement text for given numbers and section/line order (ends with the question line).

    ``style``: one of ``LAYOUTS`` (how the lines are written).
    """
    lines = [TITLE]
    if style == "line":
        for title, items in layout:
            lines.append(title)
            lines.extend(format_line(item, numbers[item], current_year, previous_year) for item in items)
    elif style == "markdown":
        lines += _render_markdown(numbers, current_year, previous_year, layout)
    elif style == "aligned":
        lines += _render_aligned(numbers, current_year, previous_year, layout)
    else:
        from finwidget.errors import InputError

        raise InputError(f"unknown statement layout {style!r}; use one of {LAYOUTS}")
    lines.append(question)
    return "\n".join(lines)


def _make_statement(numbers, current_year, layout, style: str = "line", rule: str = BOTH_RULE) -> Statement:
    previous_year = current_year - 1
    return Statement(
        text=render(numbers, current_year, previous_year, layout, style=style),
        label=label_for(numbers, rule),
        numbers=numbers,
        current_year=current_year,
        previous_year=previous_year,
        line_order=tuple(item for _, items in layout for item in items),
        layout=style,
        rule=rule,
    )


def _keep_some_distractors(rng: random.Random, numbers, layout, distractors: int):
    """Show only ``distractors`` randomly chosen distractor items (and both rule items)."""
    others = [item for item in LINE_ITEMS if item not in RULE_ITEMS]
    shown = set(RULE_ITEMS) | set(rng.sample(others, min(distractors, len(others))))
    layout = [(title, [item for item in items if item in shown]) for title, items in layout]
    layout = [(title, items) for title, items in layout if items]
    return {item: values for item, values in numbers.items() if item in shown}, layout


def _draw_statement(rng: random.Random, rule_signs: tuple[int, int], distractors: int | None = None,
                    style: str = "line", rule: str = BOTH_RULE) -> Statement:
    current_year = rng.randint(FIRST_YEAR, LAST_YEAR)
    numbers = _draw_numbers(rng, rule_signs)
    layout = _draw_layout(rng)
    if distractors is not None:
        numbers, layout = _keep_some_distractors(rng, numbers, layout, distractors)
    return _make_statement(numbers, current_year, layout, style, rule)


def _draw_rule_signs(rng: random.Random, rule: str) -> tuple[int, int]:
    """Signs of (net income, operating cash flow) changes; labels balanced under ``rule``.

    ``"both"``: (+, +) with probability 1/2, otherwise one of the three failing patterns.
    ``"net_income_only"``: the two signs independent and even, so net income alone gives
    the label and operating cash flow says nothing about it.
    """
    if rule == NET_INCOME_ONLY_RULE:
        return rng.choice((-1, 1)), rng.choice((-1, 1))
    if rng.random() < 0.5:
        return (1, 1)
    return rng.choice(_DECREASE_PATTERNS)


def _layout_chooser(layout: str, seed: int):
    """A function giving each next statement's layout.

    For ``"mixed"`` the layouts come from their own random stream (seeded from
    ``seed``), so statement i has the same numbers, years and line order in every
    layout: ``make_statements(n, s, layout="mixed")[i]`` is
    ``make_statements(n, s, layout=L)[i]`` for its drawn layout ``L``.
    """
    from finwidget.errors import InputError

    if layout in LAYOUTS:
        return lambda: layout
    if layout == MIXED:
        layout_rng = random.Random(f"finwidget-demo-layout-{seed}")
        return lambda: layout_rng.choice(LAYOUTS)
    raise InputError(f"layout must be one of {LAYOUTS + (MIXED,)}, got {layout!r}")


def _check_count_and_seed(n, seed) -> None:
    from finwidget.errors import InputError

    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise InputError(f"n must be a non-negative int, got {n!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError(f"seed must be an int, got {seed!r}")


def make_statements(n: int, seed: int = 0, distractors: int | None = None, layout: str = "line",
                    rule: str = BOTH_RULE) -> list[Statement]:
    """``n`` synthetic statements, deterministic from ``seed``, labels balanced.

    Each statement is "increase" with probability 1/2; a "decrease" statement has net
    income falling, operating cash flow falling, or both (1/3 each).

    ``rule``: which rule gives the labels (a key of ``RULES``). ``"both"`` (the default)
    is the planted rule above. ``"net_income_only"``: increase iff net income's change
    is positive; the signs of net income's and operating cash flow's changes are drawn
    independently (1/2 each), so operating cash flow is one more distractor (the
    fine-tuned demo variant's rule, ``finwidget.demo.finetune``).

    ``distractors``: show only this many of the seven distractor line items (chosen at
    random per statement; a training curriculum uses shorter statements first). The
    default, None, shows every line item.

    ``layout``: ``"line"`` (the default), ``"markdown"``, ``"aligned"`` or ``"mixed"``
    (one of the three per statement, at random). The layout changes only how the text
    is written: for a given seed, statement i has the same numbers, years, line order
    and label in every layout, and the default gives the same statements as before
    layouts existed.
    """
    _check_count_and_seed(n, seed)
    _check_rule(rule)
    next_layout = _layout_chooser(layout, seed)
    if distractors is not None and (not isinstance(distractors, int) or isinstance(distractors, bool)
                                    or distractors < 0):
        from finwidget.errors import InputError

        raise InputError(f"distractors must be None or a non-negative int, got {distractors!r}")
    rng = random.Random(seed)
    statements = []
    for _ in range(n):
        signs = _draw_rule_signs(rng, rule)
        statements.append(_draw_statement(rng, signs, distractors, style=next_layout(), rule=rule))
    return statements


def swap_years(numbers: dict[str, dict[str, int]], item: str) -> dict[str, dict[str, int]]:
    """A copy of ``numbers`` with ``item``'s two yearly values swapped (its change negated)."""
    swapped = {name: dict(values) for name, values in numbers.items()}
    values = swapped[item]
    swapped[item] = _pair(previous=values["current"], current=values["previous"])
    return swapped


def make_statement_pairs(n: int, seed: int = 0) -> list[StatementPair]:
    """``n`` (clean, corrupted) pairs for activation patching, deterministic from ``seed``.

    The corrupted statement swaps the two yearly values of one rule item, so that
    item's change flips sign and the label flips; the texts differ only inside that
    line (the sign character and the order of two numbers) and have the same number
    of tokens. Half of the clean statements are "increase" (one rule item, chosen at
    random, is flipped to make the corrupted one "decrease"); the other half are
    "decrease" with exactly one falling rule item (flipped to make "increase").
    """
    _check_count_and_seed(n, seed)
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        if rng.random() < 0.5:
            signs = (1, 1)
            flip = rng.randrange(2)
        else:
            signs = rng.choice(_DECREASE_PATTERNS[:2])
            flip = signs.index(-1)
        current_year = rng.randint(FIRST_YEAR, LAST_YEAR)
        numbers = _draw_numbers(rng, signs)
        layout = _draw_layout(rng)
        item = RULE_ITEMS[flip]
        clean = _make_statement(numbers, current_year, layout)
        corrupted = _make_statement(swap_years(numbers, item), current_year, layout)
        pairs.append(StatementPair(clean=clean, corrupted=corrupted))
    return pairs
