"""Counterfactual statements: the same statement with some numbers changed, written consistently.

An edit is a small frozen value; ``counterfactual(statement, edits)`` applies a list of
them and returns a :class:`CounterfactualStatement` with the edited text, what changed
and a span alignment to the original::

    from finwidget.statement.edits import SetValue, FlipChange, counterfactual
    cf = counterfactual(statement, [SetValue("Net income", -900)])      # current year
    cf.text                        # "... Net income: change -1,051 | 2012: -900 | 2011: 151 ..."
    cf.changes                     # every replaced character range, old -> new text
    cf.alignment                   # original spans -> edited spans (line items, numbers, text)

Edits:

- ``SetNumber(span, value)``: the number written at characters ``[start, end)`` (what a
  double-click on a number gives); the span may cover the number or lie inside it.
- ``SetValue(item, value, year=None)``: a line item's amount in a year (None: its most
  recent year).
- ``SetChange(item, change, year=None)``: the change from the year before ``year``
  (default the most recent): the amount of ``year`` becomes previous + change.
- ``Scale(factor, item=None)``: every amount of one item, or of every line item when
  None (years, percentages, multiples untouched); rounded to the decimals written.
- ``FlipChange(item)``: current = previous - change (the change changes sign).
- ``SwapYears(item=None)``: the two most recent years' amounts swapped (every item when None).

Values are amounts *as written*: in a table "(in thousands)" the amount ``1,250`` is
``1250``, the scale note is not applied (and a number's own scale word stays:
``SetNumber`` on ``"$1.2 billion"`` with ``1.5`` writes ``"$1.5 billion"``). A value may
be a number or the text a user typed (``"1,250"``, ``"(300)"``, ``"-3.5"``).

How numbers are written: in the style of the number they replace (currency, thousands
separators, decimals, brackets or minus for negatives, ``%`` and scale words kept). A
positive change gets a ``+`` when the statement writes one on its positive changes (when it
has none, when its negatives use a minus rather than brackets). A 3-digit number that grows to 4 digits gets a
thousands separator when the statement groups thousands elsewhere. Decimals: the
original's, or more when the new value needs them (up to 6).

Consistency: when a year's amount changes and the row has a change column (the demo's
``change +44``, a "Change" column, an unlabeled amount equal to current - previous) the
change is recomputed (``recompute_change=True``); a percent change column is recomputed
the same way. ``totals={"Gross profit": ("Revenue", "-Cost of revenue")}`` recomputes a
total in every year where one of its parts changed (``DEMO_TOTALS`` holds the demo
statements' relations). A number an edit sets itself is never recomputed.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from finwidget.errors import InputError
from finwidget.statement.edit_reading import NumberReading, NumberSlot, read_numbers
from finwidget.statement.number_format import (
    NumberStyle,
    StatementStyle,
    decimals_needed,
    decimals_of,
    parse_typed_value,
)
from finwidget.statement.numbers import check_locale
from finwidget.statement.span_alignment import SpanAlignment, build_span_alignment

#: The demo statements' accounting relations (``finwidget.demo``): total -> signed parts.
DEMO_TOTALS: dict[str, tuple[str, ...]] = {
    "Gross profit": ("Revenue", "-Cost of revenue"),
    "Shareholders' equity": ("Total assets", "-Total liabilities"),
}


# ---------------------------------------------------------------- the edits
@dataclass(frozen=True)
class SetNumber:
    """Replace the number written at characters ``span = (start, end)`` of the statement by ``value``."""

    span: tuple[int, int]
    value: object


@dataclass(frozen=True)
class SetValue:
    """Set ``item``'s amount in ``year`` (None: the item's most recent year) to ``value``."""

    item: str
    value: object
    year: int | None = None


@dataclass(frozen=True)
class SetChange:
    """Make ``item``'s change into ``year`` (None: its most recent year) equal ``change``:
    the amount of ``year`` becomes the previous year's amount + ``change``."""

    item: str
    change: object
    year: int | None = None


@dataclass(frozen=True)
class Scale:
    """Multiply every amount of ``item`` (every line item when None) by ``factor``."""

    factor: float
    item: str | None = None


@dataclass(frozen=True)
class FlipChange:
    """``item``'s change changes sign: current = previous - change (the previous year stays)."""

    item: str


