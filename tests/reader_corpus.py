"""The reader corpus: statement excerpts with what the reader must find, and the checker.

``tests/data/reader_corpus.json`` holds excerpts written for finwidget (not copied from
filings) in the forms statements are pasted in: markdown pipe tables, the demo model's
labelled rows, space- or tab-aligned 10-K tables, HTML tables, CSV-like rows, prose,
and the number locales. ``check_excerpt`` reads one excerpt with a tokenizer and
returns one ``Check`` per expectation, so the test can assert them all and
``benchmarks/reader_accuracy.py`` can count them by form.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from finwidget.statement import NumberFormatWarning, read_statement

CORPUS_PATH = Path(__file__).resolve().parent / "data" / "reader_corpus.json"


@dataclass(frozen=True)
class Check:
    """One expectation about one excerpt: ``ok`` says whether the reader met it."""

    excerpt: str
    form: str
    what: str
    ok: bool
    detail: str = ""


def load_corpus() -> list[dict]:
    return json.loads(CORPUS_PATH.read_text(encoding="utf-8"))["excerpts"]


def excerpt_text(excerpt: dict) -> str:
    return "\n".join(excerpt["lines"]) + "\n"


def read_excerpt(excerpt: dict, tokenizer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumberFormatWarning)
        return read_statement(excerpt_text(excerpt), tokenizer,
                              number_locale=excerpt.get("number_locale", "en"))


def _occurrence(text: str, needle: str, nth: int) -> tuple[int, int]:
    at = -1
    for _ in range(nth + 1):
        at = text.find(needle, at + 1)
        if at < 0:
            raise ValueError(f"corpus error: {needle!r} occurs fewer than {nth + 1} times")
    return at, at + len(needle)


def _covering(layout, start: int, end: int):
    return [s for s in layout.spans if s.char_start <= start and end <= s.char_end]


def _overlapping(layout, start: int, end: int):
    return [s for s in layout.spans if s.char_start < end and start < s.char_end]


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def check_excerpt(excerpt: dict, tokenizer) -> list[Check]:
    """Every expectation of ``excerpt`` checked against ``read_statement`` with ``tokenizer``."""
    name, form = excerpt["id"], excerpt["form"]
    text = excerpt_text(excerpt)
    layout = read_excerpt(excerpt, tokenizer)
    checks: list[Check] = []

    def add(what: str, ok: bool, detail: str = "") -> None:
        checks.append(Check(name, form, what, bool(ok), detail))

    found_items = [item.name for item in layout.line_items]
    for expected in excerpt["line_items"]:
        add(f"line item {expected!r}", expected in found_items, f"found {found_items}")
    extra = [n for n in found_items if n not in excerpt["line_items"]]
    add("no other line items", not extra, f"extra {extra}")

    for entry in excerpt["numbers"]:
        written, value, year, line_item = entry[:4]
        nth = entry[4] if len(entry) > 4 else 0
        start, end = _occurrence(text, written, nth)
        # the number's span: the one number span over these characters (a token such as ">(" or
        # ",-" may also hold a character of the markup around it, so the span may reach past them)
        spans = [s for s in _overlapping(layout, start, end) if s.kind == "number"]
        label = f"{written!r}" + (f" #{nth}" if nth else "")
        if len(spans) != 1:
            got = [(s.text, s.kind) for s in layout.spans if s.char_end > start and s.char_start < end]
            for what in ("span", "value", "year", "line item"):
                add(f"{label} {what}", False, f"no single number span; spans there: {got}")
            continue
        span = spans[0]
        add(f"{label} span", True)
        add(f"{label} value", _same(span.value, value), f"got {span.value}, want {value}")
        add(f"{label} year", span.year == year, f"got {span.year}, want {year}")
        add(f"{label} line item", span.line_item == line_item, f"got {span.line_item!r}, want {line_item!r}")

    for written in excerpt.get("not_numbers", []):
        start, end = _occurrence(text, written, 0)
        kinds = [s.kind for s in _covering(layout, start, end)]
        add(f"{written!r} is not a number", kinds and not any(k in ("number", "year") for k in kinds),
            f"covering kinds {kinds}")

    for entry in excerpt.get("years", []):
        written, year = entry[:2]
        nth = entry[2] if len(entry) > 2 else 0
        start, end = _occurrence(text, written, nth)
        spans = [s for s in _covering(layout, start, end) if s.kind == "year"]
        add(f"year {written!r}", len(spans) == 1 and spans[0].year == year,
            f"got {[(s.text, s.kind, s.year) for s in _covering(layout, start, end)]}")
    return checks
