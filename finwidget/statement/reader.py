"""``read_statement``: line the statement's words, numbers and rows up with the tokens.

How tokens become spans:

1. ``structure.py`` finds the rows and cells of the text (markdown pipe tables, HTML
   ``<tr>``/``<td>`` tables, CSV-like rows, space- or tab-aligned 10-K tables, prose) and
   the table markup (pipes, tags, separators), and notes such as "(in millions, except
   per share data)".
2. ``pieces.py`` cuts the text into pieces: whole numbers with their sign, currency,
   brackets, percent, bps, "x" and scale word, read by the number locale; words;
   punctuation; each piece of markup.
3. ``units.py`` joins the pieces a token covers into one unit, so every span covers
   whole tokens (Qwen2 writes ``%)`` or ``>$`` as one token).
4. ``periods.py`` finds dates, fiscal years and quarters; ``rows.py`` reads header rows,
   line items, year columns, nil dashes, footnote markers, the table's scale and the
   years of prose numbers.
"""

from __future__ import annotations

import bisect
import re
import warnings
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from finwidget.errors import InputError
from finwidget.statement.layout import LineItem, Span, StatementLayout
from finwidget.statement.lexicon import Lexicon, normalize_word
from finwidget.statement.numbers import NumberFormatWarning, check_locale, locales_that_read
from finwidget.statement.periods import find_periods
from finwidget.statement.pieces import scan_pieces
from finwidget.statement.rows import RowReader, bare
from finwidget.statement.structure import find_structure
from finwidget.statement.units import units_from_tokens

_PHRASE_PUNCT = frozenset(["&", "-", "'", "\u2019", "/", "."])


