"""Rows of the statement read as a person reads them: headers, line items, years, scale.

Given the units (``units.py``) and where the rows and cells are (``structure.py``):

1. Years. A four-digit number 1900-2099 without separators is a year when it labels a
   value (``2022: 13,937``), follows a time word (``fiscal 2023``, ``in 2021``), or is
   part of a date or period ("December 31, 2023", "2023-12-31", "Q3 FY2023", "FY23").
2. Header rows: a row whose numbers are all years (and the parts of dates) is a header
   row: two or more years, or one with a time word, or one in a cell of a pipe, HTML
   or CSV table. Its years are the columns of the rows below it, until the next
   header row or the end of the table (prose with numbers, or another table form).
3. Line items: a row that starts with a name (words, with ``& - ' / , ( ) .`` inside)
   followed by numbers (in its other cells for pipe, HTML and CSV rows; with only column
   words such as "change" or "vs" between them otherwise) is a line item; its name
   words become one "line_item_name" span. A lone dash cell ("—", "–", "-", "$ —") of
   a table row is a nil amount (0). A footnote marker after the name ("(1)", "*") is
   punctuation.
4. Year columns: a number after a ``2022:`` label belongs to 2022; a number after the
   word "change" to no year; other numbers of a row take the header's columns: by
   cell when the row has as many cells as the header, else in order when the counts
   match, else (aligned text) by character column within 8 characters, else none.
5. Scale: a note such as "(in millions, except per share data)" multiplies the amounts
   of the table rows after it, except per-share rows, percentages, multiples, basis
   points and amounts that carry their own scale word.
6. Prose: a number takes a year only from its own clause ("from $3.7 billion in fiscal
   2022" -> 2022), or from a sentence's opening time phrase ("In fiscal 2023, ...")
   when no comparison word ("from", "compared", "prior", ...) comes before it;
   otherwise none.
"""

from __future__ import annotations

import bisect
import re
from decimal import Decimal
from itertools import pairwise

from finwidget.statement.lexicon import Lexicon
from finwidget.statement.periods import Period
from finwidget.statement.structure import TABLE_FORMS, Row, Structure
from finwidget.statement.units import Unit

#: Words after which a four-digit number is a year.
YEAR_CUES = frozenset(
    ["fiscal", "year", "years", "fy", "in", "since", "during", "through", "from", "to", "for", "of", "by", "until",
     "ended", "ending", "end", "quarter", "cy", "calendar", "january", "february", "march", "april", "may", "june",
     "july", "august", "september", "october", "november", "december", "jan", "feb", "mar", "apr", "jun", "jul",
     "aug", "sep", "sept", "oct", "nov", "dec"]
)
#: Words allowed after a line item's name among its numbers.
COLUMN_WORDS = frozenset(["change", "chg", "yoy", "vs", "versus", "na", "nm", "n", "a", "usd", "eur", "gbp", "inr",
                          "x", "bps", "bp", "pts", "pp"])
_CHANGE_WORDS = frozenset(["change", "chg", "yoy"])
#: Words that open a new clause in prose.
_CLAUSE_WORDS = frozenset(["from", "to", "compared", "versus", "vs", "against", "while", "whereas", "and", "but", "or",
                           "as", "with", "after", "before", "than", "reflecting", "driven", "due", "including",
                           "offset", "which", "up", "down"])
#: Words after which a number in a sentence belongs to an earlier period.
_COMPARISON_WORDS = frozenset(["from", "compared", "versus", "vs", "against", "prior", "previous", "preceding",
                               "last", "earlier", "than"])
_NAME_PUNCT = frozenset(["&", "-", "'", "\u2019", "/", ",", "(", ")", "."])
_NIL = frozenset(["\u2014", "\u2013", "-", "\u2212", "--", "\u2014\u2014"])
_PER_SHARE = re.compile(r"per\s+(?:basic\s+|diluted\s+)?(?:common\s+|ordinary\s+)?share|\beps\b|per\s+unit|per\s+ads",
                        re.IGNORECASE)