@dataclass(frozen=True)
class SwapYears:
    """Swap ``item``'s two most recent yearly amounts (every line item's when None)."""

    item: str | None = None


EDIT_TYPES = (SetNumber, SetValue, SetChange, Scale, FlipChange, SwapYears)


# ---------------------------------------------------------------- the result
@dataclass(frozen=True)
class TextChange:
    """One replaced character range: ``original[original_start:original_end] == old`` became
    ``text[edited_start:edited_end] == new``.

    item, year: the line item and year column of the number (None when not in a row / not a year).
    role: ``"value"``, ``"change"``, ``"percent_change"`` or ``"other"``.
    cause: ``"edit"`` (an edit set it), ``"change"`` (recomputed change) or ``"total"`` (recomputed total).
    """

    original_start: int
    original_end: int
    edited_start: int
    edited_end: int
    old: str
    new: str
    item: str | None
    year: int | None
    role: str
    cause: str


@dataclass(frozen=True)
class CounterfactualStatement:
    """A statement with edited numbers.

    original: the original text. text: the edited text.
    edits: the edits applied, in order.
    changes: every replaced range (``TextChange``), in text order.
    alignment: ``SpanAlignment`` from the original's spans to the edited text's.
    original_values, edited_values: ``{item: {year: float, "change": float}}`` as written
        (the change only where the row has a change column).
    item, kind: tags set by ``counterfactual_family`` (else None).
    number_locale: the number locale the statement was read with.
    """

    original: str
    text: str
    edits: tuple
    changes: tuple[TextChange, ...]
    alignment: SpanAlignment
    original_values: dict = field(default_factory=dict)
    edited_values: dict = field(default_factory=dict)
    item: str | None = None
    kind: str | None = None
    number_locale: str = "en"

    def __hash__(self) -> int:  # the value dicts are not hashable; the texts and edits determine the rest
        return hash((self.original, self.text, self.edits, self.item, self.kind))

    def token_alignment(self, tokenizer, task=None, *, add_special_tokens: bool | None = None):
        """Token positions of the original prompt -> the edited prompt (see ``align_tokens``)."""
        from finwidget.statement.token_alignment import align_tokens

        return align_tokens(self, tokenizer, task=task, add_special_tokens=add_special_tokens)

    def value(self, item: str, year: int | str | None = None, *, edited: bool = True) -> float | None:
        """``item``'s amount in ``year`` (None: most recent; ``"change"``: its change column)."""
        values = self.edited_values if edited else self.original_values
        row = values.get(item)
        if row is None:
            raise InputError(f"no line item named {item!r}; the statement has: {_names(list(values))}")
        if year is None:
            years = sorted((y for y in row if isinstance(y, int)), reverse=True)
            year = years[0] if years else None
        return row.get(year)

    def __repr__(self) -> str:
        shown = "; ".join(f"{c.old!r}->{c.new!r}" for c in self.changes[:4])
        more = f" (+{len(self.changes) - 4})" if len(self.changes) > 4 else ""
        return f"CounterfactualStatement({len(self.edits)} edit(s): {shown}{more})"


# ---------------------------------------------------------------- applying
def _text_of(statement) -> str:
    text = statement if isinstance(statement, str) else getattr(statement, "text", None)
    if not isinstance(text, str):
        raise InputError(f"statement must be the statement's text or an object with .text, got {type(statement).__name__}")
    if not text.strip():
        raise InputError("the statement is empty (or only whitespace); pass the statement's text")
    return text


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:20])
    return (shown + (f", ... ({len(names)} in all)" if len(names) > 20 else "")) or "(no line items found)"


