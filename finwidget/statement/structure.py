"""Where the statement's tables are: rows, cells and table markup, from characters alone.

``find_structure(text)`` reads every line (and every HTML ``<tr>``) as a row of one
of five forms:

- ``"html"``: a ``<tr>`` row; cells are its ``<td>`` / ``<th>`` contents. Every tag and
  entity inside the table is markup.
- ``"pipe"``: a line with ``|`` between cells (markdown tables, and "Net income:
  change -1,433 | 2022: 13,937"); ``|---|---|`` rule lines are markup.
- ``"csv"``: a line whose fields after the first, split at ``,`` or ``;`` outside
  quotes, are all numbers, years or nil dashes; separators and quotes are markup.
- ``"aligned"``: a line with cells separated by a tab or two or more spaces (10-K text
  tables).
- ``"text"``: any other line (prose, titles): one cell.

Cells keep their position (an empty cell still counts), so a pipe, HTML or CSV row's
k-th cell lines up with the header row's k-th cell. ``scale_notes`` finds notes such
as "(in millions, except per share data)".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from itertools import pairwise

ROW_FORMS = ("html", "pipe", "csv", "aligned", "text")
TABLE_FORMS = ("html", "pipe", "csv", "aligned")

_TR = re.compile(r"<tr\b[^>]*>", re.IGNORECASE)
_ROW_END = re.compile(r"</tr\s*>|<tr\b|</table\s*>", re.IGNORECASE)
_CELL = re.compile(r"<t[dh]\b[^>]*>", re.IGNORECASE)
_CELL_END = re.compile(r"</t[dh]\s*>|<t[dh]\b", re.IGNORECASE)
_TAG = re.compile(r"</?[A-Za-z][^<>]*>|<!--.*?-->", re.DOTALL)
_ENTITY = re.compile(r"&(?:#\d{1,7}|#x[0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_HAS_TABLE_TAGS = re.compile(r"<t[rdh]\b", re.IGNORECASE)
_RULE_LINE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(?:\|\s*:?-{2,}:?\s*)*\|?\s*$")
_GAP = re.compile(r"\t+| {2,}|\u00a0{2,}")
_NUMERIC_FIELD = re.compile(
    r"[-+\u2212]?\(?[-\u2212]?(?:[$\u20ac\u00a3\u20b9][ ]?)?\(?[-\u2212]?\d[\d.,]*\)?%?\)?|[\u2014\u2013-]|n/?a|nm"
    r"|(?:(?:Q[1-4]|[1-4]Q|H[12])\s*)?(?:FY|CY)?\s?'?\d{2,4}|\d{1,4}[/.-]\d{1,2}[/.-]\d{1,4}"
    r"|[A-Za-z]{3,9}\.?\s+\d{1,2},?\s+\d{4}",
    re.IGNORECASE,
)
#: Dash entities that stand for nil in EDGAR tables.
DASH_ENTITIES = frozenset(["&mdash;", "&ndash;", "&#8212;", "&#8211;", "&#x2014;", "&#x2013;", "&minus;", "&#8722;"])

_SCALE_WORDS = {"thousand": Decimal(10) ** 3, "000": Decimal(10) ** 3, "tsd": Decimal(10) ** 3,
                "lakh": Decimal(10) ** 5, "million": Decimal(10) ** 6, "mm": Decimal(10) ** 6, "mio": Decimal(10) ** 6,
                "crore": Decimal(10) ** 7, "billion": Decimal(10) ** 9, "mrd": Decimal(10) ** 9}
_SCALE_NOTE = re.compile(
    r"\((?P<inner>[^()\n]*?\b(?P<word>thousands?|millions?|billions?|lakhs?|crores?|000s|000's|mm|mio|mrd|tsd)\b[^()\n]*)\)"
    r"|\b(?:in|amounts in|dollars in|\$ in|\u20ac in|usd in|eur in)\s+(?:(?:u\.?s\.?\s+)?(?:\$|dollars|usd|eur|euros?|\u20ac|\u00a3)\s+)?"
    r"(?P<word2>thousands|millions|billions|lakhs|crores)\b(?P<rest>[^\n|<]*)",
    re.IGNORECASE,
)
_OTHER_DIGITS = re.compile(r"\d[\d.,]*")


@dataclass(frozen=True)
class Cell:
    """``text[start:end]``: a cell's content, surrounding whitespace and markup left out.

    columns: how many table columns it spans (an HTML ``colspan``; 1 otherwise).
    """

    start: int
    end: int
    columns: int = 1


@dataclass(frozen=True)
class Row:
    """One table row or line of text.

    form: one of ``ROW_FORMS``.
    start, end: character range of the whole row.
    cells: the cells in order (empty cells included for html, pipe and csv rows).
    """

    form: str
    start: int
    end: int
    cells: tuple[Cell, ...]

    def first_column(self, cell: int) -> int:
        """The table column where cell number ``cell`` starts (colspans counted)."""
        return sum(c.columns for c in self.cells[:cell])

    @property
    def width(self) -> int:
        return sum(c.columns for c in self.cells)

    def cell_of(self, char: int) -> int | None:
        for k, cell in enumerate(self.cells):
            if cell.start <= char < cell.end:
                return k
        return None


@dataclass(frozen=True)
class ScaleNote:
    """A note that scales the table numbers after it ("(in millions, except per share data)").

    start: character where the note is; it applies from its line on.
    factor: 1e3, 1e6 or 1e9 (a Decimal).
    except_per_share: per-share amounts keep their value.
    except_shares: share counts keep their value ("except share and per share data").
    """

    start: int
    factor: Decimal
    except_per_share: bool
    except_shares: bool


@dataclass
class Structure:
    rows: list[Row]
    markup: list[tuple[int, int]]
    dash_entities: set[tuple[int, int]]  # "&mdash;" and the like: content, read as a nil dash in a cell
    scale_notes: list[ScaleNote]


def find_structure(text: str) -> Structure:
    rows: list[Row] = []
    markup: list[tuple[int, int]] = []
    html_ranges = _html_rows(text, rows, markup) if _HAS_TABLE_TAGS.search(text) else []
    lines = []  # (row, its markup, the row read as CSV despite a grouping ambiguity, that markup)
    for line_start, line_end in _lines(text):
        if any(s < line_end and line_start < e for s, e in html_ranges):
            continue
        row_markup: list = []
        row = _line_row(text, line_start, line_end, row_markup)
        alt_markup: list = []
        alt = None
        if row is not None and row.form != "csv":
            alt = _csv_row(text, line_start, line_end, alt_markup, grouping_guard=False)
        lines.append((row, row_markup, alt, alt_markup))
    for k, (row, row_markup, alt, alt_markup) in enumerate(lines):
        # "Gross profit,512,566,610" under a 4-field CSV header is four fields, not 512,566,610
        neighbours = [lines[j][0] for j in (k - 1, k + 1) if 0 <= j < len(lines) and lines[j][0] is not None]
        if alt is not None and any(n.form == "csv" and len(n.cells) == len(alt.cells) for n in neighbours):
            row, row_markup = alt, alt_markup
        markup.extend(row_markup)
        if row is not None:
            rows.append(row)
    rows.sort(key=lambda r: r.start)
    dash = {r for r in markup if text[r[0]:r[1]].lower() in DASH_ENTITIES}
    markup = _merge(sorted(r for r in markup if r not in dash))
    return Structure(rows, markup, dash, scale_notes(text))


def _lines(text: str):
    start = 0
    for m in re.finditer(r"\r\n|\n|\r", text):
        yield start, m.start()
        start = m.end()
    yield start, len(text)


def _merge(ranges):
    out: list[tuple[int, int]] = []
    for start, end in ranges:
        if out and start < out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _strip(text: str, start: int, end: int) -> Cell:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return Cell(start, end)


# ---------------------------------------------------------------- html
def _html_rows(text: str, rows: list[Row], markup: list) -> list[tuple[int, int]]:
    """HTML rows; all tags and entities between the first and last table tag are markup."""
    first = _HAS_TABLE_TAGS.search(text).start()
    closing = [m.end() for m in re.finditer(r"</(?:table|tr|td|th)\s*>", text, re.IGNORECASE)]
    last = max(closing) if closing else len(text)
    region_start = text.rfind("<table", 0, first + 1)
    region_start = region_start if region_start >= 0 else first
    for pattern in (_TAG, _ENTITY):
        markup.extend((m.start(), m.end()) for m in pattern.finditer(text, region_start, last))
    ranges = []
    for tr in _TR.finditer(text):
        end_match = _ROW_END.search(text, tr.end())
        row_end = end_match.start() if end_match else len(text)
        cells = []
        for td in _CELL.finditer(text, tr.end(), row_end):
            close = _CELL_END.search(text, td.end(), row_end)
            content_end = close.start() if close else row_end
            cell = _content_cell(text, td.end(), content_end)
            colspan = re.search(r"colspan\s*=\s*[\"']?(\d{1,2})", td.group(), re.IGNORECASE)
            if colspan and int(colspan.group(1)) > 1:
                cell = Cell(cell.start, cell.end, int(colspan.group(1)))
            cells.append(cell)
        rows.append(Row("html", tr.start(), row_end, tuple(cells)))
        ranges.append((tr.start(), end_match.end() if end_match and end_match.group().lower().startswith("</tr") else row_end))
    return ranges


def _content_cell(text: str, start: int, end: int) -> Cell:
    """The cell's content range without leading/trailing tags, entities (other than dashes) and spaces."""
    changed = True
    while changed:
        changed = False
        cell = _strip(text, start, end)
        start, end = cell.start, cell.end
        for pattern in (_TAG, _ENTITY):
            m = pattern.match(text, start, end)
            if m and m.group().lower() not in DASH_ENTITIES:
                start, changed = m.end(), True
        tail = text[start:end]
        m = re.search(r"(?:</?[A-Za-z][^<>]*>|&(?:#\d+|#x[0-9a-fA-F]+|[A-Za-z]\w*);)$", tail)
        if m and m.group().lower() not in DASH_ENTITIES:
            end, changed = start + m.start(), True
    return Cell(start, end)


