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

    @property
    def is_value(self) -> bool:
        """A number that is an amount (not a year, a date's part or a footnote marker)."""
        return self.kind == "number" and not self.is_year and not self.date_part


def units_from_tokens(text, ids, offsets, special_ids, pieces: list[Piece]) -> list[Unit]:
    """Group ``pieces`` through the tokens that cover them; give every token a unit."""
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

    groups: dict[int, Unit] = {}
    for k, piece in enumerate(pieces):
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

    token_unit: list[Unit | None] = [None] * len(ids)
    pending_space = []
    for t, (start, end) in enumerate(offsets):
        if ids[t] in special_ids:
            token_unit[t] = Unit(kind="special", char_start=start, char_end=end, tokens=[t])
        elif token_pieces[t]:
            unit = groups[find(token_pieces[t][0])]
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