class _Editor:
    """Collects the new written value of each number slot, edit by edit."""

    def __init__(self, reading: NumberReading, number_locale: str):
        self.reading = reading
        self.locale = number_locale
        self.assigned: dict[int, tuple[Decimal, object, int | None]] = {}  # slot -> (value, edit, decimals)
        self.cause: dict[int, str] = {}

    # -- lookups
    def row(self, name):
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"a line item must be named by a non-empty str, got {name!r}")
        row = self.reading.item(name)
        if row is None:
            raise InputError(f"no line item named {name!r}; the statement has: {_names(self.reading.item_names)}")
        return row

    def year_slot(self, row, year, edit) -> int:
        if not row.values:
            raise InputError(f"{edit!r}: line item {row.name!r} has no amounts by year in this statement")
        if year is None:
            return row.values[row.years[0]]
        if isinstance(year, bool) or not isinstance(year, numbers.Integral):
            raise InputError(f"{edit!r}: year must be an int (such as {row.years[0]}) or None, got {year!r}")
        year = int(year)
        if year not in row.values:
            raise InputError(f"{edit!r}: line item {row.name!r} has no amount for {year}; its years are "
                             f"{', '.join(str(y) for y in row.years)}")
        return row.values[year]

    def two_years(self, row, edit, year=None) -> tuple[int, int]:
        years = row.years
        if year is not None:
            self.year_slot(row, year, edit)
            years = [y for y in years if y <= int(year)]
        if len(years) < 2:
            raise InputError(f"{edit!r}: line item {row.name!r} needs two years to compare, it has "
                             f"{', '.join(str(y) for y in row.years) or 'none'}")
        return row.values[years[0]], row.values[years[1]]

    def current(self, slot: int) -> Decimal:
        if slot in self.assigned:
            return self.assigned[slot][0]
        value = self.reading.slots[slot].value
        if value is None:
            written = self.reading.slots[slot].text
            raise InputError(f"the number {written!r} cannot be read with number_locale={self.locale!r}, so it "
                             "cannot be edited or used in a recomputation")
        return value

    # -- setting
    def set(self, slot: int, value: Decimal, edit, decimals: int | None = None) -> None:
        if slot in self.assigned:
            other = self.assigned[slot][1]
            written = self.reading.slots[slot].text
            raise InputError(f"edits collide: {other!r} and {edit!r} both set the number {written!r} "
                             f"(characters {self.reading.slots[slot].start}-{self.reading.slots[slot].end})")
        self.assigned[slot] = (value, edit, decimals)
        self.cause[slot] = "edit"

    def apply(self, edit) -> None:
        if isinstance(edit, SetNumber):
            self._set_number(edit)
        elif isinstance(edit, SetValue):
            row = self.row(edit.item)
            self.set(self.year_slot(row, edit.year, edit), parse_typed_value(edit.value, self.locale, "value"), edit)
        elif isinstance(edit, SetChange):
            row = self.row(edit.item)
            current, previous = self.two_years(row, edit, edit.year)
            change = parse_typed_value(edit.change, self.locale, "change")
            self.set(current, self.current(previous) + change, edit)
        elif isinstance(edit, FlipChange):
            row = self.row(edit.item)
            current, previous = self.two_years(row, edit)
            self.set(current, 2 * self.current(previous) - self.current(current), edit)
        elif isinstance(edit, SwapYears):
            rows = [self.row(edit.item)] if edit.item is not None else [r for r in self.reading.items
                                                                         if len(r.values) >= 2]
            if edit.item is None and not rows:
                raise InputError(f"{edit!r}: no line item of this statement has two years")
            for row in rows:
                current, previous = self.two_years(row, edit)
                a, b = self.current(current), self.current(previous)
                self.set(current, b, edit, decimals_of(self.reading.slots[previous].text, self.locale))
                self.set(previous, a, edit, decimals_of(self.reading.slots[current].text, self.locale))
        elif isinstance(edit, Scale):
            self._scale(edit)
        else:
            raise InputError(f"unknown edit {edit!r}; use one of {', '.join(t.__name__ for t in EDIT_TYPES)}")

    def _set_number(self, edit: SetNumber) -> None:
        span = edit.span
        if (not isinstance(span, (tuple, list)) or len(span) != 2
                or not all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in span)):
            raise InputError(f"{edit!r}: span must be (start, end) character positions, got {span!r}")
        start, end = int(span[0]), int(span[1])
        size = len(self.reading.text)
        if not 0 <= start < end <= size:
            raise InputError(f"{edit!r}: span {tuple(span)} is outside the statement's {size} characters "
                             "(or empty); pass (start, end) with 0 <= start < end")
        hits = [s for s in self.reading.slots_in(start, end) if s.role != "year"]
        years = [s for s in self.reading.slots_in(start, end) if s.role == "year"]
        if not hits:
            what = f" (it is the year {years[0].text!r}; years are not edited)" if years else ""
            raise InputError(f"{edit!r}: characters {start}-{end} ({self.reading.text[start:end]!r}) are not a "
                             f"number of the statement{what}")
        if len(hits) > 1:
            raise InputError(f"{edit!r}: characters {start}-{end} cover {len(hits)} numbers "
                             f"({', '.join(repr(s.text) for s in hits)}); select one")
        self.set(hits[0].index, parse_typed_value(edit.value, self.locale, "value"), edit)

    def _scale(self, edit: Scale) -> None:
        import math

        factor = edit.factor
        if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not math.isfinite(float(factor)):
            raise InputError(f"{edit!r}: factor must be a finite number, got {factor!r}")
        rows = [self.row(edit.item)] if edit.item is not None else self.reading.items
        multiplier = Decimal(repr(float(factor))) if not isinstance(factor, numbers.Integral) else Decimal(int(factor))
        for row in rows:
            targets = list(row.values.values()) + [k for k in row.others
                                                   if self.reading.slots[k].unit not in ("%", "x", "bps")]
            if row.change is not None and not self.recompute_change:
                targets.append(row.change)
            for slot in targets:
                if self.reading.slots[slot].value is None:
                    continue
                places = decimals_of(self.reading.slots[slot].text, self.locale)
                scaled = (self.current(slot) * multiplier).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
                self.set(slot, scaled, edit, places)

    recompute_change = True

    # -- consistency
    def recompute_totals(self, totals) -> None:
        for total, parts in totals.items():
            total_row = self.row(total)
            signed = []
            for part in parts:
                if not isinstance(part, str) or not part.strip():
                    raise InputError(f"totals[{total!r}] parts must be item names (with a leading '-' to subtract), "
                                     f"got {part!r}")
                sign = -1 if part.strip().startswith("-") else 1
                signed.append((sign, self.row(part.strip().lstrip("+-").strip())))
            for year, slot in total_row.values.items():
                part_slots = [(sign, row.values.get(year)) for sign, row in signed]
                if any(k is None for _, k in part_slots):
                    continue
                if not any(k in self.assigned for _, k in part_slots):
                    continue
                if slot in self.assigned and self.cause[slot] == "edit":
                    raise InputError(f"edits collide: {self.assigned[slot][1]!r} sets {total!r} in {year}, which "
                                     f"totals= recomputes from {', '.join(parts)}; drop one of the two")
                value = sum((sign * self.current(k) for sign, k in part_slots), Decimal(0))
                self.assigned[slot] = (value, "totals", None)
                self.cause[slot] = "total"

    def recompute_changes(self) -> None:
        for row in self.reading.items:
            if len(row.values) < 2:
                continue
            current, previous = row.values[row.years[0]], row.values[row.years[1]]
            if current not in self.assigned and previous not in self.assigned:
                continue
            a, b = self.current(current), self.current(previous)
            if row.change is not None and row.change not in self.assigned:
                places = max(decimals_of(self.reading.slots[row.change].text, self.locale),
                             decimals_needed(a), decimals_needed(b))
                self.assigned[row.change] = (a - b, "change", places)
                self.cause[row.change] = "change"
            k = row.percent_change
            if k is not None and k not in self.assigned and b != 0:
                places = decimals_of(self.reading.slots[k].text, self.locale)
                self.assigned[k] = ((a - b) / abs(b) * 100, "change", places)
                self.cause[k] = "change"


