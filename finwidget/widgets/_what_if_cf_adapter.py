"""TEMPORARY stand-in for ``finwidget.statement.edits`` (helper cf's module) until it is merged.

Deleted after the merge; nothing outside ``finwidget.widgets.what_if`` imports it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from finwidget.errors import InputError

_NUMBER = re.compile(r"^[+-]?\d[\d,]*(\.\d+)?$")


@dataclass(frozen=True)
class SetNumber:
    span: tuple[int, int]
    value: object


@dataclass
class CounterfactualStatement:
    original: str
    text: str
    edits: list
    changes: list
    alignment: list


def _value(value) -> int:
    if isinstance(value, bool):
        raise InputError(f"not a number: {value!r}")
    if isinstance(value, (int, float)):
        return round(value)
    text = str(value).strip().replace("\u2212", "-")
    if not _NUMBER.match(text):
        raise InputError(f"{value!r} is not a number")
    return round(float(text.replace(",", "")))


def counterfactual(text: str, edits) -> CounterfactualStatement:
    out = text
    for edit in sorted(edits, key=lambda e: -e.span[0]):
        start, end = edit.span
        old = out[start:end]
        if not _NUMBER.match(old.strip()):
            raise InputError(f"{old!r} at {edit.span} is not a number")
        new = _value(edit.value)
        out = out[:start] + f"{new:,}" + out[end:]
    # the change column: current - previous on each edited line
    lines = out.split("\n")
    pattern = re.compile(r"^(.*?: change )([+-]?[\d,]+)( \| \d{4}: )([+-]?[\d,]+)( \| \d{4}: )([+-]?[\d,]+)$")
    for i, line in enumerate(lines):
        m = pattern.match(line)
        if m:
            cur, prev = int(m.group(4).replace(",", "")), int(m.group(6).replace(",", ""))
            change = cur - prev
            lines[i] = f"{m.group(1)}{'+' if change > 0 else ''}{change:,}{m.group(3)}{m.group(4)}{m.group(5)}{m.group(6)}"
    return CounterfactualStatement(text, "\n".join(lines), list(edits), [], [])