# ---------------------------------------------------------------- lines
def _line_row(text: str, start: int, end: int, markup: list) -> Row | None:
    line = text[start:end]
    if not line.strip():
        return None
    if "|" in line:
        if _RULE_LINE.match(line):
            body = _strip(text, start, end)
            markup.append((body.start, body.end))
            return None
        row = _pipe_row(text, start, end, markup)
        if row is not None:
            return row
    row = _csv_row(text, start, end, markup)
    if row is not None:
        return row
    body = _strip(text, start, end)
    gaps = [m for m in _GAP.finditer(text, body.start, body.end)]
    if gaps:
        cells, cursor = [], body.start
        for gap in gaps:
            cells.append(Cell(cursor, gap.start()))
            cursor = gap.end()
        cells.append(Cell(cursor, body.end))
        return Row("aligned", start, end, tuple(cells))
    return Row("text", start, end, (body,))


def _pipe_row(text: str, start: int, end: int, markup: list) -> Row | None:
    bars = [m.start() for m in re.finditer(r"\|", text[start:end])]
    body = _strip(text, start, end)
    inner_start, inner_end = body.start, body.end
    edges = [start + b for b in bars]
    if not edges:
        return None
    leading = edges[0] == body.start
    trailing = edges[-1] == body.end - 1
    bounds = [inner_start - 1] if not leading else []
    bounds += edges
    if not trailing:
        bounds.append(inner_end)
    cells = [_strip(text, a + 1, b) for a, b in pairwise(bounds)]
    if sum(1 for c in cells if c.end > c.start) < 2:
        return None
    markup.extend((e, e + 1) for e in edges)
    cells = [_unemphasize(text, c, markup) for c in cells]
    return Row("pipe", start, end, tuple(cells))


