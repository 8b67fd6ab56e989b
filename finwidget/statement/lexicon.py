"""Financial vocabulary as data: phrases mapped to statement categories.

The default vocabulary lives in ``lexicon.json`` next to this module. A user adds
terms without touching code::

    lexicon = Lexicon.default().extend({"ratio": ["net interest margin"], "ARR": "income_statement"})

Matching is on whole words, case-insensitive, longest phrase first. Words are
compared after dropping punctuation inside phrases ("R&D" == "r d") and a trailing
plural "s" on words longer than three letters ("Assets" == "asset").
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from finwidget.errors import InputError

LEXICON_PATH = Path(__file__).with_name("lexicon.json")

#: Categories that describe the company's finances (used for "financial" attention).
FINANCIAL_CATEGORIES = ("income_statement", "balance_sheet", "cash_flow", "per_share", "ratio")
#: Every category the default lexicon and the reader assign.
CATEGORIES = FINANCIAL_CATEGORIES + ("temporal", "numeric")

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def normalize_word(word: str) -> str:
    """Lower-case ``word`` and drop a plural "s" from words longer than three letters."""
    word = word.lower()
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word


def phrase_words(phrase: str) -> tuple[str, ...]:
    """The normalized words of ``phrase`` (punctuation dropped)."""
    return tuple(normalize_word(w) for w in _WORD.findall(phrase))


class Lexicon:
    """An immutable mapping of financial phrases to categories.

    Args:
        categories: ``{category: [phrase, ...]}``. A phrase listed under two
            categories keeps the later one.
    """

    def __init__(self, categories: Mapping[str, Iterable[str]]):
        table: dict[tuple[str, ...], str] = {}
        names: list[str] = []
        for category, phrases in categories.items():
            if not isinstance(category, str) or not category:
                raise InputError(f"lexicon category names must be non-empty strings, got {category!r}")
            if isinstance(phrases, str):
                raise InputError(
                    f"lexicon category {category!r} must map to a list of phrases, got the string {phrases!r}"
                )
            names.append(category)
            for phrase in phrases:
                words = phrase_words(phrase) if isinstance(phrase, str) else ()
                if not words:
                    raise InputError(f"lexicon phrase {phrase!r} in category {category!r} has no words")
                table[words] = category
        self._table = table
        self._categories = tuple(dict.fromkeys(names))
        self._longest = max((len(k) for k in table), default=0)

    # ------------------------------------------------------------ construction
    @classmethod
    def default(cls) -> Lexicon:
        """The vocabulary shipped in ``finwidget/statement/lexicon.json``."""
        return _default_lexicon()

    @classmethod
    def from_json(cls, path: str | Path) -> Lexicon:
        """Read ``{"categories": {category: [phrase, ...]}}`` from a JSON file."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read a lexicon from {str(path)!r}: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("categories"), dict):
            raise InputError(f"lexicon file {str(path)!r} must hold an object with a 'categories' object")
        return cls(data["categories"])

    def extend(self, additions: Mapping[str, Iterable[str] | str]) -> Lexicon:
        """A new lexicon with more phrases.

        ``additions`` is either ``{category: [phrase, ...]}`` or ``{phrase: category}``
        (a string value means the key is a phrase). New categories are allowed.
        """
        if not isinstance(additions, Mapping):
            raise InputError(f"extend() takes a dict, got {type(additions).__name__}")
        merged = self.to_dict()
        for key, value in additions.items():
            if isinstance(value, str):
                merged.setdefault(value, []).append(key)
            else:
                merged.setdefault(key, []).extend(value)
        return Lexicon(merged)

    def to_dict(self) -> dict[str, list[str]]:
        """``{category: [phrase, ...]}`` with phrases in normalized form."""
        out: dict[str, list[str]] = {c: [] for c in self._categories}
        for words, category in self._table.items():
            out[category].append(" ".join(words))
        return out

    # ------------------------------------------------------------ lookups
    @property
    def categories(self) -> tuple[str, ...]:
        return self._categories

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, phrase: str) -> bool:
        return phrase_words(phrase) in self._table

    def category_of(self, phrase: str) -> str | None:
        """Category of ``phrase``: an exact entry, else its longest contained entry, else None."""
        words = phrase_words(phrase)
        if words in self._table:
            return self._table[words]
        matches = self.match(words, normalized=True)
        if not matches:
            return None
        return max(matches, key=lambda m: (m[1] - m[0], -m[0]))[2]

    def match(self, words: Sequence[str], normalized: bool = False) -> list[tuple[int, int, str]]:
        """Greedy longest-first matches in a word sequence.

        Returns non-overlapping ``(start, end, category)`` with ``end`` exclusive,
        indices into ``words``.
        """
        norm = list(words) if normalized else [normalize_word(w) for w in words]
        found = []
        i = 0
        while i < len(norm):
            for n in range(min(self._longest, len(norm) - i), 0, -1):
                category = self._table.get(tuple(norm[i:i + n]))
                if category is not None:
                    found.append((i, i + n, category))
                    i += n
                    break
            else:
                i += 1
        return found

    def __repr__(self) -> str:
        return f"Lexicon({len(self)} phrases in {len(self._categories)} categories: {', '.join(self._categories)})"


@lru_cache(maxsize=1)
def _default_lexicon() -> Lexicon:
    return Lexicon.from_json(LEXICON_PATH)