_SHARES = re.compile(r"\bshares?\b", re.IGNORECASE)
#: A scale written in a row's name: "Revenue ($ bn)", "Revenue (in millions)".
_ROW_SCALE = re.compile(r"\([^()]*?\b(thousands?|millions?|billions?|bn|mn|m|k|000s)\)", re.IGNORECASE)
_COLUMN_SCALE = re.compile(r"\(\s*(?:in\s+)?(?:[$\u20ac\u00a3]|usd|eur)?\s*(thousands?|millions?|billions?|bn|mn|m|k|000s)\s*\)",
                           re.IGNORECASE)
_ROW_SCALES = {w: Decimal(10) ** e for e, words in ((3, ("thousand", "thousands", "k", "000s")),
               (6, ("million", "millions", "mn", "m", "mm")), (9, ("billion", "billions", "bn", "b"))) for w in words}
_ALIGN_TOLERANCE = 8
_LETTERS = re.compile(r"[^\W\d_]+", re.UNICODE)


def bare(text: str) -> str:
    """The letters of ``text``, lower-cased ("(in" -> "in")."""
    return "".join(_LETTERS.findall(text)).lower()


class RowReader:
    """Reads the rows of one prompt; ``read()`` fills years, line items and values in the units."""

    def __init__(self, text: str, structure: Structure, units: list[Unit], periods: list[Period],
                 line_starts: list[int], lexicon: Lexicon):
        self.text = text
        self.structure = structure
        self.units = units
        self.periods = periods
        self.line_starts = line_starts
        self.lexicon = lexicon
        self.rows = [row for row in structure.rows if row.cells]
        row_starts = [row.start for row in self.rows]
        # units of each row, with their cell
        self.row_units: list[list[tuple[Unit, int]]] = [[] for _ in self.rows]
        for unit in units:
            if unit.kind in ("break", "special"):
                continue
            anchor = unit.anchor
            if anchor is None:
                continue
            r = bisect.bisect_right(row_starts, anchor.start) - 1
            if r < 0 or anchor.start >= self.rows[r].end:
                continue
            cell = self.rows[r].cell_of(anchor.start)
            self.row_units[r].append((unit, -1 if cell is None else cell))
        self.headers: dict[int, list[tuple[int, int, Unit]]] = {}  # row -> [(year, cell, unit)]
        self.items: list[tuple[Unit, list[Unit]]] = []
        self.item_rows: dict[int, tuple[Unit, list[Unit]]] = {}
        self.merged_away: set[int] = set()
        self.units_by_token = sorted((u for u in units if u.tokens), key=lambda u: u.tokens[0])
        self.first_tokens = [u.tokens[0] for u in self.units_by_token]
        self.header_scales: dict[int, dict[int, Decimal]] = {}
        self.column_scale: dict[int, Decimal] = {}  # id(unit) -> scale of its header column

    # ------------------------------------------------------------ entry
    def read(self) -> tuple[list[Unit], list[tuple[Unit, list[Unit]]], dict[int, list[int]]]:
        self._mark_periods()
        self._mark_cued_years()
        self._find_headers()
        for r in range(len(self.rows)):
            if r not in self.headers:
                self._read_line_item(r)
        self._assign_columns_and_scale()
        self._prose_years()
        for unit in self.units:
            if unit.is_year and unit.year is None:
                unit.year = _written_year(unit)
        replacement = {id(name.members[0]): name for name, _ in self.items}
        kept = [replacement.get(id(u), u) for u in self.units if id(u) not in self.merged_away]
        header_years = {}
        for r, cols in sorted(self.headers.items()):
            line = cols[0][2].line
            header_years.setdefault(line, []).extend(year for year, _, _ in cols)
        return kept, self.items, header_years

    # ------------------------------------------------------------ years
    def _mark_periods(self) -> None:
        by_start = {}
        for unit in self.units:
            if unit.kind == "number":
                by_start[unit.number_piece.start] = unit
        for period in self.periods:
            if period.year_range is not None:
                unit = by_start.get(period.year_range[0])
                if unit is not None and unit.number_piece.end <= period.year_range[1] + 1:
                    unit.is_year, unit.year = True, period.year
            for start, _ in period.part_ranges:
                unit = by_start.get(start)
                if unit is not None:
                    unit.date_part = True
        for unit in self.units:
            if unit.kind == "number" and unit.number_piece.date_part and unit.number_piece.year_like:
                unit.is_year, unit.year = True, int(self.text[unit.number_piece.start:unit.number_piece.end])

    def _words(self, row_units):
        return [bare(u.content_text(self.text)) if u.kind == "word" else u.content_text(self.text)
                for u, _ in row_units]

    def _mark_cued_years(self) -> None:
        """``fiscal 2023``, ``in 2021`` (also across a wrapped line of prose), ``2022:``."""
        previous: Unit | None = None
        previous_row = -1
        for r, row_units in enumerate(self.row_units):
            words = self._words(row_units)
            prose_continues = previous_row == r - 1 and self.rows[r].form == "text" and (
                r > 0 and self.rows[r - 1].form == "text")
            if not prose_continues:
                previous = None
            for i, (unit, _) in enumerate(row_units):
                if unit.kind == "number" and unit.number_piece.year_like and not unit.is_year:
                    after = words[i + 1] if i + 1 < len(row_units) else ""
                    cued = previous is not None and previous.kind == "word" and bare(
                        previous.content_text(self.text)) in YEAR_CUES
                    if after.startswith(":") or cued:
                        unit.is_year, unit.year = True, _written_year(unit)
                previous = unit
            if row_units:
                previous_row = r

    def _find_headers(self) -> None:
        for r, row_units in enumerate(self.row_units):
            row = self.rows[r]
            numbers = [u for u, _ in row_units if u.kind == "number" and (u.is_year or not u.date_part)]
            candidates = [u for u in numbers if u.is_year or u.number_piece.year_like]
            if not candidates or len(candidates) != len(numbers):
                continue
            words = self._words(row_units)
            has_time_word = any(u.kind == "word" and w in YEAR_CUES | {"q", "fy", "h"} for (u, _), w in
                                zip(row_units, words))
            in_cells = row.form in ("pipe", "html", "csv") and all(c > 0 for u, c in row_units if u in candidates)
            if len(candidates) >= 2 or has_time_word or in_cells or any(u.is_year for u in candidates):
                if row.form == "text" and sum(1 for u, _ in row_units if u.kind == "word") > 3 * len(candidates):
                    continue  # a sentence that mentions years ("we were founded in 1998") is not a header
                if not self._plausible_header(r, candidates):
                    continue
                cols = []
                for unit, cell in row_units:
                    if unit in candidates:
                        unit.is_year = True
                        if unit.year is None:
                            unit.year = _written_year(unit)
                        cols.append((unit.year, cell, unit))
                self.headers[r] = cols
                self.header_scales[r] = self._column_scales(row)

    def _plausible_header(self, r: int, candidates: list[Unit]) -> bool:
        """Counts that look like years ("Stores  2021  1998") are not a header when the years are far
        apart, or when a header with as many columns is already above and this row is a named row
        whose numbers are not already years (dates, labels, ``FY``) and differ from that header's."""
        years = [u.year if u.year is not None else _written_year(u) for u in candidates]
        if max(years) - min(years) > 15:
            return False
        row_units = self.row_units[r]
        named = bool(row_units) and row_units[0][0].kind == "word" and row_units[0][1] == 0 and bare(
            row_units[0][0].content_text(self.text)) not in YEAR_CUES
        above = [h for h in self.headers if h < r]
        if named and above and not any(u.is_year for u in candidates):
            previous = [year for year, _, _ in self.headers[above[-1]]]
            if len(previous) == len(years) and previous != years:  # the same years again: a new table's header
                return False
        return True

    def _column_scales(self, row: Row) -> dict[int, Decimal]:
        """``{cell: factor}`` for header cells that give their column's scale ("FY24 revenue ($M)")."""
        scales = {}
        for k, cell in enumerate(row.cells):
            m = _COLUMN_SCALE.search(self.text[cell.start:cell.end])
            if m:
                scales[k] = _ROW_SCALES[m.group(1).lower()]
        return scales

    # ------------------------------------------------------------ line items
    def _read_line_item(self, r: int) -> None:
        row, row_units = self.rows[r], self.row_units[r]
        if not row_units:
            return
        first_cell = row_units[0][1]
        cells_form = row.form in ("pipe", "html", "csv")
        if cells_form:
            # leading text cells ("Acme Corp,Revenue,1520.4"): the name is the last one before the numbers
            cells_with_values = [c for u, c in row_units if u.is_value and c >= 0]
            text_cells = [c for u, c in row_units if u.kind == "word" and c >= 0]
            if cells_with_values and text_cells:
                before = [c for c in text_cells if c < min(cells_with_values)]
                if before and max(before) != first_cell:
                    first_cell = max(before)
                    row_units = [(u, c) for u, c in row_units if c >= first_cell]
        name_units: list[Unit] = []
        depth = 0
        for unit, cell in row_units:
            if cell != first_cell:
                break
            mark = unit.content_text(self.text)
            if depth > 0 and unit.kind != "number":  # "Revenue ($ bn)": a unit note inside the name
                name_units.append(unit)
                depth += mark.count("(") - mark.count(")")
                continue
            footnote = unit.anchor is not None and unit.anchor.footnote
            opens = unit.kind == "punct" and mark.startswith("(") and not footnote
            if unit.kind == "word" or opens or (unit.kind == "punct" and mark in _NAME_PUNCT
                                                 and not footnote):
                name_units.append(unit)
                depth = max(0, depth + mark.count("(") - mark.count(")"))
                continue
            break
        while name_units and name_units[-1].kind == "punct" and not (
            name_units[-1].content_text(self.text).endswith(")")
            and any(u.content_text(self.text).startswith("(") for u in name_units)
        ):
            name_units.pop()
        if not name_units or name_units[0].kind != "word":
            return
        tail = row_units[len(name_units):]
        # footnote markers right after the name: "(1)", "*", "(a)"
        for unit, cell in tail:
            if cell != first_cell:
                break
            marker = unit.content_text(self.text)
            if unit.kind == "number" and re.fullmatch(r"\(\d{1,2}\)", self.text[unit.number_piece.start:unit.number_piece.end]):
                _to_footnote(unit)
            elif not (unit.kind == "punct" and marker.strip("*\u2020\u2021") == ""):
                break
        self._nil_cells(row, tail)
        if row.form in TABLE_FORMS:
            self._split_brackets(tail)
        values = [u for u, _ in tail if u.is_value and not (u.anchor and u.anchor.footnote)]
        if not values:
            return
        if cells_form:
            words_ok = all(bare(u.content_text(self.text)) in COLUMN_WORDS for u, c in tail if u.kind == "word" and c == first_cell)
        else:
            words_ok = all(bare(u.content_text(self.text)) in COLUMN_WORDS for u, _ in tail if u.kind == "word")
        if not words_ok:
            return
        name_text = self._name_text(name_units)
        previous = self._wrapped_name_start(r, name_units)
        if previous:
            name_text = f"{previous} {name_text}"
        # markup inside the name ("Other&nbsp;income") joins it, so the name is one run of tokens
        first_token, last_token = name_units[0].tokens[0], name_units[-1].tokens[-1]
        lo = bisect.bisect_right(self.first_tokens, first_token)
        hi = bisect.bisect_left(self.first_tokens, last_token)
        inside = [u for u in self.units_by_token[lo:hi] if u.kind == "punct" and u.anchor is None]
        name = _merge(sorted(name_units + inside, key=lambda u: u.tokens[0]), "line_item_name")
        name.line_item = name_text
        name.category = self.lexicon.category_of(name_text)
        self.merged_away.update(id(u) for u in name.members[1:])
        self.row_units[r] = [(name, first_cell)] + tail
        for unit, _ in tail:
            if unit.kind == "number":
                unit.line_item = name_text
        self.items.append((name, values))
        self.item_rows[r] = (name, values)

    def _wrapped_name_start(self, r: int, name_units: list[Unit]) -> str | None:
        """The first line of a name wrapped over two lines ("Net cash provided by (used in)" over
        "  operating activities   1,234"), or None. The name's span stays on its second line."""
        first = self._name_text(name_units)
        if r == 0 or not first[:1].islower() or self.rows[r].form not in ("aligned", "text"):
            return None
        before = self.row_units[r - 1]
        if (r - 1) in self.headers or (r - 1) in self.item_rows or not before:
            return None
        if before[0][0].line != name_units[0].line - 1 or any(u.kind not in ("word", "punct") for u, _ in before):
            return None
        return self._name_text([u for u, _ in before])

    def _name_text(self, name_units: list[Unit]) -> str:
        """The name's words and punctuation as written, markup left out and spaces made single."""
        content = [p for u in name_units for p in u.pieces if not p.markup]
        if not content:
            return name_units[0].text
        out = self.text[content[0].start:content[0].end]
        for before, piece in pairwise(content):
            out += (" " if piece.start > before.end else "") + self.text[piece.start:piece.end]
        return out

    def _split_brackets(self, tail) -> None:
        """EDGAR writes a negative as ``<td>(565</td><td>)</td>``: brackets around the cell boundary."""
        markup = self.structure.markup
        starts = [m[0] for m in markup]

        def skip(i: int, step: int) -> int:
            while 0 <= i < len(self.text):
                k = bisect.bisect_right(starts, i) - 1
                if k >= 0 and markup[k][0] <= i < markup[k][1]:
                    i = markup[k][1] if step > 0 else markup[k][0] - 1
                elif self.text[i].isspace():
                    i += step
                else:
                    return i
            return i

        for unit, _ in tail:
            piece = unit.number
            if not unit.is_value or unit.nil or piece is None or piece.value is None or piece.value < 0:
                continue
            before = skip(piece.start - 1, -1)
            after = skip(piece.end, +1)
            opened = 0 <= before and self.text[before] == "("
            closed = after < len(self.text) and self.text[after] == ")"
            if opened and closed and unit.value is not None:
                unit.value = -unit.value

    def _nil_cells(self, row: Row, tail) -> None:
        """A table cell holding only a dash (and a currency sign) is a nil amount."""
        if row.form not in TABLE_FORMS:
            return
        by_cell: dict[int, list[Unit]] = {}
        for unit, cell in tail:
            by_cell.setdefault(cell, []).append(unit)
        for cell, cell_units in by_cell.items():
            if cell < 0 or cell == 0 and row.form != "aligned":
                continue
            if row.form == "aligned" and cell == 0:
                continue
            dash = [u for u in cell_units if u.kind == "punct" and (
                u.content_text(self.text) in _NIL or any((p.start, p.end) in self.structure.dash_entities
                                                         for p in u.pieces))]
            rest = [u for u in cell_units if u not in dash
                    and u.content_text(self.text) not in ("$", "\u20ac", "\u00a3", "(", ")", "")]
            if len(dash) == 1 and not rest:
                unit = dash[0]
                unit.kind, unit.nil, unit.value = "number", True, 0.0
                unit.number = unit.pieces[0]

    # ------------------------------------------------------------ columns and scale
    def _assign_columns_and_scale(self) -> None:
        header: int | None = None
        header_form = None
        notes = sorted(self.structure.scale_notes, key=lambda n: n.start)
        note_starts = [n.start for n in notes]
        block_start = 0
        for r, row in enumerate(self.rows):
            row_units = self.row_units[r]
            prose = r not in self.item_rows and r not in self.headers and any(u.is_value for u, _ in row_units)
            if prose or (header_form is not None and row.form in TABLE_FORMS and header_form in TABLE_FORMS
                         and row.form != header_form and r not in self.headers):
                header, header_form = None, None
                block_start = row.end
            if r in self.headers:
                header, header_form = r, row.form
                continue
            if r not in self.item_rows:
                continue
            name, values = self.item_rows[r]
            self._row_years(r, header)
            k = bisect.bisect_right(note_starts, row.start) - 1
            note = notes[k] if k >= 0 and notes[k].start >= self._line_start_of(block_start) else None
            if row.form in TABLE_FORMS:
                self._scale(name, values, note)

    def _line_start_of(self, char: int) -> int:
        return self.line_starts[max(0, bisect.bisect_right(self.line_starts, char) - 1)]

    def _row_years(self, r: int, header: int | None) -> None:
        row = self.rows[r]
        pending_year: int | None = None
        after_change = False
        unlabeled: list[tuple[Unit, int]] = []
        for unit, cell in self.row_units[r][1:]:
            word = bare(unit.content_text(self.text))
            if unit.is_year:
                pending_year, after_change = unit.year, False
            elif unit.kind == "word" and word in _CHANGE_WORDS:
                after_change = True
            elif unit.is_value:
                if pending_year is not None:
                    unit.year = pending_year
                elif not after_change:
                    unlabeled.append((unit, cell))
                pending_year, after_change = None, False
        if not unlabeled or header is None:
            return
        cols = self.headers[header]
        header_row = self.rows[header]
        scales = self.header_scales.get(header, {})
        if row.form == header_row.form == "html" and row.width == header_row.width and any(
                c.columns > 1 for c in header_row.cells + row.cells):
            # EDGAR: <td colspan="2">2023</td> over <td>$</td><td>29,915</td>: match by table column
            spans = [(header_row.first_column(cell), header_row.first_column(cell) + header_row.cells[cell].columns,
                      year, cell) for year, cell, _ in cols]
            for unit, cell in unlabeled:
                column = row.first_column(cell) if cell >= 0 else -1
                hit = [(year, hcell) for start, end, year, hcell in spans if start <= column < end]
                unit.year = hit[0][0] if len(hit) == 1 else None
                if len(hit) == 1 and hit[0][1] in scales:
                    self.column_scale[id(unit)] = scales[hit[0][1]]
            return
        if row.form in ("pipe", "html", "csv") and len(row.cells) == len(header_row.cells):
            by_cell = {cell: year for year, cell, _ in cols}
            for unit, cell in unlabeled:
                unit.year = by_cell.get(cell)
                if cell in scales:
                    self.column_scale[id(unit)] = scales[cell]
            return
        if len(unlabeled) == len(cols):
            for (unit, _), (year, cell, _) in zip(unlabeled, cols):
                unit.year = year
                if cell in scales:
                    self.column_scale[id(unit)] = scales[cell]
            return
        if row.form not in ("aligned", "text"):
            return
        header_cols = [u.char_end - self._line_start_of(u.char_start) for _, _, u in cols]
        # closest pairs first, so "+86" left of the "2017" column does not take it from "493" below it
        candidates = sorted(
            (abs(header_cols[k] - (unit.char_end - self._line_start_of(unit.char_start))), i, k)
            for i, (unit, _) in enumerate(unlabeled) for k in range(len(header_cols))
        )
        taken: set[int] = set()
        placed: set[int] = set()
        for distance, i, k in candidates:
            if distance <= _ALIGN_TOLERANCE and i not in placed and k not in taken:
                unlabeled[i][0].year = cols[k][0]
                taken.add(k)
                placed.add(i)

    def _scale(self, name: Unit, values: list[Unit], note) -> None:
        """Scale by the row's own note ("Revenue ($ bn)"), else its header column's, else the table's."""
        line_item = name.line_item
        assert line_item is not None  # a line item's name unit
        if _PER_SHARE.search(line_item):
            return
        own = _ROW_SCALE.search(line_item)
        row_factor = _ROW_SCALES[own.group(1).lower()] if own else None
        note_factor = None
        if note is not None and not (note.except_shares and _SHARES.search(line_item)):
            note_factor = note.factor
        for unit in values:
            piece = unit.number_piece
            if unit.nil or unit.value is None or piece.scaled or piece.unit in ("%", "x", "bps"):
                continue
            factor = row_factor or self.column_scale.get(id(unit)) or note_factor
            if factor is not None:
                unit.value = float(Decimal(repr(unit.value)) * factor)

    # ------------------------------------------------------------ prose
    def _prose_years(self) -> None:
        """Years for the numbers of prose rows, clause by clause (see the module docstring)."""
        sentence: list[Unit] = []
        for r, row in enumerate(self.rows):
            if r in self.item_rows or r in self.headers or row.form != "text":
                self._sentence_years(sentence)
                sentence = []
                continue
            for unit, _ in self.row_units[r]:
                sentence.append(unit)
                if unit.kind == "punct" and any(c in unit.text for c in ".!?;") and unit.anchor is not None and not unit.anchor.markup:
                    self._sentence_years(sentence)
                    sentence = []
        self._sentence_years(sentence)

    def _sentence_years(self, sentence: list[Unit]) -> None:
        if not sentence:
            return
        inside_period = [(p.start, p.end) for p in self.periods]

        def in_period(unit: Unit) -> bool:
            return any(s <= unit.char_start < e for s, e in inside_period)

        clauses: list[list[Unit]] = [[]]
        for unit in sentence:
            boundary = (unit.kind == "punct" and any(c in unit.text for c in ",;:()\u2014\u2013") and not in_period(unit)) \
                or (unit.kind == "word" and bare(unit.content_text(self.text)) in _CLAUSE_WORDS)
            if boundary and clauses[-1]:
                clauses.append([])
            clauses[-1].append(unit)
        opening_year = None
        for unit in sentence:  # "In fiscal 2023, ...", "During fiscal 2023 the company ..."
            if unit.is_value:
                break
            if unit.is_year:
                clause = next(c for c in clauses if unit in c)
                if len({u.year for u in clause if u.is_year}) == 1:
                    opening_year = unit.year
                break
        labelled: dict[int, int] = {}
        for a, b, c in zip(sentence, sentence[1:], sentence[2:]):
            if a.is_year and a.year is not None and b.kind == "punct" and b.content_text(self.text) == ":" \
                    and c.is_value:
                labelled[id(c)] = a.year
        compared = False
        for clause in clauses:
            years = {u.year for u in clause if u.is_year}
            if any(u.kind == "word" and bare(u.content_text(self.text)) in _COMPARISON_WORDS for u in clause):
                compared = True
            own = next(iter(years)) if len(years) == 1 else None
            for unit in clause:
                if not unit.is_value or unit.line_item is not None:
                    continue
                if id(unit) in labelled:
                    unit.year = labelled[id(unit)]
                elif own is not None:
                    unit.year = own
                elif not years and opening_year is not None and not compared:
                    unit.year = opening_year
                else:
                    unit.year = None


def _written_year(unit: Unit) -> int:
    """The year a year-like number unit writes (``2023`` -> 2023)."""
    value = unit.number_piece.value
    if value is None:
        raise ValueError("a number without a value is not a year")
    return int(abs(value))


def _to_footnote(unit: Unit) -> None:
    unit.kind, unit.number, unit.value, unit.unit_symbol = "punct", None, None, None


def _merge(parts: list[Unit], kind: str) -> Unit:
    tokens = sorted(t for p in parts for t in p.tokens)
    return Unit(
        kind=kind,
        char_start=parts[0].char_start,
        char_end=parts[-1].char_end,
        tokens=tokens,
        pieces=[p for part in parts for p in part.pieces],
        line=parts[0].line,
        members=list(parts),
    )
