"""The statement's numbers read from its characters alone, for editing (no tokenizer).

``read_numbers(text)`` runs the reader's character stages (``structure.py``,
``pieces.py``, ``rows.py``) with one pseudo-token per piece, so every number piece is
its own unit, and returns:

- ``NumberSlot``: every number as written (``"+44"``, ``"$(1,234.5)"``, ``"2012"``) with
  its written value (a ``Decimal``, no table scale applied: ``"1.2 million"`` is 1.2),
  its line item, its year and its role: ``"value"`` (an amount of a year column),
  ``"change"`` (a change column: after the word "change", under a "Change" header, or
  an unlabeled amount equal to current - previous), ``"percent_change"`` (an unlabeled
  ``%`` amount equal to the change in percent of the previous year), ``"year"``, or
  ``"other"`` (prose numbers, unlabeled cells).
- ``ItemRow``: a line item's name span and its number slots by year.
"""

from __future__ import annotations

import bisect
import functools
import re
from dataclasses import dataclass, field
from decimal import Decimal

from finwidget.statement.lexicon import Lexicon
from finwidget.statement.number_format import decimals_of
from finwidget.statement.numbers import parse_cluster
from finwidget.statement.periods import find_periods
from finwidget.statement.pieces import scan_pieces
from finwidget.statement.rows import RowReader, bare
from finwidget.statement.structure import find_structure
from finwidget.statement.units import units_from_tokens

SLOT_ROLES = ("value", "change", "percent_change", "year", "other")
_DIGITS = re.compile(r"\d(?:[\d.,]*\d)?|\.\d+")
_MINUS = ("-", "\u2212", "\u2013")
_CHANGE_WORDS = frozenset(["change", "chg", "yoy", "variance", "increase", "decrease"])


@dataclass(frozen=True)
class NumberSlot:
    """One number as written: ``text[start:end]`` (sign, currency, brackets, digits, ``%``, scale word).

    value: the written amount (``"(1,234.5)"`` -> ``Decimal("-1234.5")``), None for a nil
        dash or digits the number locale cannot read.
    item: the line item the number belongs to, or None (prose, headers).
    year: the year column of an amount, the year itself for a year, else None.
    role: one of ``SLOT_ROLES``.
    line: 0-based line of the number.
    brackets_outside: a negative written with its brackets split from the digits by table
        markup (EDGAR's ``<td>(565</td><td>)</td>``): ``text`` is the digits only.
    """

    index: int
    start: int
    end: int
    text: str
    value: Decimal | None
    item: str | None
    year: int | None
    role: str
    line: int
    unit: str | None = None
    brackets_outside: bool = False


@dataclass
class ItemRow:
    """A line item: its name's characters and its numbers.

    values: year -> slot index of the amount in that year's column.
    change, percent_change: slot index of the change (and percent change) column, or None.
    others: slot indices of the row's other amounts.
    """

    name: str
    name_start: int
    name_end: int
    line: int
    values: dict[int, int] = field(default_factory=dict)
    change: int | None = None
    percent_change: int | None = None
    others: list[int] = field(default_factory=list)

    @property
    def years(self) -> list[int]:
        """The row's years, most recent first."""
        return sorted(self.values, reverse=True)


@dataclass
class NumberReading:
    """What ``read_numbers`` found: every number slot (text order) and every line item (text order)."""

    text: str
    slots: list[NumberSlot]
    items: list[ItemRow]
    number_locale: str

    def item(self, name: str) -> ItemRow | None:
        """The first line item called ``name`` (case and spaces ignored), or None."""
        wanted = _normal_name(name)
        for row in self.items:
            if _normal_name(row.name) == wanted:
                return row
        return None

    @property
    def item_names(self) -> list[str]:
        return [row.name for row in self.items]

    def slots_in(self, start: int, end: int) -> list[NumberSlot]:
        """Slots overlapping the characters ``[start, end)``."""
        return [s for s in self.slots if s.start < end and start < s.end]


def _normal_name(name: str) -> str:
    return " ".join(str(name).replace("\u2019", "'").split()).lower()


def written_value(written: str, number_locale: str = "en") -> Decimal | None:
    """The amount a number writes, without any scale word (``"$(1,234.5) million"`` -> -1234.5)."""
    digits = _DIGITS.search(written)
    if digits is None:
        return None
    amount = parse_cluster(digits.group(), number_locale)
    if amount is None:
        return None
    before, after = written[:digits.start()], written[digits.end():]
    negative = ("(" in before and ")" in after) or any(c in before for c in _MINUS)
    return -amount if negative and amount != 0 else amount


def read_numbers(text: str, number_locale: str = "en", lexicon: Lexicon | None = None) -> NumberReading:
    """Read ``text``'s numbers, line items and year columns (see the module docstring).

    With the default lexicon the last 32 readings are kept (a sweep edits one statement many
    times); a ``NumberReading`` is never modified after it is made.
    """
    if lexicon is None:
        return _read_default(text, number_locale)
    return _read_numbers(text, number_locale, lexicon)


@functools.lru_cache(maxsize=32)
def _read_default(text: str, number_locale: str) -> NumberReading:
    return _read_numbers(text, number_locale, None)