def _unemphasize(text: str, cell: Cell, markup: list) -> Cell:
    """``**Total assets**``, ``_Net income_``: markdown emphasis around a cell is markup."""
    m = re.fullmatch(r"(\*{1,3}|_{1,3})(?=\S)(.*?\S)\1", text[cell.start:cell.end], re.DOTALL)
    if not m:
        return cell
    width = len(m.group(1))
    markup.extend([(cell.start, cell.start + width), (cell.end - width, cell.end)])
    return Cell(cell.start + width, cell.end - width)


def _csv_fields(text: str, start: int, end: int, separator: str):
    """``[(field_start, field_end, quoted)]`` and the separator/quote positions, or None if quotes are unbalanced."""
    fields, marks = [], []
    i, field_start, quoted, in_quotes = start, start, False, False
    while i < end:
        ch = text[i]
        if ch == '"' and (in_quotes or not text[field_start:i].strip()):
            in_quotes = not in_quotes
            quoted = True
            marks.append((i, i + 1))
        elif ch == separator and not in_quotes:
            fields.append((field_start, i, quoted))
            marks.append((i, i + 1))
            field_start, quoted = i + 1, False
        i += 1
    if in_quotes:
        return None, None
    fields.append((field_start, end, quoted))
    return fields, marks


def _csv_row(text: str, start: int, end: int, markup: list, grouping_guard: bool = True) -> Row | None:
    line = text[start:end]
    for separator in (",", ";"):
        if separator not in line:
            continue
        fields, marks = _csv_fields(text, start, end, separator)
        if not fields or len(fields) < 3:
            continue
        plain = [text[a:b].replace('"', "").strip() for a, b, _ in fields]
        # leading text columns ("Company,Metric,2024,2023"), then numbers, years or nil dashes
        lead = 1
        while lead < len(plain) - 2 and plain[lead] and not _NUMERIC_FIELD.fullmatch(plain[lead]) and not any(
                ch.isdigit() for ch in plain[lead]):
            lead += 1
        values = plain[lead:]
        if not all(not v or _NUMERIC_FIELD.fullmatch(v) for v in values):
            continue
        if sum(1 for v in values if v) < 2:
            continue
        first = plain[0]
        if any(ch.isdigit() for ch in first) and not re.fullmatch(r"\D*(?:19|20)\d{2}\D*", first):
            continue
        unquoted = [text[a:b].strip() for a, b, q in fields[lead:] if not q]
        if grouping_guard and separator == "," and unquoted and len(unquoted) == len(fields) - lead and all(
            re.fullmatch(r"\d{3}", v) for v in unquoted[1:]
        ) and re.fullmatch(r"\(?[$\u20ac\u00a3]?\d{1,3}", unquoted[0]):
            continue  # "Revenue,1,234,567": one grouped number, not three fields
        markup.extend(marks)
        cells = tuple(_strip(text, a, b) for a, b, _ in fields)
        cells = tuple(_unquote(text, c) for c in cells)
        return Row("csv", start, end, cells)
    return None


