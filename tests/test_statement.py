"""Reading statements as a person does: numbers whole, line items named, years in columns."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from finwidget.errors import InputError
from finwidget.statement import Lexicon, aggregate_to_spans, read_statement
from finwidget.task import EarningsTask

DEMO_MODEL_DIR = Path(__file__).resolve().parents[1] / "finwidget" / "demo" / "model"

DEMO_STATEMENT = (
    "Net income: change -1,433 | 2022: 13,937 | 2021: 15,370\n"
    "Operating cash flow: change +2,210 | 2022: 9,876 | 2021: 7,666\n"
    "Total liabilities and equity: change 0 | 2022: 45,000 | 2021: 45,000\n"
    "Question: Will earnings increase or decrease next year?"
)

TEN_K_EXCERPT = """CONSOLIDATED STATEMENTS OF OPERATIONS
(in millions, except per share data)      2023        2022
Revenue                                 $ 12,345    $ 11,234
Net income (loss)                          (1,234)       987
Diluted earnings per share              $   (2.15)  $   1.73
Total liabilities and equity              45,000      40,000
Goodwill                                               3,210
"""

PROSE = (
    "Revenue grew 12.5% to $(1,234.5) million in fiscal 2023, while the net margin fell to -3.2%.\n"
    "For the year ended December 31, 2022 the company reported a loss of \u22125 billion."
)

HTML_TEXT = 'Net income: 1,234 <script>alert("1,234")</script> </b>&amp; 2021: 987\n'


TOKENIZERS = ["qwen-like"] + (["demo"] if (DEMO_MODEL_DIR / "tokenizer.json").exists() else [])


@pytest.fixture(params=TOKENIZERS)
def tokenizer(request, qwen_like_tokenizer):
    """The test-built Qwen2 tokenizer, and the demo model's when it has been built."""
    if request.param == "qwen-like":
        return qwen_like_tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)


def span_by_text(layout, text, kind=None, nth=0):
    hits = [s for s in layout.spans if s.text == text and (kind is None or s.kind == kind)]
    assert len(hits) > nth, f"no span {text!r} ({kind}) in {[s.text for s in layout.spans]}"
    return hits[nth]


def check_invariants(layout):
    """Spans cover whole tokens, in order, without overlap, and their text is the prompt's."""
    previous_end = 0
    for k, span in enumerate(layout.spans):
        assert span.index == k
        assert span.text == layout.text[span.char_start:span.char_end]
        assert span.token_start < span.token_end
        assert span.token_start >= previous_end, "token ranges overlap or are out of order"
        previous_end = span.token_end
        assert (layout.token_to_span[span.token_start:span.token_end] == k).all()
        for t in range(span.token_start, span.token_end):
            start, end = layout.token_offsets[t]
            visible = [c for c in range(start, end) if not layout.text[c].isspace()]
            assert all(span.char_start <= c < span.char_end for c in visible), (span, t)
    assert ((layout.token_to_span >= -1) & (layout.token_to_span < len(layout.spans))).all()
    # every visible character of the prompt is inside some span
    covered = np.zeros(len(layout.text), dtype=bool)
    for span in layout.spans:
        covered[span.char_start:span.char_end] = True
    first_char = layout.token_offsets[0][0]  # a start-truncated layout begins mid-text
    for c, ch in enumerate(layout.text[first_char:], start=first_char):
        assert covered[c] or ch.isspace(), f"character {c} {ch!r} is in no span"


def test_demo_format_reads_line_items_numbers_and_year_labels(tokenizer):
    task = EarningsTask(tokenizer)
    layout = read_statement(DEMO_STATEMENT, tokenizer, task=task)
    check_invariants(layout)

    net = span_by_text(layout, "Net income", "line_item_name")
    assert net.category == "income_statement"
    change = span_by_text(layout, "-1,433", "number")
    assert (change.value, change.year, change.line_item) == (-1433.0, None, "Net income")
    current = span_by_text(layout, "13,937", "number")
    assert (current.value, current.year, current.line_item) == (13937.0, 2022, "Net income")
    prior = span_by_text(layout, "15,370", "number")
    assert (prior.value, prior.year) == (15370.0, 2021)
    assert span_by_text(layout, "2022", "year").category == "temporal"
    assert span_by_text(layout, "+2,210", "number").value == 2210.0
    assert span_by_text(layout, "Operating cash flow", "line_item_name").category == "cash_flow"
    total = span_by_text(layout, "Total liabilities and equity", "line_item_name")
    assert total.category == "balance_sheet"

    names = [item.name for item in layout.line_items]
    assert names == ["Net income", "Operating cash flow", "Total liabilities and equity"]
    item = layout.line_item("net income")
    assert [layout.spans[k].text for k in item.number_spans] == ["-1,433", "13,937", "15,370"]
    # the question is not a line item, and the template's answer prefix is outside the statement
    assert span_by_text(layout, "Answer").in_statement is False
    assert span_by_text(layout, "Question").in_statement is True
    # the ids are the ones the task feeds the model
    batch = task.encode(DEMO_STATEMENT)
    assert layout.input_ids == batch["input_ids"][0].tolist()


