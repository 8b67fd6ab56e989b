"""Write a new amount in the style of a number already in the statement.

``NumberStyle.of(written, ...)`` reads how a number is written (``"$(1,234.5) million"``:
currency ``$``, negatives in brackets, thousands grouped, one decimal, scale word kept)
and ``style.write(value)`` writes another amount the same way. What a positive number
cannot show (how the statement writes negatives, whether a 3-digit number would be
grouped) comes from the rest of the statement (``StatementStyle``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from finwidget.errors import InputError
from finwidget.statement.numbers import check_locale, parse_cluster

_DIGITS = re.compile(r"\d(?:[\d.,]*\d)?|\.\d+")
_MINUS = ("-", "\u2212", "\u2013")
_GROUP = {"en": ",", "de": ".", "in": ","}
_POINT = {"en": ".", "de": ",", "in": "."}
#: Most decimals a new amount is written with when the user's value has more.
MAX_DECIMALS = 6


def decimals_of(written: str, number_locale: str = "en") -> int:
    """Digits after the decimal mark of a written number (``"1,234.50"`` -> 2 under ``"en"``)."""
    digits = _DIGITS.search(written)
    if digits is None:
        return 0
    cluster = digits.group()
    point = _POINT[number_locale]
    if point not in cluster:
        return 0
    if parse_cluster(cluster, number_locale) is None:
        return 0
    return len(cluster.rsplit(point, 1)[1])


def is_grouped(written: str, number_locale: str = "en") -> bool:
    """The number's digits carry a thousands separator (``"1,234"`` under ``"en"``)."""
    digits = _DIGITS.search(written)
    if digits is None:
        return False
    integer = digits.group().split(_POINT[number_locale])[0]
    return _GROUP[number_locale] in integer and parse_cluster(digits.group(), number_locale) is not None


@dataclass(frozen=True)
class StatementStyle:
    """How the statement as a whole writes numbers (for what one number cannot show).

    negative: ``"brackets"`` or the minus character the statement uses.
    grouped: the statement groups thousands somewhere.
    lakh: Indian grouping (``12,34,567``) is used.
    """

    negative: str = "-"
    grouped: bool = False
    lakh: bool = False

    @classmethod
    def of(cls, written_numbers, number_locale: str = "en") -> StatementStyle:
        negative = None
        grouped = lakh = False
        for written in written_numbers:
            digits = _DIGITS.search(written)
            if digits is None:
                continue
            before, after = written[:digits.start()], written[digits.end():]
            if negative is None:
                if "(" in before and ")" in after:
                    negative = "brackets"
                else:
                    minus = next((c for c in before if c in _MINUS), None)
                    negative = minus
            if is_grouped(written, number_locale):
                grouped = True
                if number_locale == "in" and re.search(r"\d,\d\d,\d{3}", digits.group()):
                    lakh = True
        return cls(negative or "-", grouped, lakh)


@dataclass(frozen=True)
class NumberStyle:
    """How one number is written.

    prefix_currency: the currency and the space after it (``"$"``, ``"$ "``, ``""``).
    sign_before_currency: ``"-$5"`` rather than ``"$-5"``.
    negative: ``"brackets"`` or a minus character.
    plus: positive amounts get a ``+``.
    grouped, lakh: thousands separators (Indian grouping for ``lakh``).
    decimals: digits after the decimal mark.
    suffix: what follows the digits (``"%"``, ``" million"``), closing bracket left out.
    bracket_after_suffix: a closing bracket goes after the suffix (``"(3.5%)"``).
    """

    prefix_currency: str
    sign_before_currency: bool
    negative: str
    plus: bool
    grouped: bool
    lakh: bool
    decimals: int
    suffix: str
    bracket_after_suffix: bool
    number_locale: str = "en"
    had_bracket: bool = False

    @classmethod
    def of(cls, written: str, statement: StatementStyle | None = None, *, plus: bool | None = None,
           number_locale: str = "en") -> NumberStyle:
        """The style of ``written``; ``plus`` overrides whether positives get a ``+``."""
        check_locale(number_locale)
        statement = statement or StatementStyle()
        digits = _DIGITS.search(written)
        if digits is None:  # a nil dash: write plainly, in the statement's style
            return cls("", True, statement.negative, bool(plus), statement.grouped, statement.lakh, 0, "", False,
                       number_locale)
        before, after = written[:digits.start()], written[digits.end():]
        bracketed = "(" in before and ")" in after
        minus = next((c for c in before if c in _MINUS), None)
        currency = re.sub(r"[()+\-\u2212\u2013]", "", before)
        currency_at = before.find(currency.strip()) if currency.strip() else -1
        sign_at = min([before.find(c) for c in "(+-\u2212\u2013" if c in before], default=-1)
        sign_before = currency_at < 0 or sign_at < 0 or sign_at < currency_at
        if bracketed:
            negative = "brackets"
        elif minus is not None:
            negative = minus
        else:
            negative = statement.negative
        close_at = after.find(")") if bracketed else -1
        suffix = after.replace(")", "", 1) if bracketed else after
        bracket_after = bracketed and close_at > 0
        integer = digits.group().split(_POINT[number_locale])[0]
        grouped = is_grouped(written, number_locale) or (len(re.sub(r"\D", "", integer)) <= 3 and statement.grouped)
        lakh = statement.lakh or (number_locale == "in" and bool(re.search(r"\d,\d\d,\d{3}", digits.group())))
        has_plus = "+" in before if plus is None else plus
        return cls(currency, sign_before, negative, has_plus, grouped, lakh,
                   decimals_of(written, number_locale), suffix, bracket_after, number_locale, bracketed)

    @property
    def bracket_outside_currency(self) -> bool:
        """A bracketed negative opens before the currency (``"($8.1)"``); a number that had no
        bracket puts it after the currency (``"$(8.1)"``, as US filings do)."""
        return self.had_bracket and self.sign_before_currency

    def write(self, value: Decimal, decimals: int | None = None) -> str:
        """``value`` written in this style (``decimals`` overrides the style's)."""
        places = self.decimals if decimals is None else decimals
        amount = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP) if places >= 0 else value
        negative = amount < 0
        body = self._digits(abs(amount), places)
        if amount == 0:
            negative = False
        sign = ""
        if negative and self.negative != "brackets":
            sign = self.negative
        elif not negative and self.plus and amount != 0:
            sign = "+"
        head = sign + self.prefix_currency if self.sign_before_currency else self.prefix_currency + sign
        if negative and self.negative == "brackets":
            # "$(8.1)" keeps its bracket inside the currency, "($8.1)" outside
            head = "(" + self.prefix_currency if self.bracket_outside_currency else self.prefix_currency + "("
            if self.bracket_after_suffix or not self.suffix.strip() or self.suffix.strip() == "%":
                return f"{head}{body}{self.suffix})"
            return f"{head}{body}){self.suffix}"
        return f"{head}{body}{self.suffix}"

    def _digits(self, amount: Decimal, places: int) -> str:
        text = f"{amount:.{places}f}"
        integer, _, fraction = text.partition(".")
        if self.grouped:
            integer = _group(integer, self.lakh)
            integer = integer.replace(",", _GROUP[self.number_locale])
        return integer + (_POINT[self.number_locale] + fraction if fraction else "")


