"""Digits as written -> the amount they stand for, by number locale.

A *digit cluster* is a run of digits with ``,`` or ``.`` between them ("1,234.56",
"1.234,56", "12,34,567"). How it reads depends on the convention the statement
was written in, which the user names with ``number_locale``:

- ``"en"`` (default): ``,`` groups thousands, ``.`` is the decimal point
  ("1,234,567.89").
- ``"de"`` (also most of continental Europe): ``.`` groups thousands, ``,`` is the
  decimal comma ("1.234.567,89").
- ``"in"`` (India, the lakh/crore system): ``,`` groups the last three digits and then
  pairs ("12,34,567.89"); Western grouping ("1,234,567") is read too.

A cluster that the locale cannot read ("1.234,56" or "12,34,567" under ``"en"``) is
never cut into two numbers and never given a guessed value: it is read as one
number whose amount is unknown (``None``), and the reader warns, naming the locale
that would read it.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from finwidget.errors import InputError

NUMBER_LOCALES = ("en", "de", "in")

_PATTERNS = {
    "en": re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+"),
    "de": re.compile(r"\d{1,3}(?:\.\d{3})+(?:,\d+)?|\d+(?:,\d+)?|,\d+"),
    "in": re.compile(r"\d{1,2}(?:,\d{2})*,\d{3}(?:\.\d+)?|\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+"),
}
_GROUP = {"en": ",", "de": ".", "in": ","}


def check_locale(number_locale: str) -> str:
    """``number_locale`` if it is one of ``NUMBER_LOCALES``, else an ``InputError``."""
    if not isinstance(number_locale, str) or number_locale not in NUMBER_LOCALES:
        raise InputError(
            f"number_locale must be one of {', '.join(repr(x) for x in NUMBER_LOCALES)} "
            f"('en': 1,234.56; 'de': 1.234,56; 'in': 12,34,567.89), got {number_locale!r}"
        )
    return number_locale


def parse_cluster(cluster: str, number_locale: str = "en") -> Decimal | None:
    """The unsigned amount of a digit cluster, or None when the locale cannot read it whole."""
    if not _PATTERNS[number_locale].fullmatch(cluster):
        return None
    plain = cluster.replace(_GROUP[number_locale], "")
    if number_locale == "de":
        plain = plain.replace(",", ".")
    try:
        return Decimal(plain)
    except InvalidOperation:  # pragma: no cover - the patterns admit only digits and one point
        return None


def locales_that_read(cluster: str) -> list[str]:
    """The locales under which ``cluster`` reads whole (for the warning's advice)."""
    return [loc for loc in NUMBER_LOCALES if _PATTERNS[loc].fullmatch(cluster)]


class NumberFormatWarning(UserWarning):
    """Digits the number locale cannot read whole were kept as one number with no value."""