def test_no_number_is_shown_as_digits(tokenizer):
    """Qwen2 splits every digit; each number as written is exactly one span."""
    for text in (DEMO_STATEMENT, TEN_K_EXCERPT, PROSE):
        layout = read_statement(text, tokenizer)
        check_invariants(layout)
        for match in re.finditer(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?", text):
            holders = [s for s in layout.spans if s.char_start <= match.start() and match.end() <= s.char_end]
            assert len(holders) == 1, f"{match.group()!r} is split over spans"
            assert holders[0].kind in ("number", "year")
        # more than one token per number span in Qwen2's scheme, never a lone digit of a longer number
        multi = [s for s in layout.spans if s.kind == "number" and len(re.sub(r"\D", "", s.text)) > 1]
        assert multi and all(s.num_tokens > 1 for s in multi)


def test_ten_k_table_header_row_gives_year_columns(tokenizer):
    layout = read_statement(TEN_K_EXCERPT, tokenizer)
    check_invariants(layout)
    header_line = 1
    assert layout.header_years == {header_line: [2023, 2022]}
    revenue = span_by_text(layout, "Revenue", "line_item_name")
    assert revenue.category == "income_statement"
    assert (span_by_text(layout, "$ 12,345").year, span_by_text(layout, "$ 11,234").year) == (2023, 2022)
    assert span_by_text(layout, "$ 12,345").unit == "$"
    loss = span_by_text(layout, "(1,234)")
    # "(in millions, except per share data)" scales the table's amounts, not the per-share ones
    assert (loss.value, loss.year, loss.line_item) == (-1_234_000_000.0, 2023, "Net income (loss)")
    eps = span_by_text(layout, "$   (2.15)")
    assert (eps.value, eps.year, eps.line_item) == (-2.15, 2023, "Diluted earnings per share")
    assert span_by_text(layout, "Diluted earnings per share").category == "per_share"
    # one number under the right-hand column: placed by character column
    goodwill = span_by_text(layout, "3,210")
    assert (goodwill.year, goodwill.line_item) == (2022, "Goodwill")
    assert span_by_text(layout, "Goodwill").category == "balance_sheet"
    assert [i.name for i in layout.line_items] == [
        "Revenue", "Net income (loss)", "Diluted earnings per share", "Total liabilities and equity", "Goodwill",
    ]


def test_prose_numbers_percent_scale_currency_and_negatives(tokenizer):
    layout = read_statement(PROSE, tokenizer)
    check_invariants(layout)
    big = span_by_text(layout, "$(1,234.5) million")
    assert (big.kind, big.value, big.unit) == ("number", -1_234_500_000.0, "$")
    pct = span_by_text(layout, "12.5%")
    assert (pct.value, pct.unit) == (12.5, "%")
    assert span_by_text(layout, "-3.2%").value == -3.2
    assert span_by_text(layout, "\u22125 billion").value == -5e9
    assert span_by_text(layout, "2023").kind == "year"  # "fiscal 2023"
    assert span_by_text(layout, "2022").kind == "year"  # "December 31, 2022"
    assert span_by_text(layout, "31").kind == "number"
    assert span_by_text(layout, "margin").category == "ratio"
    assert layout.line_items == []  # prose lines are not statement rows


def test_html_in_the_text_is_read_as_text(tokenizer):
    layout = read_statement(HTML_TEXT, tokenizer)
    check_invariants(layout)
    texts = [s.text for s in layout.spans]
    assert "script" in "".join(texts)
    assert any("<" in t for t in texts) and any(">" in t for t in texts)
    # the number inside the quotes is still a whole number
    quoted = [s for s in layout.spans if "1,234" in s.text]
    assert len(quoted) == 2 and all(s.kind == "number" for s in quoted)
    assert span_by_text(layout, "987").year == 2021


def test_header_row_with_a_date(tokenizer):
    text = ("Year ended December 31,        2023        2022\n"
            "Operating income               5,120       4,870\n")
    layout = read_statement(text, tokenizer)
    check_invariants(layout)
    assert span_by_text(layout, "31").kind == "number"
    assert [s.year for s in layout.spans if s.kind == "year"] == [2023, 2022]
    assert (span_by_text(layout, "5,120").year, span_by_text(layout, "4,870").year) == (2023, 2022)
    assert span_by_text(layout, "Operating income").category == "income_statement"


def test_years_only_in_year_positions(tokenizer):
    layout = read_statement("Units sold: 2021 | 2022: 1,980\nInventory 2,013 1,999\n", tokenizer)
    check_invariants(layout)
    # "2021" after "Units sold:" is a count, not a year; "2022:" labels a value
    assert span_by_text(layout, "2021").kind == "number"
    assert span_by_text(layout, "2022").kind == "year"
    assert span_by_text(layout, "1,980").year == 2022
    assert span_by_text(layout, "2,013").year is None  # no header row, no label


def test_truncated_and_padded_input_ids(tokenizer):
    task = EarningsTask(tokenizer)
    full = read_statement(DEMO_STATEMENT, tokenizer, task=task)
    ids = full.input_ids
    # left padding is dropped
    pad = tokenizer.pad_token_id
    padded = read_statement(DEMO_STATEMENT, tokenizer, [pad, pad] + ids, task=task)
    assert padded.input_ids == ids
    # the start truncated: the layout covers the kept tokens only
    cut = read_statement(DEMO_STATEMENT, tokenizer, ids[10:], task=task)
    check_invariants(cut)
    assert cut.num_tokens == len(ids) - 10
    assert cut.spans[-1].text == full.spans[-1].text
    assert span_by_text(cut, "15,370").year == 2021
    with pytest.raises(InputError, match="not the tokenized prompt"):
        read_statement(DEMO_STATEMENT, tokenizer, ids[:-3], task=task)


def test_bad_input_is_named(tokenizer):
    with pytest.raises(InputError, match="empty"):
        read_statement("   ", tokenizer)
    with pytest.raises(InputError, match="str"):
        read_statement(None, tokenizer)
    with pytest.raises(InputError, match="batch of 2 rows"):
        read_statement("Net income: 5", tokenizer, [[1, 2], [3, 4]])


def test_slow_tokenizer_is_refused():
    class SlowTokenizer:
        is_fast = False

    with pytest.raises(InputError, match="fast"):
        read_statement("Net income: 5", SlowTokenizer())


def test_special_tokens_are_their_own_spans(qwen_like_tokenizer):
    tokenizer = qwen_like_tokenizer
    text = "<|im_start|>user\nNet income: 2022: 13,937<|im_end|>\n"
    layout = read_statement(text, tokenizer, add_special_tokens=False)
    check_invariants(layout)
    special = [s.text for s in layout.spans if s.kind == "special"]
    assert special == ["<|im_start|>", "<|im_end|>"]
    assert span_by_text(layout, "13,937").year == 2022


def test_lexicon_is_data_and_extensible(tmp_path, qwen_like_tokenizer):
    lexicon = Lexicon.default()
    assert lexicon.category_of("Net cash provided by operating activities") == "cash_flow"
    assert lexicon.category_of("Assets") == "balance_sheet"  # plural and case ignored
    assert lexicon.category_of("R&D") == "income_statement"  # punctuation inside a phrase
    assert lexicon.category_of("Cash and cash equivalents, end of year") == "balance_sheet"  # longest contained
    assert lexicon.category_of("Employees") is None

    extended = lexicon.extend({"ARR": "income_statement", "esg": ["carbon intensity"]})
    assert extended.category_of("ARR") == "income_statement"
    assert extended.category_of("Carbon intensity") == "esg"
    assert lexicon.category_of("ARR") is None  # the default is unchanged
    tokenizer = qwen_like_tokenizer
    layout = read_statement("Carbon intensity: 2022: 41 | 2021: 44\n", tokenizer, lexicon=extended)
    assert span_by_text(layout, "Carbon intensity", "line_item_name").category == "esg"

    path = tmp_path / "mine.json"
    path.write_text('{"categories": {"ratio": ["quick ratio"]}}')
    assert Lexicon.from_json(path).category_of("Quick ratio") == "ratio"
    path.write_text("{not json")
    with pytest.raises(InputError, match="cannot read a lexicon"):
        Lexicon.from_json(path)
    with pytest.raises(InputError, match="list of phrases"):
        Lexicon({"ratio": "margin"})


def test_aggregate_to_spans_sums_keys_and_reduces_queries(qwen_like_tokenizer):
    tokenizer = qwen_like_tokenizer
    layout = read_statement(DEMO_STATEMENT, tokenizer)
    n = layout.num_tokens
    generator = torch.Generator().manual_seed(0)
    matrix = torch.rand(n, n, generator=generator)
    spans = layout.token_to_span

    by_mean = aggregate_to_spans(matrix, layout, "mean")
    by_max = aggregate_to_spans(matrix.numpy(), layout, "max")
    assert isinstance(by_max, np.ndarray) and by_mean.shape == (layout.num_spans, layout.num_spans)
    for q_span in (0, 3, layout.num_spans - 1):
        q_tokens = np.nonzero(spans == q_span)[0]
        for k_span in (0, 3, 7):
            k_tokens = np.nonzero(spans == k_span)[0]
            block = matrix[q_tokens][:, k_tokens].sum(1)
            # the same float32 values summed in another order: n ulps of the total, relatively
            rounding = n * torch.finfo(torch.float32).eps
            assert by_mean[q_span, k_span] == pytest.approx(float(block.mean()), rel=rounding)
            assert by_max[q_span, k_span] == pytest.approx(float(block.max()), rel=rounding)
    row = aggregate_to_spans(matrix[-1], layout)
    assert float(row.sum()) == pytest.approx(float(matrix[-1][torch.from_numpy(spans >= 0)].sum()),
                                             rel=n * torch.finfo(torch.float32).eps)

    with pytest.raises(InputError, match="tokens"):
        aggregate_to_spans(matrix[:-1, :-1], layout)
    with pytest.raises(InputError, match="query_reduce"):
        aggregate_to_spans(matrix, layout, "median")


def test_layout_lookups_and_table(qwen_like_tokenizer):
    tokenizer = qwen_like_tokenizer
    layout = read_statement(DEMO_STATEMENT, tokenizer)
    span = span_by_text(layout, "13,937")
    assert layout.span_at_token(span.token_start) == span
    assert layout.span_at_char(span.char_start + 2) == span
    frame = layout.to_dataframe()
    assert list(frame["text"]) == [s.text for s in layout.spans]
    mask = layout.token_mask(layout.financial_spans())
    assert mask.sum() == sum(s.num_tokens for s in layout.financial_spans())
    with pytest.raises(KeyError, match="no line item named"):
        layout.line_item("Revenue")


def test_read_tokens_takes_the_ids_as_they_are(tokenizer):
    """Generated ids need not be the tokenizer's own tokenization of their text."""
    from finwidget.statement import read_tokens

    pieces = ["Net", " in", "come", ": change -1,433 | 2022: 13,937", "\n", "Caf\u00e9 \u20ac1,234 \u2014 ok"]
    ids = [i for piece in pieces for i in tokenizer.encode(piece, add_special_tokens=False)]
    layout = read_tokens(ids, tokenizer)
    check_invariants(layout)
    assert layout.text == "".join(pieces)
    assert layout.input_ids == ids
    assert span_by_text(layout, "Net income", "line_item_name").category == "income_statement"
    assert span_by_text(layout, "13,937").year == 2022
    euro = span_by_text(layout, "\u20ac1,234")
    assert (euro.value, euro.unit) == (1234.0, "\u20ac")
    pad = tokenizer.pad_token_id
    assert read_tokens([pad, pad] + ids, tokenizer).input_ids == ids
    with pytest.raises(InputError, match="no token ids"):
        read_tokens([pad], tokenizer)


def test_numbers_too_long_for_a_float_have_no_value(tokenizer):
    from finwidget.statement import NumberFormatWarning

    with pytest.warns(NumberFormatWarning) as caught:
        layout = read_statement("Revenue " + "9" * 400 + "\n", tokenizer)
    (number,) = [s for s in layout.spans if s.kind == "number"]
    assert number.value is None and number.num_tokens > 1
    assert all(len(str(w.message)) < 400 for w in caught)  # the digits are not echoed in full


def test_counts_that_look_like_years_under_a_header_are_values(tokenizer):
    text = ("                      2023     2022\n"
            "Revenue              1,100      900\n"
            "Stores                2021     1998\n")
    layout = read_statement(text, tokenizer)
    check_invariants(layout)
    assert layout.header_years == {0: [2023, 2022]}
    stores = [layout.spans[k] for k in layout.line_item("Stores").number_spans]
    assert [(s.kind, s.value, s.year) for s in stores] == [("number", 2021.0, 2023), ("number", 1998.0, 2022)]