def _group(integer: str, lakh: bool) -> str:
    if not lakh or len(integer) <= 3:
        return f"{int(integer):,}"
    head, tail = integer[:-3], integer[-3:]
    pairs = []
    while len(head) > 2:
        pairs.insert(0, head[-2:])
        head = head[:-2]
    return ",".join([head] + pairs + [tail])


def decimals_needed(value: Decimal) -> int:
    """The fewest decimals that write ``value`` exactly (at most ``MAX_DECIMALS``)."""
    exponent = value.normalize().as_tuple().exponent
    return min(MAX_DECIMALS, max(0, -int(exponent))) if isinstance(exponent, int) else 0


def parse_typed_value(value, number_locale: str = "en", what: str = "value") -> Decimal:
    """A number the user gave (``1250``, ``-3.5``, ``"1,250"``, ``"(300)"``, ``"$-1,051"``) as a Decimal.

    Raises ``InputError`` for text that is not one number, a bool, or a NaN/infinite value.
    """
    import math
    import numbers

    if isinstance(value, bool) or value is None:
        raise InputError(f"{what} must be a number or the number as text, got {value!r}")
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, numbers.Integral):
        amount = Decimal(int(value))
    elif isinstance(value, numbers.Real):
        if not math.isfinite(float(value)):
            raise InputError(f"{what} must be a finite number, got {value!r}")
        amount = Decimal(repr(float(value)))
    elif isinstance(value, str):
        amount = _parse_text(value, number_locale, what)
    else:
        raise InputError(f"{what} must be a number or the number as text, got {type(value).__name__}")
    if not amount.is_finite():
        raise InputError(f"{what} must be a finite number, got {value!r}")
    return amount


_TYPED = re.compile(
    r"\s*(?P<open>\()?\s*(?P<sign>[-+\u2212\u2013])?\s*(?:US\$|[$\u20ac\u00a3\u00a5\u20b9])?\s*(?P<open2>\()?"
    r"(?P<sign2>[-\u2212\u2013])?(?P<digits>\d(?:[\d.,]*\d)?|[.,]\d+)\s*(?P<percent>%)?\s*(?P<close>\))?\s*%?\s*"
)


def _parse_text(text: str, number_locale: str, what: str) -> Decimal:
    match = _TYPED.fullmatch(text)
    if match is None or bool(match.group("open") or match.group("open2")) != bool(match.group("close")):
        raise InputError(f"{what} {text!r} is not a number; write it as a plain number such as 1,250, -3.5 or (300)")
    amount = parse_cluster(match.group("digits"), number_locale)
    if amount is None:
        raise InputError(f"{what} {text!r} cannot be read with number_locale={number_locale!r}")
    signs = (match.group("sign") or "") + (match.group("sign2") or "")
    negative = bool(match.group("open")) or bool(match.group("open2")) or any(c in _MINUS for c in signs)
    return -amount if negative and amount != 0 else amount
