"""``read_statement``: line the statement's words, numbers and rows up with the tokens.

How tokens become spans:

1. The text is cut into pieces (``pieces.py``): whole numbers with their sign,
   currency, brackets, percent and scale word; words; punctuation.
2. A token that covers characters of several pieces joins them into one span
   (Qwen2 writes ``%)`` or ``):`` as one token; the span then reads ``12.5%)``), so
   every span covers whole tokens and no token is split between spans.
3. A token holding only spaces belongs to the word or number it precedes (the space
   token Qwen2 puts before a number); a token holding a line break is a "break" span;
   special tokens (chat markers) are "special" spans.
4. Rows: a line that starts with a name (words, with ``& - ' / , ( )`` inside) followed
   only by numbers, year labels, separators and column words ("change", "vs") is a
   line item; its name words become one "line_item_name" span.
5. Years: a four-digit number 1900-2099 without separators is a year when it labels a
   value (``2022: 13,937``), follows a time word (``fiscal 2023``, ``in 2021``), ends a date
   (``December 31, 2023``), or sits on a header row (a line whose numbers are all
   year-like: two or more, or one next to a time word).
6. Year columns: a number after a ``2022:`` label belongs to 2022; a number after the
   word "change" belongs to no year; other numbers on a row take the columns of the
   nearest header row above, in order when the counts match, else by character
   column (within 8 characters).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from finwidget.errors import InputError
from finwidget.statement.layout import LineItem, Span, StatementLayout
from finwidget.statement.lexicon import Lexicon, normalize_word
from finwidget.statement.pieces import Piece, scan_pieces

#: Words after which a four-digit number is a year.
YEAR_CUES = frozenset(
    ["fiscal", "year", "years", "fy", "in", "since", "during", "through", "from", "to", "for", "of", "by", "until", "ended", "ending", "end", "q1", "q2", "q3", "q4", "quarter", "h1", "h2", "cy", "calendar", "january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"]
)
_MONTHS = frozenset(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"]
)
#: Words allowed after a line item's name among its numbers.
COLUMN_WORDS = frozenset(["change", "chg", "yoy", "vs", "versus", "na", "nm", "n", "a", "usd", "eur", "gbp"])
#: Punctuation that may sit inside a line item name or a lexicon phrase.
_NAME_PUNCT = frozenset(["&", "-", "'", "’", "/", ",", "(", ")", "."])
_PHRASE_PUNCT = frozenset(["&", "-", "'", "’", "/", "."])
_COLUMN_GAP = re.compile(r"\t| {2,}")
_ALIGN_TOLERANCE = 8
_LETTERS = re.compile(r"[^\W\d_]+", re.UNICODE)


def _bare(text: str) -> str:
    """The letters of ``text``, lower-cased ("(in" -> "in")."""
    return "".join(_LETTERS.findall(text)).lower()


@dataclass
class _Unit:
    """A span under construction."""

    kind: str
    char_start: int
    char_end: int
    tokens: list[int] = field(default_factory=list)
    number: Piece | None = None
    year: int | None = None
    is_year: bool = False
    category: str | None = None
    line_item: str | None = None
    line: int = 0
    members: list[_Unit] = field(default_factory=list)  # merged name words
    text: str = ""


def read_statement(
    text: str,
    tokenizer,
    input_ids: Sequence[int] | None = None,
    *,
    task=None,
    lexicon: Lexicon | None = None,
    add_special_tokens: bool | None = None,
) -> StatementLayout:
    """Read a statement as a person does, tied to the model's tokens.

    Args:
        text: the text the model reads. With ``task`` it is the statement and the
            prompt is ``task.prompt(text)``; without, ``text`` is the prompt itself.
        tokenizer: a Hugging Face *fast* tokenizer (it must give offset mappings).
        input_ids: the token ids the model actually ran (``[T]``, list or tensor,
            without padding). They must equal the tokenized prompt, or its end when
            the start was truncated; leading pad tokens are dropped.
        task: an ``EarningsTask``; builds the prompt and marks template spans with
            ``in_statement=False``.
        lexicon: the financial vocabulary (default ``Lexicon.default()``).
        add_special_tokens: passed to the tokenizer; default as ``EarningsTask.encode``
            (True unless the task uses a chat template).

    Returns:
        ``StatementLayout`` with spans, line items, ``token_to_span [T]``.
    """
    if not isinstance(text, str):
        raise InputError(f"read_statement needs the statement as a str, got {type(text).__name__}")
    if not text.strip():
        raise InputError("the statement is empty (or only whitespace); pass the statement's text")
    if not getattr(tokenizer, "is_fast", False):
        raise InputError(
            "read_statement needs a fast (Rust) Hugging Face tokenizer, which reports character "
            f"offsets; got {type(tokenizer).__name__}. Load it with AutoTokenizer.from_pretrained(..., use_fast=True)"
        )
    lexicon = lexicon or Lexicon.default()
    if task is not None:
        prompt = task.prompt(text)
        body = text.rstrip()
        where = prompt.find(body)
        statement_range = (where, where + len(body)) if where >= 0 else (0, len(prompt))
        if add_special_tokens is None:
            add_special_tokens = not task.use_chat_template
    else:
        prompt = text
        statement_range = (0, len(prompt))
        if add_special_tokens is None:
            add_special_tokens = True

    encoding = tokenizer(prompt, return_offsets_mapping=True, add_special_tokens=add_special_tokens)
    ids = [int(i) for i in encoding["input_ids"]]
    offsets = [(int(s), int(e)) for s, e in encoding["offset_mapping"]]
    dropped = _check_input_ids(input_ids, ids, tokenizer)

    layout = _read(prompt, ids, offsets, tokenizer, statement_range, lexicon)
    return _drop_leading_tokens(layout, dropped) if dropped else layout


def read_tokens(
    input_ids: Sequence[int],
    tokenizer,
    *,
    statement: str | None = None,
    lexicon: Lexicon | None = None,
) -> StatementLayout:
    """Read exactly the token ids a model ran (e.g. a ``generate`` output), without re-tokenizing.

    Use this when the ids are not the tokenizer's own tokenization of their text, as
    with generated tokens. Leading pad tokens are dropped.

    Args:
        input_ids: ``[T]`` token ids (list or tensor).
        tokenizer: the model's tokenizer.
        statement: the statement text, to mark the template around it
            (``in_statement=False``); default: all of it is the statement.
        lexicon: the financial vocabulary (default ``Lexicon.default()``).
    """
    from finwidget.statement.token_text import text_and_offsets

    if hasattr(input_ids, "tolist"):
        input_ids = input_ids.tolist()
    ids = [int(i) for i in input_ids]
    pad = getattr(tokenizer, "pad_token_id", None)
    while ids and pad is not None and ids[0] == pad:
        ids = ids[1:]
    if not ids:
        raise InputError("read_tokens got no token ids (empty, or only padding)")
    text, offsets = text_and_offsets(ids, tokenizer)
    statement_range = (0, len(text))
    if statement is not None:
        where = text.find(statement.rstrip())
        if where >= 0:
            statement_range = (where, where + len(statement.rstrip()))
    return _read(text, ids, offsets, tokenizer, statement_range, lexicon or Lexicon.default())


def _read(prompt, ids, offsets, tokenizer, statement_range, lexicon) -> StatementLayout:
    special_ids = _special_token_ids(tokenizer)
    units, _token_unit = _units_from_tokens(prompt, ids, offsets, special_ids)
    line_starts = [0] + [m.end() for m in re.finditer(r"\r\n|\n|\r", prompt)]
    for unit in units:
        unit.line = bisect.bisect_right(line_starts, unit.char_start) - 1

    by_line: dict[int, list[_Unit]] = {}
    for unit in units:
        if unit.kind not in ("break", "special"):
            by_line.setdefault(unit.line, []).append(unit)

    header_years = _mark_years(prompt, by_line)
    units, line_items = _find_line_items(prompt, by_line, units, header_years, line_starts, lexicon)
    _assign_categories(by_line, lexicon)
    return _assemble(prompt, ids, offsets, units, line_items, line_starts, statement_range, header_years)


# ---------------------------------------------------------------- tokens -> units
def _check_input_ids(input_ids, ids: list[int], tokenizer) -> int:
    """Number of leading tokens of ``ids`` missing from ``input_ids`` (truncation)."""
    if input_ids is None:
        return 0
    if hasattr(input_ids, "tolist"):
        input_ids = input_ids.tolist()
    given = list(input_ids)
    if given and isinstance(given[0], list):
        if len(given) != 1:
            raise InputError(f"read_statement reads one sequence; got a batch of {len(given)} rows")
        given = given[0]
    given = [int(i) for i in given]
    pad = getattr(tokenizer, "pad_token_id", None)
    if given != ids and pad is not None:
        while given and given[0] == pad and given != ids[-len(given):]:
            given = given[1:]
    if given == ids:
        return 0
    if 0 < len(given) < len(ids) and ids[-len(given):] == given:
        return len(ids) - len(given)
    raise InputError(
        f"input_ids ({len(given)} tokens) are not the tokenized prompt ({len(ids)} tokens) or its end; "
        "pass the text the model read (with task=... when the ids came from EarningsTask.encode)"
    )


def _special_token_ids(tokenizer) -> set[int]:
    special = {int(i) for i in getattr(tokenizer, "all_special_ids", []) or []}
    for index, token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(token, "special", False):
            special.add(int(index))
    return special


def _units_from_tokens(text, ids, offsets, special_ids) -> tuple[list[_Unit], list[int]]:
    """Group pieces through the tokens that cover them; give every token a unit."""
    special_ranges = [offsets[t] for t, i in enumerate(ids) if i in special_ids and offsets[t][1] > offsets[t][0]]
    pieces: list[Piece] = []
    cursor = 0
    for start, end in sorted(special_ranges) + [(len(text), len(text))]:
        if start > cursor:
            pieces.extend(_shift(p, cursor) for p in scan_pieces(text[cursor:start]))
        cursor = max(cursor, end)
    char_piece = np.full(len(text) + 1, -1, dtype=np.int64)
    for k, piece in enumerate(pieces):
        char_piece[piece.start:piece.end] = k

    parent = list(range(len(pieces)))

    def find(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    token_pieces: list[list[int]] = []
    for t, (start, end) in enumerate(offsets):
        covered = [] if ids[t] in special_ids else sorted({int(k) for k in char_piece[start:end] if k >= 0})
        token_pieces.append(covered)
        for k in covered[1:]:
            parent[find(k)] = find(covered[0])

    groups: dict[int, _Unit] = {}
    for k, piece in enumerate(pieces):
        root = find(k)
        unit = groups.get(root)
        if unit is None:
            groups[root] = unit = _Unit(kind="punct", char_start=piece.start, char_end=piece.end)
        unit.char_start, unit.char_end = min(unit.char_start, piece.start), max(unit.char_end, piece.end)
        if piece.kind == "number":
            if unit.number is None:
                unit.number = piece
            unit.kind = "number"
        elif piece.kind == "word" and unit.kind == "punct":
            unit.kind = "word"

    # Tokens -> units. -2 marks a space-only token resolved in a second pass.
    token_unit: list[_Unit | None] = [None] * len(ids)
    pending_space = []
    for t, (start, end) in enumerate(offsets):
        if ids[t] in special_ids:
            token_unit[t] = _Unit(kind="special", char_start=start, char_end=end, tokens=[t])
        elif token_pieces[t]:
            unit = groups[find(token_pieces[t][0])]
            unit.tokens.append(t)
            token_unit[t] = unit
        elif end > start and any(c in "\r\n" for c in text[start:end]):
            lead = len(text[start:end]) - len(text[start:end].lstrip(" \t"))
            token_unit[t] = _Unit(kind="break", char_start=start + lead, char_end=end, tokens=[t])
        elif end > start:
            pending_space.append(t)
    for t in reversed(pending_space):  # from the end, so a run of space tokens follows its next unit
        target = None
        nxt = token_unit[t + 1] if t + 1 < len(ids) else None
        prev = token_unit[t - 1] if t > 0 else None
        if nxt is not None and nxt.kind not in ("break", "special"):
            target = nxt
        elif prev is not None and prev.kind not in ("break", "special"):
            target = prev
        if target is not None:
            target.tokens.append(t)
            token_unit[t] = target

    units = {id(u): u for u in token_unit if u is not None}
    ordered = sorted(units.values(), key=lambda u: min(u.tokens))
    for unit in ordered:
        unit.tokens.sort()
        unit.text = text[unit.char_start:unit.char_end]
    index = {id(u): k for k, u in enumerate(ordered)}
    return ordered, [index[id(u)] if u is not None else -1 for u in token_unit]


def _shift(piece: Piece, by: int) -> Piece:
    return replace(piece, start=piece.start + by, end=piece.end + by)


# ---------------------------------------------------------------- years
def _is_year_candidate(unit: _Unit) -> bool:
    return unit.kind == "number" and unit.number is not None and unit.number.year_like


def _mark_years(text: str, by_line: dict[int, list[_Unit]]) -> dict[int, list[int]]:
    """Set ``is_year`` on year units; return ``{line: [years]}`` of header rows."""
    headers: dict[int, list[int]] = {}
    for line, units in by_line.items():
        words = [_bare(u.text) if u.kind == "word" else u.text.strip() for u in units]
        # day numbers of dates ("December 31") do not stop a line from being a header row
        numbers = [u for i, u in enumerate(units) if u.kind == "number" and not (i > 0 and words[i - 1] in _MONTHS)]
        candidates = [u for u in numbers if _is_year_candidate(u)]
        for i, unit in enumerate(units):
            if not _is_year_candidate(unit):
                continue
            after = words[i + 1] if i + 1 < len(units) else ""
            before = [w for w, u in zip(words[:i], units[:i]) if w not in ("(", "[")]
            if after.startswith(":") or before and units[i - 1].kind == "word" and before[-1] in YEAR_CUES or len(before) >= 3 and before[-1] == "," and before[-3] in _MONTHS:
                unit.is_year = True
        has_time_word = any(u.kind == "word" and w in YEAR_CUES for u, w in zip(units, words))
        if candidates and len(candidates) == len(numbers) and (len(candidates) >= 2 or has_time_word):
            for unit in candidates:
                unit.is_year = True
            headers[line] = [int(abs(u.number.value)) for u in candidates]
    for units in by_line.values():
        for unit in units:
            if unit.is_year:
                unit.year = int(abs(unit.number.value))
    return headers


# ---------------------------------------------------------------- line items
def _find_line_items(text, by_line, units, header_years, line_starts, lexicon):
    """Merge the name words of each row into one unit; give numbers their row and year."""
    line_items: list[tuple[_Unit, list[_Unit]]] = []
    header_lines = sorted(header_years)
    merged_away: set[int] = set()
    for line in sorted(by_line):
        row = by_line[line]
        run_end = 0
        while run_end < len(row):
            unit = row[run_end]
            token_text = text[unit.char_start:unit.char_end]
            if run_end > 0 and _COLUMN_GAP.search(text[row[run_end - 1].char_end:unit.char_start]):
                break
            if unit.kind == "word" or (unit.kind == "punct" and token_text in _NAME_PUNCT):
                run_end += 1
                continue
            break
        name_units = row[:run_end]
        while name_units and name_units[-1].kind == "punct" and not (
            text[name_units[-1].char_start:name_units[-1].char_end] == ")"
            and any(text[u.char_start:u.char_end] == "(" for u in name_units)
        ):
            name_units = name_units[:-1]
        if not any(u.kind == "word" for u in name_units) or name_units[0].kind != "word":
            _assign_year_columns(text, line, row, [], header_years, by_line, line_starts)
            continue
        tail = row[len(name_units):]
        values = [u for u in tail if u.kind == "number" and not u.is_year]
        tail_words_ok = all(_bare(u.text) in COLUMN_WORDS for u in tail if u.kind == "word")
        if not values or not tail_words_ok:
            _assign_year_columns(text, line, row, [], header_years, by_line, line_starts)  # "2022:" labels only
            continue
        name_text = text[name_units[0].char_start:name_units[-1].char_end]
        name = _merge_units(name_units, "line_item_name")
        name.line_item = name_text
        name.category = lexicon.category_of(name_text)
        merged_away.update(id(u) for u in name_units[1:])
        by_line[line] = [name] + tail
        _assign_year_columns(text, line, tail, header_lines, header_years, by_line, line_starts)
        for u in tail:
            if u.kind == "number":  # values and the year labels of the row
                u.line_item = name_text
        line_items.append((name, values))
    # the merged name takes the place of its first word; the other words go
    replacement = {id(name.members[0]): name for name, _ in line_items}
    kept = [replacement.get(id(u), u) for u in units if id(u) not in merged_away]
    return kept, line_items


def _merge_units(parts: list[_Unit], kind: str) -> _Unit:
    tokens = sorted(t for p in parts for t in p.tokens)
    return _Unit(
        kind=kind,
        char_start=parts[0].char_start,
        char_end=parts[-1].char_end,
        tokens=tokens,
        line=parts[0].line,
        members=list(parts),
    )


def _assign_year_columns(text, line, tail, header_lines, header_years, by_line, line_starts):
    """Years for the numbers of one row: "2022:" labels, else the header row's columns."""
    pending_year: int | None = None
    unlabeled: list[_Unit] = []
    after_change = False
    for unit in tail:
        word = _bare(unit.text)
        if unit.is_year:
            pending_year = unit.year
            after_change = False
        elif unit.kind == "word" and word in ("change", "chg", "yoy"):
            after_change = True
        elif unit.kind == "number":
            if pending_year is not None:
                unit.year = pending_year
            elif not after_change:
                unlabeled.append(unit)
            pending_year = None
            after_change = False
    if not unlabeled:
        return
    above = [h for h in header_lines if h < line]
    if not above:
        return
    header_line = above[-1]
    years = header_years[header_line]
    header_units = [u for u in by_line[header_line] if u.is_year]
    if len(unlabeled) == len(years):
        for unit, year in zip(unlabeled, years):
            unit.year = year
        return
    header_cols = [u.char_end - line_starts[header_line] for u in header_units]
    taken: set[int] = set()
    for unit in unlabeled:
        col = unit.char_end - line_starts[line]
        best = min(range(len(header_cols)), key=lambda k: abs(header_cols[k] - col))
        if abs(header_cols[best] - col) <= _ALIGN_TOLERANCE and best not in taken:
            unit.year = header_units[best].year
            taken.add(best)