def _unquote(text: str, cell: Cell) -> Cell:
    if cell.end - cell.start >= 2 and text[cell.start] == '"' and text[cell.end - 1] == '"':
        return _strip(text, cell.start + 1, cell.end - 1)
    return cell


# ---------------------------------------------------------------- scale notes
def scale_notes(text: str) -> list[ScaleNote]:
    """Notes that scale a table: "(in millions, except per share data)", "$ in thousands", "(€ millions)"."""
    notes = []
    for m in _SCALE_NOTE.finditer(text):
        line_start = text.rfind("\n", 0, m.start()) + 1
        line_end = text.find("\n", m.end())
        line = text[line_start:line_end if line_end >= 0 else len(text)]
        # a note sits on a title or header line: no amounts there, only years and dates
        others = [d for d in _OTHER_DIGITS.findall(line) if not re.fullmatch(r"(?:19|20)\d{2}|\d{1,2},?|000s?", d)]
        if others:
            continue
        word = (m.group("word") or m.group("word2")).lower().replace("'", "")
        word = word.removesuffix("s")
        factor = _SCALE_WORDS.get(word if word != "000" else "000")
        if factor is None:
            continue
        rest = (m.group("inner") or "") + (m.group("rest") or "")
        rest = rest.lower()
        except_at = rest.find("except")
        exceptions = rest[except_at:] if except_at >= 0 else ""
        per_share = bool(re.search(r"per[- ](?:common )?share|per[- ]unit|\beps\b", exceptions))
        rest_of_it = re.sub(r"per[- ](?:common )?share", "", exceptions)
        shares = bool(re.search(r"\bshares?\b", rest_of_it))
        notes.append(ScaleNote(m.start(), factor, per_share, shares))
    return notes
