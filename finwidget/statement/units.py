"""Pieces lined up with tokens: every token goes to exactly one unit (a span under construction).

A token that covers characters of several pieces joins them into one unit (Qwen2
writes ``%)`` or ``>$`` as one token), so every unit covers whole tokens. A token
holding only spaces belongs to the unit it precedes; a token holding a line break is
a "break" unit; special tokens (chat markers) are "special" units.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from finwidget.statement.pieces import Piece


@dataclass(eq=False)
class Unit:
    """A span under construction.

    pieces: the pieces it covers, in text order. ``number`` is its first number
    piece; ``value`` the amount shown (the number's value, scaled by a table's note).
    """

    kind: str
    char_start: int
    char_end: int
    tokens: list[int] = field(default_factory=list)
    pieces: list[Piece] = field(default_factory=list)
    number: Piece | None = None
    value: float | None = None
    unit_symbol: str | None = None
    year: int | None = None
    is_year: bool = False
    date_part: bool = False
    nil: bool = False
    category: str | None = None
    line_item: str | None = None
    line: int = 0
    members: list[Unit] = field(default_factory=list)  # merged name words
    text: str = ""

    @property
    def anchor(self) -> Piece | None:
        """The first piece that is content (not table markup), or None."""
        for piece in self.pieces:
            if not piece.markup:
                return piece
        return None

    def content_text(self, text: str) -> str:
        """The characters of its content pieces (markup left out), without spaces between."""
        return "".join(text[p.start:p.end] for p in self.pieces if not p.markup)

    @property
    def is_value(self) -> bool:
        """A number that is an amount (not a year, a date's part or a footnote marker)."""
        return self.kind == "number" and not self.is_year and not self.date_part


def units_from_tokens(text, ids, offsets, special_ids, pieces: list[Piece]) -> list[Unit]:
    """Group ``pieces`` through the tokens that cover them; give every token a unit.

    Content pieces (numbers, words, punctuation) covered by one token are joined. Table
    markup never joins two content pieces: a token that covers markup and content goes
    to the content's unit; a token that covers only markup goes to a unit of that markup
    (so ``)</td><td>(`` does not make one span of two numbers).
    """
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
        content = [k for k in covered if not pieces[k].markup]
        for k in content[1:]:
            parent[find(k)] = find(content[0])

    groups: dict[int, Unit] = {}
    for k, piece in enumerate(pieces):
        if piece.markup:
            continue
        root = find(k)
        unit = groups.get(root)
        if unit is None:
            groups[root] = unit = Unit(kind="punct", char_start=piece.start, char_end=piece.end)
        unit.char_start, unit.char_end = min(unit.char_start, piece.start), max(unit.char_end, piece.end)
        unit.pieces.append(piece)
        if piece.kind == "number":
            if unit.number is None:
                unit.number = piece
                unit.value, unit.unit_symbol = piece.value, piece.unit
                unit.date_part = piece.date_part
            unit.kind = "number"
        elif piece.kind == "word" and unit.kind == "punct":
            unit.kind = "word"
    markup_units: dict[int, Unit] = {}

    token_unit: list[Unit | None] = [None] * len(ids)
    pending_space = []
    for t, (start, end) in enumerate(offsets):
        covered = token_pieces[t]
        content = [k for k in covered if not pieces[k].markup]
        if ids[t] in special_ids:
            token_unit[t] = Unit(kind="special", char_start=start, char_end=end, tokens=[t])
        elif content or covered:
            if content:
                unit = groups[find(content[0])]
            else:
                unit = markup_units.get(covered[0])
                if unit is None:
                    piece = pieces[covered[0]]
                    unit = markup_units[covered[0]] = Unit(kind="punct", char_start=piece.start, char_end=piece.end)
                    unit.char_start = unit.char_end = -1
            for k in covered:
                if pieces[k].markup and pieces[k] not in unit.pieces:
                    unit.pieces.append(pieces[k])
            _extend_to_token(unit, text, start, end)
            unit.tokens.append(t)
            token_unit[t] = unit
        elif end > start and any(c in "\r\n" for c in text[start:end]):
            lead = len(text[start:end]) - len(text[start:end].lstrip(" \t"))
            token_unit[t] = Unit(kind="break", char_start=start + lead, char_end=end, tokens=[t])
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

    seen: dict[int, Unit] = {}
    for unit in token_unit:
        if unit is not None:
            seen.setdefault(id(unit), unit)
    ordered = sorted(seen.values(), key=lambda u: min(u.tokens))
    for unit in ordered:
        unit.tokens.sort()
        unit.pieces.sort(key=lambda p: p.start)
        unit.text = text[unit.char_start:unit.char_end]
    return ordered


def _extend_to_token(unit: Unit, text: str, start: int, end: int) -> None:
    """Widen the unit's characters to the visible characters of one of its tokens."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end <= start:
        return
    if unit.char_start < 0:
        unit.char_start, unit.char_end = start, end
    else:
        unit.char_start, unit.char_end = min(unit.char_start, start), max(unit.char_end, end)
