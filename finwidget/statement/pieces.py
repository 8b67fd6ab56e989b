"""Cut text into the pieces a reader sees: numbers (as written), words, punctuation.

This works on characters only; ``reader.py`` then lines the pieces up with the
tokenizer's tokens. Whitespace is not a piece.

A number piece keeps its decorations: sign, currency symbol, parentheses for a
negative amount, a percent sign and a scale word, e.g. ``-1,433``, ``$(1,234.5) million``,
``12.5%``. Its value is the signed amount with the scale applied
(``$(1,234.5) million`` -> ``-1234500000.0``; ``12.5%`` -> ``12.5`` with unit ``"%"``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUMBER = re.compile(
    r"""
    (?P<open>\()?
    (?P<sign>[-+\u2212])?
    (?:(?P<currency>[$\u20ac\u00a3\u00a5])[ \t]*)?
    (?P<open2>\()?
    (?P<sign2>[-\u2212])?
    (?P<digits>\d{1,3}(?:,\d{3})+(?![\d,])(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)
    (?P<percent>[ ]?%)?
    (?P<close>\))?
    (?P<scale>[ \t]+(?:million|billion|thousand|trillion|mn|bn)\b)?
    """,
    re.VERBOSE | re.IGNORECASE,
)
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_PUNCT = re.compile(r"([^\w\s]|_)\1*", re.UNICODE)
_SCALES = {"thousand": 1e3, "million": 1e6, "mn": 1e6, "billion": 1e9, "bn": 1e9, "trillion": 1e12}
_MINUS = ("-", "\u2212")


@dataclass(frozen=True)
class Piece:
    """A run of characters ``text[start:end]`` a reader takes as one thing.

    kind: "number", "word" or "punct".
    value: the signed, scaled amount for numbers, else None.
    unit: "%" or the currency symbol for numbers that carry one, else None.
    year_like: a four-digit number from 1900 to 2099 with no sign, currency, percent or
        scale, bare or in brackets: it may be a year.
    """

    kind: str
    start: int
    end: int
    value: float | None = None
    unit: str | None = None
    year_like: bool = False


def scan_pieces(text: str) -> list[Piece]:
    """All pieces of ``text`` in order; whitespace is skipped."""
    pieces: list[Piece] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        number = _match_number(text, i)
        if number is not None:
            pieces.append(number)
            i = number.end
            continue
        word = _WORD.match(text, i)
        if word:
            pieces.append(Piece("word", i, word.end()))
            i = word.end()
            continue
        punct = _PUNCT.match(text, i)
        end = punct.end() if punct else i + 1
        pieces.append(Piece("punct", i, end))
        i = end
    return pieces


def _match_number(text: str, i: int) -> Piece | None:
    m = _NUMBER.match(text, i)
    if m is None:
        return None
    g = m.groupdict()
    opened = bool(g["open"] or g["open2"])
    closed = bool(g["close"])
    if opened and not closed:
        return None  # the bracket is punctuation; the number is read from the next character
    if g["sign"] and not g["open"] and i > 0 and (text[i - 1].isalnum() or text[i - 1] == ")"):
        return None  # "2021-2022", "10-K": a dash glued to a word or number is punctuation
    end = m.end()
    scale_word = g["scale"]
    if closed and not opened:
        end, scale_word = m.start("close"), None  # "12)" : the bracket closes something else
    digits = g["digits"]
    amount = float(digits.replace(",", ""))
    signs = (g["sign"] or "") + (g["sign2"] or "")
    negative = (opened and closed) or any(c in _MINUS for c in signs)
    scale = _SCALES[scale_word.strip().lower()] if scale_word else 1.0
    value = -amount * scale if negative else amount * scale
    unit = "%" if g["percent"] else g["currency"]
    # "(2023)" may be a year in brackets: the reader decides from the context
    plain = not any(g[k] for k in ("sign", "currency", "open2", "sign2", "percent")) and not scale_word
    year_like = plain and len(digits) == 4 and digits.isdigit() and 1900 <= int(digits) <= 2099
    return Piece("number", m.start(), end, value=value, unit=unit, year_like=year_like)