def read_statement(
    text: str,
    tokenizer,
    input_ids: Sequence[int] | None = None,
    *,
    task=None,
    lexicon: Lexicon | None = None,
    add_special_tokens: bool | None = None,
    number_locale: str = "en",
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
        number_locale: how digits are grouped: ``"en"`` (1,234.56, the default), ``"de"``
            (1.234,56) or ``"in"`` (12,34,567.89). A number the locale cannot read whole
            gets no value (``Span.value is None``) and a ``NumberFormatWarning``.

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
    lexicon = _check_lexicon(lexicon)
    check_locale(number_locale)
    if task is not None and not (callable(getattr(task, "prompt", None)) and hasattr(task, "use_chat_template")):
        raise InputError(f"task must be an EarningsTask (or a task with prompt()), got {type(task).__name__}")
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

    try:
        encoding = tokenizer(prompt, return_offsets_mapping=True, add_special_tokens=add_special_tokens)
    except Exception as exc:  # the tokenizer's own errors (e.g. a lone surrogate) become ours
        raise InputError(f"the tokenizer cannot encode this statement: {type(exc).__name__}: {exc}") from exc
    ids = [int(i) for i in encoding["input_ids"]]
    offsets = [(int(s), int(e)) for s, e in encoding["offset_mapping"]]
    dropped = _check_input_ids(input_ids, ids, tokenizer)

    layout = _read(prompt, ids, offsets, tokenizer, statement_range, lexicon, number_locale)
    return _drop_leading_tokens(layout, dropped) if dropped else layout


def read_tokens(
    input_ids: Sequence[int],
    tokenizer,
    *,
    statement: str | None = None,
    lexicon: Lexicon | None = None,
    number_locale: str = "en",
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
        number_locale: ``"en"``, ``"de"`` or ``"in"``, as for ``read_statement``.
    """
    from finwidget.statement.token_text import text_and_offsets

    check_locale(number_locale)
    lexicon = _check_lexicon(lexicon)
    ids = _token_ids(input_ids, tokenizer, "read_tokens")
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
    return _read(text, ids, offsets, tokenizer, statement_range, lexicon, number_locale)


def _check_lexicon(lexicon) -> Lexicon:
    if lexicon is None:
        return Lexicon.default()
    if not isinstance(lexicon, Lexicon):
        raise InputError(f"lexicon must be a finwidget Lexicon, got {type(lexicon).__name__}")
    return lexicon


def _read(prompt, ids, offsets, tokenizer, statement_range, lexicon, number_locale) -> StatementLayout:
    special_ids = _special_token_ids(tokenizer)
    special_ranges = sorted(offsets[t] for t, i in enumerate(ids) if i in special_ids and offsets[t][1] > offsets[t][0])
    # chat markers are read as blanks, so "<|im_start|>" is neither a pipe row nor a tag
    chars = list(prompt)
    for start, end in special_ranges:
        chars[start:end] = " " * (end - start)
    plain = "".join(chars)
    structure = find_structure(plain)
    pieces = scan_pieces(plain, structure.markup, number_locale, whole=sorted(structure.dash_entities))
    units = units_from_tokens(prompt, ids, offsets, special_ids, pieces)
    line_starts = [0] + [m.end() for m in re.finditer(r"\r\n|\n|\r", prompt)]
    for unit in units:
        unit.line = bisect.bisect_right(line_starts, unit.char_start) - 1
    reading = list(plain)  # markup blanked: "December&#160;31, 2024" is a date
    for start, end in structure.markup:
        reading[start:end] = " " * (end - start)
    reader = RowReader(plain, structure, units, find_periods("".join(reading)), line_starts, lexicon)
    units, line_items, header_years = reader.read()
    _assign_categories(plain, units, lexicon)
    _warn_unread(prompt, units, number_locale)
    return _assemble(prompt, ids, offsets, units, line_items, line_starts, statement_range, header_years)


def _warn_unread(text, units, number_locale) -> None:
    unread = [u for u in units if u.kind == "number" and u.number is not None and u.number.unread]
    if not unread:
        return
    shown = [text[u.number.start:u.number.end] for u in unread[:3]]
    shown = [x if len(x) <= 24 else x[:20] + "..." for x in shown]
    readers = sorted({loc for u in unread for loc in locales_that_read(_digits(text, u))} - {number_locale})
    advice = f"; pass number_locale={readers[0]!r} if the statement is written that way" if readers else ""
    warnings.warn(
        f"{len(unread)} number(s) cannot be read whole with number_locale={number_locale!r} "
        f"(e.g. {', '.join(repr(s) for s in shown)}); they are kept as one number each with no value{advice}",
        NumberFormatWarning,
        stacklevel=3,
    )


def _digits(text, unit) -> str:
    match = re.search(r"\d(?:[\d.,]*\d)?", text[unit.number.start:unit.number.end])
    return match.group() if match else ""


# ---------------------------------------------------------------- tokens -> units
def _check_input_ids(input_ids, ids: list[int], tokenizer) -> int:
    """Number of leading tokens of ``ids`` missing from ``input_ids`` (truncation)."""
    if input_ids is None:
        return 0
    if hasattr(input_ids, "tolist"):
        input_ids = input_ids.tolist()
    if isinstance(input_ids, (list, tuple)) and input_ids and isinstance(input_ids[0], (list, tuple)):
        if len(input_ids) != 1:
            raise InputError(f"read_statement reads one sequence; got a batch of {len(input_ids)} rows")
        input_ids = input_ids[0]
    given = _token_ids(input_ids, tokenizer, "read_statement")
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


def _token_ids(input_ids, tokenizer, caller: str) -> list[int]:
    """``input_ids`` as a list of ints in the tokenizer's range, else an ``InputError``."""
    import numbers

    if hasattr(input_ids, "tolist"):
        input_ids = input_ids.tolist()
    if isinstance(input_ids, (str, bytes)) or not hasattr(input_ids, "__iter__"):
        raise InputError(f"{caller} needs token ids as a list or 1-D tensor of ints, got {type(input_ids).__name__}")
    ids = list(input_ids)
    bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, numbers.Integral)]
    if bad:
        raise InputError(f"{caller} needs whole-number token ids; got {type(bad[0]).__name__} {str(bad[0])[:40]!r}")
    ids = [int(i) for i in ids]
    size = len(tokenizer) if hasattr(tokenizer, "__len__") else None
    outside = [i for i in ids if i < 0 or (size is not None and i >= size)]
    if outside:
        raise InputError(f"token id {outside[0]} is outside the tokenizer's vocabulary (0..{(size or 0) - 1})")
    return ids


def _special_token_ids(tokenizer) -> set[int]:
    special = {int(i) for i in getattr(tokenizer, "all_special_ids", []) or []}
    for index, token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(token, "special", False):
            special.add(int(index))
    return special


# ---------------------------------------------------------------- categories
def _assign_categories(text, units, lexicon: Lexicon) -> None:
    """Lexicon categories for words (phrases matched across the words of a line)."""
    run: list = []

    def flush():
        if run:
            words = [normalize_word(bare(u.content_text(text))) for u in run]
            for start, end, category in lexicon.match(words, normalized=True):
                for u in run[start:end]:
                    u.category = category
            run.clear()

    line = None
    for unit in units:
        if unit.line != line:
            flush()
            line = unit.line
        if unit.kind == "word":
            run.append(unit)
        elif unit.kind == "punct" and run and unit.content_text(text) in _PHRASE_PUNCT:
            continue
        else:
            flush()
        if unit.kind == "number":
            unit.category = "temporal" if unit.is_year else "numeric"
    flush()


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
                value = unit.value
                unit_symbol = unit.unit_symbol
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
