"""What ``read_statement`` returns: the statement as spans a person reads, tied to tokens."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

from finwidget.statement.lexicon import FINANCIAL_CATEGORIES

#: Span kinds. "line_item_name" is the name of a statement row ("Net income"),
#: "break" a line break token, "special" a tokenizer special token (chat template
#: markers such as ``<|im_start|>``).
SPAN_KINDS = ("number", "year", "word", "line_item_name", "punct", "break", "special")


@dataclass(frozen=True)
class Span:
    """One thing a reader sees in the prompt, covering whole tokens.

    index: position in ``StatementLayout.spans``.
    kind: one of ``SPAN_KINDS``.
    text: the characters as written (``text[char_start:char_end]`` of the prompt).
    char_start, char_end: half-open character range in the prompt text.
    token_start, token_end: half-open token range in the tokenized prompt. A space
        token before a word or number belongs to that word or number.
    line: 0-based line number of ``char_start``.
    category: lexicon category ("income_statement", "balance_sheet", "cash_flow",
        "per_share", "ratio", "temporal", "numeric") or None.
    value: for numbers, the signed amount with its scale applied (its own scale word, or
        the table's note such as "(in millions)"; a nil dash in a table cell is 0.0), or
        None when the digits cannot be read whole in the number locale ("1.234,56" under
        "en"); the year for years; else None.
    year: the year a number belongs to (a "2022:" label, a header row's column, or in
        prose a year its clause names), the year itself for years, else None.
    line_item: name of the statement line item a number or name belongs to, else None.
    unit: "%", "bps", "x" or a currency symbol for numbers that carry one, else None.
    in_statement: False for spans the prompt template added around the statement
        (question line added by the task, answer prefix, chat markers).
    """

    index: int
    kind: str
    text: str
    char_start: int
    char_end: int
    token_start: int
    token_end: int
    line: int
    category: str | None = None
    value: float | None = None
    year: int | None = None
    line_item: str | None = None
    unit: str | None = None
    in_statement: bool = True

    @property
    def num_tokens(self) -> int:
        return self.token_end - self.token_start

    @property
    def is_financial(self) -> bool:
        """A financial term or line item name (category in ``FINANCIAL_CATEGORIES``)."""
        return self.category in FINANCIAL_CATEGORIES and self.kind in ("word", "line_item_name")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LineItem:
    """A statement row: its name and the numbers on the same line.

    name: the row's name as written ("Total liabilities and equity").
    line: 0-based line number.
    name_span: index of the name's span.
    number_spans: indices of the number spans on the line, in order.
    category: lexicon category of the name, or None.
    """

    name: str
    line: int
    name_span: int
    number_spans: tuple[int, ...]
    category: str | None = None


@dataclass
class StatementLayout:
    """The prompt read as spans, with the token <-> span maps.

    text: the prompt text that was tokenized.
    input_ids: its token ids ``[T]``.
    token_offsets: ``[T]`` (char_start, char_end) of each token (special tokens
        added by the tokenizer have (0, 0)).
    spans: every span in text order; each token belongs to at most one span.
    token_to_span: ``[T]`` int64 numpy array, the span index of each token or -1.
    line_items: the statement's rows, in order.
    lines: ``(line number, char_start, char_end)`` for every line of ``text``.
    statement_range: (char_start, char_end) of the statement inside the prompt.
    header_years: ``{line: [years]}`` for header rows found.
    """

    text: str
    input_ids: list[int]
    token_offsets: list[tuple[int, int]]
    spans: list[Span]
    token_to_span: np.ndarray
    line_items: list[LineItem]
    lines: list[tuple[int, int, int]]
    statement_range: tuple[int, int]
    header_years: dict[int, list[int]] = field(default_factory=dict)

    # ------------------------------------------------------------ sizes
    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def num_spans(self) -> int:
        return len(self.spans)

    def __len__(self) -> int:
        return len(self.spans)

    # ------------------------------------------------------------ lookups
    def span_at_token(self, token: int) -> Span | None:
        """The span holding token ``token`` (negative counts from the end), or None."""
        index = int(self.token_to_span[token])
        return None if index < 0 else self.spans[index]

    def span_at_char(self, char: int) -> Span | None:
        """The span covering character ``char`` of the prompt, or None (whitespace)."""
        for span in self.spans:
            if span.char_start <= char < span.char_end:
                return span
        return None

    def token_text(self, token: int) -> str:
        start, end = self.token_offsets[token]
        return self.text[start:end]

    def select(
        self,
        kinds: Iterable[str] | None = None,
        categories: Iterable[str] | None = None,
        financial: bool | None = None,
        in_statement: bool | None = None,
    ) -> list[Span]:
        """Spans matching every given condition."""
        kinds = set(kinds) if kinds is not None else None
        categories = set(categories) if categories is not None else None
        out = []
        for span in self.spans:
            if kinds is not None and span.kind not in kinds:
                continue
            if categories is not None and span.category not in categories:
                continue
            if financial is not None and span.is_financial != financial:
                continue
            if in_statement is not None and span.in_statement != in_statement:
                continue
            out.append(span)
        return out

    def financial_spans(self) -> list[Span]:
        """Financial terms and line item names (see ``Span.is_financial``)."""
        return self.select(financial=True)

    def token_mask(self, spans: Iterable[Span]) -> np.ndarray:
        """``[T]`` bool numpy array, True on the tokens of ``spans``."""
        mask = np.zeros(self.num_tokens, dtype=bool)
        for span in spans:
            mask[span.token_start:span.token_end] = True
        return mask

    def span_token_counts(self) -> np.ndarray:
        """``[S]`` int64 number of tokens in each span."""
        return np.array([s.num_tokens for s in self.spans], dtype=np.int64)

    def line_item(self, name: str) -> LineItem:
        """The first line item whose name equals ``name`` (case-insensitive)."""
        for item in self.line_items:
            if item.name.lower() == name.lower():
                return item
        known = ", ".join(repr(i.name) for i in self.line_items[:20])
        raise KeyError(f"no line item named {name!r}; the statement has: {known}")

    def to_dataframe(self):
        """One row per span (pandas DataFrame with the ``Span`` fields as columns)."""
        import pandas as pd

        columns = list(Span.__dataclass_fields__)
        return pd.DataFrame([s.to_dict() for s in self.spans], columns=columns)

    def __repr__(self) -> str:
        return (
            f"StatementLayout({self.num_tokens} tokens, {len(self.spans)} spans, "
            f"{len(self.line_items)} line items, {len(self.lines)} lines)"
        )
