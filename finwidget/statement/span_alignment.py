"""Which characters of an edited statement correspond to which of the original.

A ``SpanAlignment`` cuts the original text into segments that cover it without gaps:
every line item name (kind ``"line_item"``), every number (``"number"``, years
included) and the text between them (``"text"``, cut at line ends; a line break
belongs to the line it ends). Each segment has its character range in the original
and in the edited text. Only numbers change between the two, so every other segment
has the same characters, shifted.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

ALIGNED_KINDS = ("line_item", "number", "text")


@dataclass(frozen=True)
class AlignedSpan:
    """One segment: ``original[original_start:original_end]`` <-> ``edited[edited_start:edited_end]``.

    kind: one of ``ALIGNED_KINDS``. line: its 0-based line in the original.
    item: the line item of a name or number (else None). year: a number's year column.
    role: for numbers, ``"value"``, ``"change"``, ``"percent_change"``, ``"year"`` or ``"other"``.
    changed: the characters differ.
    """

    kind: str
    original_start: int
    original_end: int
    edited_start: int
    edited_end: int
    line: int
    item: str | None = None
    year: int | None = None
    role: str | None = None
    changed: bool = False

    @property
    def label(self) -> str:
        if self.kind == "line_item":
            return f"{self.item}"
        if self.kind == "number":
            where = self.year if self.year is not None else self.role
            return f"{self.item} {where}" if self.item else f"number {where}"
        return "text"


@dataclass(frozen=True)
class SpanAlignment:
    """Original character spans -> edited character spans, for every segment (text order)."""

    original: str
    edited: str
    spans: tuple[AlignedSpan, ...]

    def __len__(self) -> int:
        return len(self.spans)

    def __iter__(self):
        return iter(self.spans)

    def of_kind(self, kind: str) -> list[AlignedSpan]:
        return [s for s in self.spans if s.kind == kind]

    @property
    def changed(self) -> list[AlignedSpan]:
        return [s for s in self.spans if s.changed]

    def at_original(self, char: int) -> AlignedSpan:
        """The segment holding character ``char`` of the original."""
        starts = [s.original_start for s in self.spans]
        k = bisect.bisect_right(starts, char) - 1
        return self.spans[max(0, k)]

    def edited_range(self, start: int, end: int) -> tuple[int, int]:
        """The edited characters of the original range ``[start, end)`` (whole segments)."""
        first, last = self.at_original(start), self.at_original(max(start, end - 1))
        return first.edited_start, last.edited_end

    def to_frame(self):
        """One row per segment, with the original and edited characters as text."""
        import pandas as pd

        return pd.DataFrame([{
            "kind": s.kind, "line": s.line, "item": s.item, "year": s.year, "role": s.role,
            "original_start": s.original_start, "original_end": s.original_end,
            "edited_start": s.edited_start, "edited_end": s.edited_end,
            "original_text": self.original[s.original_start:s.original_end],
            "edited_text": self.edited[s.edited_start:s.edited_end], "changed": s.changed,
        } for s in self.spans])


def build_span_alignment(original: str, edited: str, reading, numbers: dict, replaced: list) -> SpanAlignment:
    """Segments of ``original`` (from a ``NumberReading``) and their place in ``edited``.

    numbers: ``{(original_start, original_end): (edited_start, edited_end)}`` of every
        rewritten number.
    replaced: ``[(original_start, original_end, edited_start, edited_end)]`` of every
        replaced range in text order (a number, with the column padding before it when an
        aligned column was re-padded).
    """
    marks = [(row.name_start, row.name_end, "line_item", row.name, None, None) for row in reading.items]
    marks += [(s.start, s.end, "number", s.item, s.year, s.role) for s in reading.slots]
    marks.sort()
    line_starts = [0] + [k + 1 for k, ch in enumerate(original) if ch == "\n"]
    ends = [end for _, end, _, _ in replaced]
    cumulative = [0]
    for start, end, edited_start, edited_end in replaced:
        cumulative.append(cumulative[-1] + (edited_end - edited_start) - (end - start))

    def to_edited(char: int) -> int:  # a character outside every replaced range
        return char + cumulative[bisect.bisect_right(ends, char)]

    def line_of(char: int) -> int:
        return bisect.bisect_right(line_starts, char) - 1

    spans: list[AlignedSpan] = []

    def add(kind, start, end, edited_start, edited_end, *rest) -> None:
        changed = original[start:end] != edited[edited_start:edited_end]
        spans.append(AlignedSpan(kind, start, end, edited_start, edited_end, line_of(start), *rest, changed=changed))

    def add_text(start: int, end: int, edited_end: int) -> None:
        while start < end:
            cut = original.find("\n", start, end)
            stop = end if cut < 0 else cut + 1
            add("text", start, stop, to_edited(start), edited_end if stop == end else to_edited(stop))
            start = stop

    cursor = 0
    for start, end, kind, item, year, role in marks:
        if start < cursor:  # a number inside a name ("Notes due 2030"): the name wins
            continue
        edited_start, edited_end = numbers.get((start, end), (None, None))
        if edited_start is None:
            edited_start, edited_end = to_edited(start), to_edited(start) + (end - start)
        add_text(cursor, start, edited_start)
        add(kind, start, end, edited_start, edited_end, item, year, role)
        cursor = end
    add_text(cursor, len(original), len(edited))
    return SpanAlignment(original, edited, tuple(spans))
