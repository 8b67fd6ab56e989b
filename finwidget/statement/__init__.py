"""Reading the statement: tokens grouped into the words, numbers, years and rows a person sees.

``read_statement`` ties the prompt's tokens to spans; ``aggregate_to_spans`` turns
token-level attention into span-level attention; ``Lexicon`` holds the financial
vocabulary as data.
"""

from finwidget.statement.aggregate import aggregate_to_spans
from finwidget.statement.layout import SPAN_KINDS, LineItem, Span, StatementLayout
from finwidget.statement.lexicon import CATEGORIES, FINANCIAL_CATEGORIES, Lexicon
from finwidget.statement.numbers import NUMBER_LOCALES, NumberFormatWarning
from finwidget.statement.reader import read_statement, read_tokens

__all__ = [
    "CATEGORIES",
    "FINANCIAL_CATEGORIES",
    "NUMBER_LOCALES",
    "SPAN_KINDS",
    "Lexicon",
    "LineItem",
    "NumberFormatWarning",
    "Span",
    "StatementLayout",
    "aggregate_to_spans",
    "read_statement",
    "read_tokens",
]
