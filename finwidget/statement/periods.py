"""Dates, fiscal years and quarters as written: where their year is, and which digits are parts.

``find_periods(text)`` finds "December 31, 2023", "Dec. 31, 2023", "31 December 2023",
"2023-12-31", "12/31/2023", "FY2023", "FY23", "fiscal 2023", "Q3 FY2023", "3Q23",
"H1 2023" and returns, for each, the character range of its year digits with the year,
and the ranges of its other digits (day, month, quarter), which are parts of the date
and not amounts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
          r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
_YEAR4 = r"(?P<year>(?:19|20)\d{2})"
_YEAR = r"(?P<year>(?:19|20)\d{2}|'?\d{2})"
_PATTERNS = [
    # December 31, 2023 / Dec. 31 2023
    re.compile(rf"\b{_MONTH}\s+(?P<day>\d{{1,2}})(?:st|nd|rd|th)?,?\s+{_YEAR4}\b", re.IGNORECASE),
    # 31 December 2023
    re.compile(rf"\b(?P<day>\d{{1,2}})\s+{_MONTH},?\s+{_YEAR4}\b", re.IGNORECASE),
    # December 2023
    re.compile(rf"\b{_MONTH},?\s+{_YEAR4}\b", re.IGNORECASE),
    # 2023-12-31
    re.compile(r"(?<![\d.])(?P<year>(?:19|20)\d{2})-(?P<month>\d{2})-(?P<day>\d{2})(?!\d)"),
    # 12/31/2023, 31.12.2023, 12/31/23
    re.compile(r"(?<![\d./])(?P<month>\d{1,2})(?P<sep>[/.])(?P<day>\d{1,2})(?P=sep)(?P<year>(?:19|20)\d{2}|\d{2})(?![\d/])"),
    # Q3 FY2023, Q3 2023, Q3'23, 3Q23, 3Q FY23, H1 2023, 1H23
    re.compile(rf"\b(?:Q(?P<quarter>[1-4])|(?P<quarter2>[1-4])Q|H(?P<half>[12])|(?P<half2>[12])H)"
               rf"\s*(?:(?:FY|CY|F)\s?)?{_YEAR}\b", re.IGNORECASE),
    # FY2023, FY 2023, FY23, FY'23, CY2023
    re.compile(rf"\b(?:FY|CY)\s?{_YEAR}\b", re.IGNORECASE),
    # September 30 (a day without its year: the day is a part)
    re.compile(rf"\b{_MONTH}\s+(?P<day>\d{{1,2}})(?:st|nd|rd|th)?\b(?![.,]?\d)", re.IGNORECASE),
    # a quarter or half alone: Q3, 3Q, H1 (its digit is a part, there is no year)
    re.compile(r"\b(?:Q(?P<quarter>[1-4])|(?P<quarter2>[1-4])Q|H(?P<half>[12])|(?P<half2>[12])H)\b", re.IGNORECASE),
]


@dataclass(frozen=True)
class Period:
    """One date or period: ``text[start:end]``.

    year: the year it names, or None (a quarter alone).
    year_range: character range of the year's digits, or None.
    part_ranges: character ranges of its other digits (day, month, quarter, half).
    """

    start: int
    end: int
    year: int | None
    year_range: tuple[int, int] | None
    part_ranges: tuple[tuple[int, int], ...]


def year_of(digits: str) -> int:
    """"2023" -> 2023; "23" or "'23" -> 2023; "98" -> 1998."""
    digits = digits.lstrip("'\u2019")
    value = int(digits)
    if len(digits) == 2:
        value += 2000 if value < 70 else 1900
    return value


def find_periods(text: str) -> list[Period]:
    """Non-overlapping periods in text order (earlier patterns win over later ones)."""
    found: list[Period] = []
    taken = []
    for pattern in _PATTERNS:
        for m in pattern.finditer(text):
            if any(m.start() < end and start < m.end() for start, end in taken):
                continue
            groups = m.groupdict()
            year = year_range = None
            if groups.get("year"):
                year = year_of(groups["year"])
                start = m.start("year") + (1 if m.group("year")[0] in "'\u2019" else 0)
                year_range = (start, m.end("year"))
            parts = tuple(
                (m.start(name), m.end(name)) for name in ("day", "month", "quarter", "quarter2", "half", "half2")
                if groups.get(name)
            )
            taken.append((m.start(), m.end()))
            found.append(Period(m.start(), m.end(), year, year_range, parts))
    return sorted(found, key=lambda p: p.start)