# ---------------------------------------------------------------- categories
def _assign_categories(by_line, lexicon: Lexicon) -> None:
    """Lexicon categories for words (phrases matched across words on a line)."""
    for units in by_line.values():
        run: list[_Unit] = []
        for unit in units + [None]:
            if unit is not None and unit.kind == "word":
                run.append(unit)
                continue
            if unit is not None and unit.kind == "punct" and run and unit.text.strip() in _PHRASE_PUNCT:
                continue
            if run:
                words = [normalize_word(_bare(u.text)) for u in run]
                for start, end, category in lexicon.match(words, normalized=True):
                    for u in run[start:end]:
                        u.category = category
                run = []
        for unit in units:
            if unit.kind == "number":
                unit.category = "temporal" if unit.is_year else "numeric"


# ---------------------------------------------------------------- assemble
def _assemble(text, ids, offsets, units, line_items, line_starts, statement_range, header_years):
    spans: list[Span] = []
    token_to_span = np.full(len(ids), -1, dtype=np.int64)
    span_of_unit: dict[int, int] = {}
    for unit in units:
        index = len(spans)
        span_of_unit[id(unit)] = index
        kind = unit.kind
        value = None
        unit_symbol = None
        if kind == "number":
            if unit.is_year:
                kind, value = "year", float(unit.year)
            else:
                value = unit.number.value
                unit_symbol = unit.number.unit
        tokens = unit.tokens
        spans.append(
            Span(
                index=index,
                kind=kind,
                text=text[unit.char_start:unit.char_end],
                char_start=unit.char_start,
                char_end=unit.char_end,
                token_start=tokens[0],
                token_end=tokens[-1] + 1,
                line=unit.line,
                category=unit.category,
                value=value,
                year=unit.year,
                line_item=unit.line_item,
                unit=unit_symbol,
                in_statement=statement_range[0] <= unit.char_start < statement_range[1],
            )
        )
        token_to_span[tokens[0]:tokens[-1] + 1] = index
    items = [
        LineItem(
            name=name.line_item,
            line=name.line,
            name_span=span_of_unit[id(name)],
            number_spans=tuple(span_of_unit[id(v)] for v in values),
            category=name.category,
        )
        for name, values in line_items
    ]
    bounds = line_starts + [len(text) + 1]
    lines = [(k, bounds[k], max(bounds[k], bounds[k + 1] - 1)) for k in range(len(line_starts))]
    return StatementLayout(
        text=text,
        input_ids=list(ids),
        token_offsets=list(offsets),
        spans=spans,
        token_to_span=token_to_span,
        line_items=items,
        lines=lines,
        statement_range=statement_range,
        header_years=dict(header_years),
    )


def _drop_leading_tokens(layout: StatementLayout, dropped: int) -> StatementLayout:
    """The layout of the prompt's last ``T - dropped`` tokens (start truncated)."""
    keep_old = [s for s in layout.spans if s.token_end > dropped]
    renumber = {s.index: k for k, s in enumerate(keep_old)}
    spans = [
        replace(s, index=renumber[s.index], token_start=max(s.token_start, dropped) - dropped,
                token_end=s.token_end - dropped)
        for s in keep_old
    ]
    token_to_span = np.array([renumber.get(int(i), -1) if i >= 0 else -1 for i in layout.token_to_span[dropped:]],
                             dtype=np.int64)
    items = [
        replace(item, name_span=renumber[item.name_span],
                number_spans=tuple(renumber[k] for k in item.number_spans if k in renumber))
        for item in layout.line_items
        if item.name_span in renumber
    ]
    return StatementLayout(
        text=layout.text,
        input_ids=layout.input_ids[dropped:],
        token_offsets=layout.token_offsets[dropped:],
        spans=spans,
        token_to_span=token_to_span,
        line_items=items,
        lines=layout.lines,
        statement_range=layout.statement_range,
        header_years=layout.header_years,
    )