def counterfactual(statement, edits, *, recompute_change: bool = True, totals: dict | None = None,
                   number_locale: str = "en") -> CounterfactualStatement:
    """The statement with ``edits`` applied, written consistently (see the module docstring).

    Args:
        statement: the statement's text, or an object with ``.text`` (a demo ``Statement``).
        edits: one edit or a list of them (``SetNumber``, ``SetValue``, ``SetChange``,
            ``Scale``, ``FlipChange``, ``SwapYears``). Edits that set the same number collide.
        recompute_change: rewrite a row's change (and percent change) column when one of
            its years changes.
        totals: ``{total: (part, "-part", ...)}``; a total is rewritten in every year where a
            part changed. ``DEMO_TOTALS`` for the demo statements.
        number_locale: ``"en"``, ``"de"`` or ``"in"`` (how digits are grouped).

    Raises:
        InputError: an unknown line item (the items found are listed), a year the item does
            not have, a span that is not a number, a value that is not a finite number,
            edits that collide. The statement is never modified.
    """
    text = _text_of(statement)
    check_locale(number_locale)
    if isinstance(edits, EDIT_TYPES):
        edits = [edits]
    if isinstance(edits, (str, bytes)) or not isinstance(edits, Iterable):
        raise InputError(f"edits must be an edit or a list of edits, got {type(edits).__name__}")
    edits = tuple(edits)
    if not edits:
        raise InputError("no edits given; pass at least one (e.g. SetValue('Net income', 100))")
    if totals is not None and not isinstance(totals, dict):
        raise InputError(f"totals must be a dict total -> (parts...), got {type(totals).__name__}")
    reading = read_numbers(text, number_locale)
    editor = _Editor(reading, number_locale)
    editor.recompute_change = bool(recompute_change)
    for edit in edits:
        editor.apply(edit)
    if totals:
        editor.recompute_totals(totals)
    if recompute_change:
        editor.recompute_changes()
    return _write(reading, editor, edits, number_locale)