def _read_numbers(text: str, number_locale: str, lexicon: Lexicon | None) -> NumberReading:
    structure = find_structure(text)
    pieces = scan_pieces(text, structure.markup, number_locale, whole=sorted(structure.dash_entities))
    offsets = [(p.start, p.end) for p in pieces]
    units = units_from_tokens(text, [1] * len(offsets), offsets, set(), pieces)
    line_starts = [0] + [m.end() for m in re.finditer(r"\r\n|\n|\r", text)]
    for unit in units:
        unit.line = bisect.bisect_right(line_starts, unit.char_start) - 1
    reading = list(text)
    for start, end in structure.markup:
        reading[start:end] = " " * (end - start)
    reader = RowReader(text, structure, units, find_periods("".join(reading)), line_starts,
                       lexicon or Lexicon.default())
    units, line_items, header_years = reader.read()

    slots: list[NumberSlot] = []
    slot_of_unit: dict[int, int] = {}
    for unit in units:
        if unit.kind != "number" or unit.number is None:
            continue
        piece = unit.number
        start, end = (unit.char_start, unit.char_end) if unit.nil else (piece.start, piece.end)
        written = text[start:end]
        if unit.is_year:
            role, value = "year", Decimal(int(unit.year)) if unit.year is not None else None
        elif unit.date_part:
            role, value = "other", written_value(written, number_locale)
        else:
            role = "value" if unit.year is not None and unit.line_item is not None else "other"
            value = Decimal(0) if unit.nil else written_value(written, number_locale)
        # EDGAR's "<td>(565</td><td>)</td>": the reader made it negative from brackets outside the number
        outside = (value is not None and value > 0 and unit.value is not None and unit.value < 0
                   and not unit.nil and role != "year")
        if outside:
            value = -value
        slot_of_unit[id(unit)] = len(slots)
        slots.append(NumberSlot(len(slots), start, end, written, value, unit.line_item, unit.year, role,
                                unit.line, unit.unit_symbol, outside))

    header_cells = _header_change_columns(text, line_starts, header_years, reader)
    items: list[ItemRow] = []
    for name, values in line_items:
        row = ItemRow(name.line_item or name.text, name.char_start, name.char_end, name.line)
        for unit in values:
            k = slot_of_unit.get(id(unit))
            if k is None:
                continue
            slot = slots[k]
            if slot.role == "value" and slot.year is not None and slot.year not in row.values:
                row.values[slot.year] = k
            elif slot.role in ("value", "other"):
                row.others.append(k)
        _find_change_columns(text, row, slots, header_cells, line_starts, number_locale)
        items.append(row)
    return NumberReading(text, slots, items, number_locale)


def _header_change_columns(text, line_starts, header_years, reader) -> list[tuple[int, int, int]]:
    """``(line, char column start, char column end)`` of header cells that name a change column."""
    found = []
    for row in reader.rows:
        line = bisect.bisect_right(line_starts, row.start) - 1
        cells = [text[c.start:c.end] for c in row.cells]
        if not any(bare(cell) in _CHANGE_WORDS or "change" in cell.lower() for cell in cells):
            continue
        if line not in header_years and not any(re.fullmatch(r"\s*(?:19|20)\d{2}\s*", c) for c in cells):
            # a header row without years ("| Item | Change | 2012 | 2011 |" has them)
            continue
        for cell in row.cells:
            if "change" in text[cell.start:cell.end].lower() or bare(text[cell.start:cell.end]) in _CHANGE_WORDS:
                found.append((line, cell.start - line_starts[line], cell.end - line_starts[line]))
    return found


def _find_change_columns(text, row: ItemRow, slots, header_cells, line_starts, number_locale) -> None:
    """Mark the row's change (and percent change) slot among its unlabeled amounts."""
    years = row.years
    current = slots[row.values[years[0]]].value if years else None
    previous = slots[row.values[years[1]]].value if len(years) > 1 else None
    line_start = line_starts[row.line]
    for k in list(row.others):
        slot = slots[k]
        written_after_word = _after_change_word(text, row, slot)
        under_header = any(
            line < row.line and not (slot.end - line_start <= c_start or slot.start - line_start >= c_end)
            and _same_table(text, line_starts, line, row.line)
            for line, c_start, c_end in header_cells
        )
        is_percent = slot.unit == "%"
        difference = None
        if current is not None and previous is not None:
            difference = current - previous
        if is_percent:
            if row.percent_change is None and difference is not None and previous and slot.value is not None and (
                    written_after_word or under_header
                    or _close(slot.value, difference / abs(previous) * 100, decimals_of(slot.text, number_locale))):
                row.percent_change = k
        elif row.change is None and (written_after_word or under_header or (
                difference is not None and slot.value is not None and _close(slot.value, difference,
                                                                             decimals_of(slot.text, number_locale)))):
            row.change = k
    for k in (row.change, row.percent_change):
        if k is not None:
            row.others.remove(k)
            slot = slots[k]
            role = "change" if k == row.change else "percent_change"
            slots[k] = NumberSlot(slot.index, slot.start, slot.end, slot.text, slot.value, slot.item, None, role,
                                  slot.line, slot.unit, slot.brackets_outside)


def _after_change_word(text: str, row: ItemRow, slot: NumberSlot) -> bool:
    """``"Net income: change +44"``: the words between the name (or a previous number) and the slot."""
    between = text[row.name_end:slot.start]
    last = re.split(r"[|\d]", between)[-1]
    return any(bare(word) in ("change", "chg", "yoy") for word in last.split())


def _same_table(text: str, line_starts, header_line: int, line: int) -> bool:
    """No blank line between the header's line and the row's line."""
    start = line_starts[header_line]
    end = line_starts[line]
    return "\n\n" not in text[start:end].replace("\r", "")


def _close(written: Decimal, exact: Decimal, decimals: int) -> bool:
    """``written`` is ``exact`` rounded to ``decimals`` places (half a unit of the last place)."""
    return abs(written - exact) <= Decimal(1).scaleb(-decimals) / 2 + Decimal("1e-12")
