"""Cut text into the pieces a reader sees: numbers (as written), words, punctuation.

This works on characters only; ``reader.py`` then lines the pieces up with the
tokenizer's tokens. Whitespace is not a piece.

A number piece keeps its decorations: sign, currency symbol, parentheses for a
negative amount, a percent sign, "bps", an "x" multiple and a scale word, e.g.
``-1,433``, ``$(1,234.5) million``, ``12.5%``, ``25 bps``, ``3.2x``, ``$3.7bn``. Its value is
the signed amount with the scale applied (``$(1,234.5) million`` -> ``-1234500000.0``;
``12.5%`` -> ``12.5`` with unit ``"%"``). Digits are read by the number locale
(``numbers.py``); a cluster the locale cannot read is one number piece with no value.

Table markup found by ``structure.py`` (pipes, HTML tags and entities, CSV separators
and quotes) is given as character ranges: each becomes one punctuation piece with
``markup=True`` and is never part of a number or a word.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from decimal import Decimal

from finwidget.statement.numbers import parse_cluster

_NUMBER = re.compile(
    r"""
    (?P<open>\()?
    (?P<sign>[-+\u2212\u2013])?
    (?:(?P<currency>US\$|[$\u20ac\u00a3\u00a5\u20b9]|Rs\.?)[ \t\u00a0]*)?
    (?P<open2>\()?
    (?P<sign2>[-\u2212\u2013])?
    (?P<digits>\d(?:[\d.,]*\d)?|\.\d+)
    (?P<percent>[ ]?%)?
    (?P<close>\))?
    (?P<percent2>%)?
    (?P<suffix>[ ]?bps?\b|[ ]basis[ ]points?\b|[x\u00d7](?!\w))?
    (?P<scale>[ \t]+(?:million|billion|thousand|trillion|mn|bn|crore|lakh)s?\b|[ \t]+(?:mio|mrd)\b\.?|(?:mn|bn|m|b|k)\b)?
    """,
    re.VERBOSE | re.IGNORECASE,
)
#: Numeric dates, read as their parts ("2023-12-31", "12/31/2023", "31.12.2023").
_NUMERIC_DATE = re.compile(
    r"(?<![\d./])(?:(?P<iso>(?:19|20)\d{2})-(?:0[1-9]|1[0-2])-(?:[0-2]\d|3[01])"
    r"|(?:\d{1,2})(?P<sep>[/.])(?:\d{1,2})(?P=sep)(?P<year>(?:19|20)\d{2}|\d{2}))(?![\d.,/-]?\d)"
)
_DIGITS = re.compile(r"\d+")
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_PUNCT = re.compile(r"([^\w\s]|_)\1*", re.UNICODE)
_SCALES = {
    "thousand": Decimal(10) ** 3, "k": Decimal(10) ** 3, "lakh": Decimal(10) ** 5,
    "million": Decimal(10) ** 6, "mn": Decimal(10) ** 6, "m": Decimal(10) ** 6, "crore": Decimal(10) ** 7,
    "billion": Decimal(10) ** 9, "bn": Decimal(10) ** 9, "b": Decimal(10) ** 9, "trillion": Decimal(10) ** 12,
    "mio": Decimal(10) ** 6, "mio.": Decimal(10) ** 6, "mrd": Decimal(10) ** 9, "mrd.": Decimal(10) ** 9,
}
_MINUS = ("-", "\u2212", "\u2013")


@dataclass(frozen=True)
class Piece:
    """A run of characters ``text[start:end]`` a reader takes as one thing.

    kind: "number", "word" or "punct".
    value: the signed, scaled amount for numbers (None when the digits cannot be
        read whole in the number locale), else None.
    unit: "%", "bps", "x" or the currency symbol for numbers that carry one, else None.
    year_like: a four-digit number from 1900 to 2099 with no sign, currency, percent or
        scale, bare or in brackets: it may be a year.
    scaled: the number carries its own scale word ("million", "bn").
    unread: digits the number locale cannot read whole ("1.234,56" under "en").
    markup: table markup (a pipe, an HTML tag or entity, a CSV separator or quote).
    date_part: a day, month or year of a numeric date ("2023-12-31").
    footnote: a footnote marker glued to a word ("Net sales(1)").
    """

    kind: str
    start: int
    end: int
    value: float | None = None
    unit: str | None = None
    year_like: bool = False
    scaled: bool = False
    unread: bool = False
    markup: bool = False
    date_part: bool = False
    footnote: bool = False

    @property
    def is_content(self) -> bool:
        return not self.markup


def scan_pieces(text: str, markup: Iterable[tuple[int, int]] = (), number_locale: str = "en",
                whole: Iterable[tuple[int, int]] = ()) -> list[Piece]:
    """All pieces of ``text`` in order; whitespace is skipped.

    ``markup``: sorted, non-overlapping character ranges that are table markup.
    ``whole``: ranges read as one punctuation piece that is content (``&mdash;``).
    """
    pieces: list[Piece] = []
    cursor = 0
    ranges = sorted([(s, e, True) for s, e in markup] + [(s, e, False) for s, e in whole])
    for start, end, is_markup in ranges + [(len(text), len(text), True)]:
        if start > cursor:
            pieces.extend(_scan_plain(text, cursor, start, number_locale))
        if end > start >= cursor:
            pieces.append(Piece("punct", start, end, markup=is_markup))
        cursor = max(cursor, end)
    return _signed_by_entity(text, pieces)


def _signed_by_entity(text: str, pieces: list[Piece]) -> list[Piece]:
    """``&minus;215``: a dash entity right before a number is its minus sign."""
    out: list[Piece] = []
    for piece in pieces:
        before = out[-1] if out else None
        if (piece.kind == "number" and before is not None and before.kind == "punct" and not before.markup
                and before.end == piece.start and text[before.start:before.end].startswith("&")
                and piece.value is not None and piece.value >= 0 and not piece.date_part):
            out[-1] = replace(piece, start=before.start, value=-piece.value if piece.value else 0.0, year_like=False)
            continue
        out.append(piece)
    return out


def _scan_plain(text: str, i: int, n: int, number_locale: str) -> list[Piece]:
    pieces: list[Piece] = []
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        date = _NUMERIC_DATE.match(text, i, n) if ch.isdigit() and (i == 0 or not text[i - 1].isalnum()) else None
        if date is not None:
            pieces.extend(_date_pieces(text, date))
            i = date.end()
            continue
        number = _match_number(text, i, n, number_locale)
        if number is not None:
            pieces.append(number)
            i = number.end
            continue
        word = _WORD.match(text, i, n)
        if word:
            pieces.append(Piece("word", i, word.end()))
            i = word.end()
            continue
        punct = _PUNCT.match(text, i, n)
        end = punct.end() if punct else i + 1
        pieces.append(Piece("punct", i, end))
        i = end
    return pieces


def _date_pieces(text: str, match: re.Match) -> list[Piece]:
    out = []
    last = match.start()
    year_start = match.start("iso") if match.group("iso") else match.start("year")
    for digits in _DIGITS.finditer(text, match.start(), match.end()):
        if digits.start() > last:
            out.append(Piece("punct", last, digits.start()))
        is_year = digits.start() == year_start
        out.append(Piece("number", digits.start(), digits.end(), value=float(digits.group()),
                         year_like=is_year, date_part=True))
        last = digits.end()
    return out


def _match_number(text: str, i: int, n: int, number_locale: str) -> Piece | None:
    m = _NUMBER.match(text, i, n)
    if m is None:
        return None
    g = m.groupdict()
    opened = bool(g["open"] or g["open2"])
    closed = bool(g["close"])
    if opened and not closed:
        return None  # the bracket is punctuation; the number is read from the next character
    if g["sign"] and not g["open"] and i > 0 and (text[i - 1].isalnum() or text[i - 1] in ")%"):
        return None  # "2021-2022", "10-K": a dash glued to a word or number is punctuation
    if g["currency"] and g["currency"][0].isalpha() and i > 0 and text[i - 1].isalpha():
        return None  # "Mrs5": letters, not rupees
    end = m.end()
    scale_word, suffix = g["scale"], g["suffix"]
    if closed and not opened:
        end, scale_word, suffix = m.start("close"), None, None  # "12)": the bracket closes something else
    digits = g["digits"]
    if (opened and closed and not any(g[k] for k in ("sign", "currency", "sign2", "percent", "percent2"))
            and not suffix and not scale_word and re.fullmatch(r"\d{1,2}", digits)
            and i > 0 and (text[i - 1].isalpha() or text[i - 1] in ")%*")):
        return Piece("punct", i, end, footnote=True)  # "Net sales(1)": a footnote marker
    amount = parse_cluster(digits, number_locale)
    signs = (g["sign"] or "") + (g["sign2"] or "")
    negative = (opened and closed) or any(c in _MINUS for c in signs)
    scale = _SCALES[scale_word.strip().lower().rstrip("s") or "s"] if scale_word else Decimal(1)
    if amount is None:
        value = None
    else:
        value = float(-amount * scale if negative else amount * scale)
        value = 0.0 if value == 0 else value
        if not math.isfinite(value):  # more digits than a float holds: no value, never inf
            value, amount = None, None
    if g["percent"] or g["percent2"]:
        unit = "%"
    elif suffix:
        unit = "x" if suffix.strip().lower() in ("x", "\u00d7") else "bps"
    else:
        unit = g["currency"]
    # "(2023)" may be a year in brackets: the reader decides from the context
    plain = not any(g[k] for k in ("sign", "currency", "open2", "sign2", "percent", "percent2")) and not (
        scale_word or suffix)
    year_like = plain and len(digits) == 4 and digits.isdigit() and 1900 <= int(digits) <= 2099
    return Piece("number", m.start(), end, value=value, unit=unit, year_like=year_like,
                 scaled=bool(scale_word), unread=amount is None)