def _write(reading: NumberReading, editor: _Editor, edits, number_locale: str) -> CounterfactualStatement:
    text = reading.text
    statement_style = StatementStyle.of([f"({s.text})" if s.brackets_outside else s.text
                                         for s in reading.slots if s.role != "year"], number_locale)
    plus_changes = _change_plus(reading, statement_style)
    replacements = []
    for slot_index in sorted(editor.assigned, key=lambda k: reading.slots[k].start):
        slot: NumberSlot = reading.slots[slot_index]
        value, _, places = editor.assigned[slot_index]
        plus = True if slot.role in ("change", "percent_change") and plus_changes else None
        style = NumberStyle.of(slot.text, statement_style, plus=plus, number_locale=number_locale)
        if places is None:
            places = max(style.decimals, decimals_needed(value))
        if slot.brackets_outside:  # "(565" + ")" in the next cell: the digits only, the brackets stay
            if value >= 0:
                raise InputError(f"the number {slot.text!r} ({slot.item}) is a negative whose brackets sit in other "
                                 f"table cells; it can be set to another negative amount, not to {value}")
            value = -value
        new = style.write(value, places)
        replacements.append((slot, new, editor.cause[slot_index]))
    pieces, changes, ranges, numbers, cursor, shift = [], [], [], {}, 0, 0
    for slot, new, cause in replacements:
        pad_start, pad = _column_padding(text, slot, len(new))
        pieces.append(text[cursor:pad_start])
        pieces.append(pad + new)
        edited_start = pad_start + shift
        number_start = edited_start + len(pad)
        numbers[(slot.start, slot.end)] = (number_start, number_start + len(new))
        ranges.append((pad_start, slot.end, edited_start, number_start + len(new)))
        if new != slot.text:
            changes.append(TextChange(slot.start, slot.end, number_start, number_start + len(new), slot.text, new,
                                      slot.item, slot.year, slot.role if slot.role != "year" else "other", cause))
        shift += len(pad) + len(new) - (slot.end - pad_start)
        cursor = slot.end
    pieces.append(text[cursor:])
    edited = "".join(pieces)
    alignment = build_span_alignment(text, edited, reading, numbers, ranges)
    return CounterfactualStatement(
        original=text, text=edited, edits=tuple(edits), changes=tuple(changes), alignment=alignment,
        original_values=_values(reading, {}), edited_values=_values(reading, editor.assigned),
        number_locale=number_locale,
    )


def _change_plus(reading: NumberReading, statement_style: StatementStyle) -> bool:
    """Positive changes get a ``+`` when the statement writes one on a positive change; when no
    change is positive (nothing to learn from), when negatives are written with a minus."""
    changes = [reading.slots[r.change] for r in reading.items if r.change is not None]
    positive = [s for s in changes if s.value is not None and s.value > 0]
    if positive:
        return any("+" in s.text for s in positive)
    return statement_style.negative != "brackets"


