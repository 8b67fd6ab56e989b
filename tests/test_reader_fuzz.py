"""Property-based tests: whatever text or token ids come in, the reader answers with a layout
whose spans stay inside the text and the tokens, or with ``InputError``, never anything else.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_statement import check_invariants

from finwidget.errors import InputError
from finwidget.statement import NUMBER_LOCALES, NumberFormatWarning, read_statement, read_tokens

DEMO_MODEL_DIR = Path(__file__).resolve().parents[1] / "finwidget" / "demo" / "model"

# Pieces of the forms statements are written in, so random text often looks like a statement.
FRAGMENTS = [
    "|", " | ", "|---|", "\n", "\r\n", "\t", "  ", "    ", " ", ",", ";", ":", '"', "(", ")", "$", "\u20ac", "\u20b9",
    "%", "x", " bps", " million", "bn", "\u2014", "\u2013", "-", "\u2212", "*", "(1)", ".", "'", "&nbsp;",
    "&#8212;", "<table>", "</table>", "<tr>", "</tr>", "<td>", "</td>", "<th>", '<td colspan="2">', "<b>", "</b",
    "Net income", "Revenue", "Total", "per share", "(in millions, except per share data)", "(in thousands)",
    "Year Ended December 31,", "December 31, 2023", "Dec. 31", "2023", "2022", "1999", "FY2023", "FY23", "Q3",
    "3Q23", "H1", "12/31/2023", "2023-12-31", "fiscal", "in", "from", "compared", "change", "2022:",
    "0", "7", "12", "383,285", "1,234.56", "1.234,56", "12,34,567", "1,2,3", "(45,210)", "$(1.5)", ".5", "99999999999999999999",
    "1e309", "\u00a0", "\u200b", "\ufffd", "\u0663\u0664", "\U0001f4b0", "<|im_start|>", "<|endoftext|>",
]
statement_text = st.one_of(
    st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=6), max_size=40).map("".join),
    st.text(max_size=120),
)
FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _demo_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)


def _qwen2_tokenizer():
    from qwen2_tokenizer import qwen2_tokenizer_or_fail

    return qwen2_tokenizer_or_fail()


@pytest.fixture(scope="module", params=["qwen2", "demo"])
def tokenizer(request):
    return _qwen2_tokenizer() if request.param == "qwen2" else _demo_tokenizer()


def _spans_inside(layout) -> None:
    n_chars, n_tokens = len(layout.text), layout.num_tokens
    assert layout.token_to_span.shape == (n_tokens,)
    for span in layout.spans:
        assert 0 <= span.char_start < span.char_end <= n_chars
        assert 0 <= span.token_start < span.token_end <= n_tokens
    for item in layout.line_items:
        assert 0 <= item.name_span < layout.num_spans
        assert all(0 <= k < layout.num_spans and layout.spans[k].kind == "number" for k in item.number_spans)


@FUZZ
@given(text=statement_text, number_locale=st.sampled_from(NUMBER_LOCALES))
def test_reader_returns_a_layout_or_input_error(tokenizer, text, number_locale):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NumberFormatWarning)
            layout = read_statement(text, tokenizer, number_locale=number_locale)
    except InputError:
        return
    _spans_inside(layout)
    check_invariants(layout)


@FUZZ
@given(data=st.data())
def test_read_tokens_returns_a_layout_or_input_error(tokenizer, data):
    ids = data.draw(st.lists(st.integers(0, len(tokenizer) - 1), max_size=60))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NumberFormatWarning)
            layout = read_tokens(ids, tokenizer)
    except InputError:
        return
    _spans_inside(layout)


@FUZZ
@given(ids=st.lists(st.one_of(st.integers(-5, 200_000), st.floats(allow_nan=True), st.booleans(), st.text(max_size=3)),
                    max_size=8) | st.none() | st.integers() | st.text(max_size=5))
def test_any_token_ids_give_a_layout_or_input_error(tokenizer, ids):
    for call in (lambda: read_tokens(ids, tokenizer), lambda: read_statement("Net income: 5", tokenizer, ids)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NumberFormatWarning)
                layout = call()
        except InputError:
            continue
        _spans_inside(layout)


@pytest.mark.parametrize("bad", [None, 5, b"Net income 5", ["Net income"], "", " \n\t "])
def test_text_that_is_not_a_statement_is_input_error(tokenizer, bad):
    with pytest.raises(InputError):
        read_statement(bad, tokenizer)


@pytest.mark.parametrize("locale", ["fr", "EN", None, 1])
def test_unknown_number_locale_is_input_error(tokenizer, locale):
    with pytest.raises(InputError, match="number_locale"):
        read_statement("Net income 5", tokenizer, number_locale=locale)


@pytest.mark.parametrize("option", [{"task": "EarningsTask"}, {"lexicon": {"ratio": ["margin"]}}])
def test_options_of_the_wrong_kind_are_input_error(tokenizer, option):
    with pytest.raises(InputError):
        read_statement("Net income 5", tokenizer, **option)


def test_a_lone_surrogate_is_input_error(tokenizer):
    with pytest.raises(InputError):
        read_statement("Net income \ud800 5", tokenizer)