def _column_padding(text: str, slot: NumberSlot, new_length: int) -> tuple[int, str]:
    """Where the replacement starts and the spaces it writes before the number.

    A number right-aligned in a space-aligned column (two or more spaces before it, and the
    line's end or two or more spaces after it) keeps its right edge: a longer number takes
    spaces from its left (at least two stay, so the columns stay apart), a shorter one
    adds them. Elsewhere the number is replaced alone.
    """
    pad_start = slot.start
    while pad_start > 0 and text[pad_start - 1] == " ":
        pad_start -= 1
    after = text[slot.end:slot.end + 2]
    in_column = slot.start - pad_start >= 2 and (after == "  " or after[:1] in ("", "\n", "\r"))
    if not in_column:
        return slot.start, ""
    width = slot.start - pad_start
    return pad_start, " " * max(2, width - (new_length - (slot.end - slot.start)))


def _values(reading: NumberReading, assigned) -> dict:
    out = {}
    for row in reading.items:
        values = {}
        for year, k in row.values.items():
            value = assigned[k][0] if k in assigned else reading.slots[k].value
            values[year] = None if value is None else float(value)
        if row.change is not None:
            value = assigned[row.change][0] if row.change in assigned else reading.slots[row.change].value
            values["change"] = None if value is None else float(value)
        out.setdefault(row.name, values)
    return out


# ---------------------------------------------------------------- families
#: Kinds of edit ``counterfactual_family`` makes per line item.
FAMILY_KINDS = ("flip_change", "swap_years", "scale")


def counterfactual_family(statement, items=None, kinds=FAMILY_KINDS, *, scale: float = 2.0,
                          recompute_change: bool = True, totals: dict | None = None,
                          number_locale: str = "en") -> list[CounterfactualStatement]:
    """One counterfactual per (line item, kind): every item perturbed one way at a time.

    Args:
        statement: text or an object with ``.text``.
        items: the line items to perturb (default: every line item with two years).
        kinds: from ``FAMILY_KINDS``: ``"flip_change"`` (``FlipChange``), ``"swap_years"``
            (``SwapYears``), ``"scale"`` (``Scale(scale, item)``).
        scale: the factor of the ``"scale"`` kind.
        recompute_change, totals, number_locale: as for ``counterfactual``.

    Returns:
        ``[CounterfactualStatement]`` in (item, kind) order, each with ``.item`` and ``.kind``
        set; ``family_frame`` turns them into a table.
    """
    text = _text_of(statement)
    check_locale(number_locale)
    if isinstance(kinds, str):
        kinds = (kinds,)
    unknown = [k for k in kinds if k not in FAMILY_KINDS]
    if unknown or not kinds:
        raise InputError(f"kinds must be some of {FAMILY_KINDS}, got {tuple(kinds)!r}")
    reading = read_numbers(text, number_locale)
    if items is None:
        items = [row.name for row in reading.items if len(row.values) >= 2]
    elif isinstance(items, str):
        items = [items]
    make = {"flip_change": FlipChange, "swap_years": SwapYears, "scale": lambda item: Scale(scale, item)}
    family = []
    for item in items:
        for kind in kinds:
            cf = counterfactual(text, [make[kind](item)], recompute_change=recompute_change, totals=totals,
                                number_locale=number_locale)
            family.append(_tagged(cf, item, kind))
    return family


def _tagged(cf: CounterfactualStatement, item: str, kind: str) -> CounterfactualStatement:
    from dataclasses import replace

    return replace(cf, item=item, kind=kind)


def family_frame(family: Sequence[CounterfactualStatement]):
    """One row per counterfactual: ``item, kind, current_before, current_after, change_before,
    change_after, n_changes, text`` (pandas DataFrame), for the population layer's statistics."""
    import pandas as pd

    rows = []
    for cf in family:
        if not isinstance(cf, CounterfactualStatement):
            raise InputError(f"family_frame takes CounterfactualStatements, got {type(cf).__name__}")
        item = cf.item
        before = cf.original_values.get(item, {}) if item else {}
        after = cf.edited_values.get(item, {}) if item else {}
        years = sorted((y for y in before if isinstance(y, int)), reverse=True)
        rows.append({
            "item": item, "kind": cf.kind,
            "current_before": before.get(years[0]) if years else None,
            "current_after": after.get(years[0]) if years else None,
            "change_before": before.get("change"), "change_after": after.get("change"),
            "n_changes": len(cf.changes), "text": cf.text,
        })
    return pd.DataFrame(rows, columns=["item", "kind", "current_before", "current_after", "change_before",
                                       "change_after", "n_changes", "text"])
