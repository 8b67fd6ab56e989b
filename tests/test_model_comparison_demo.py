"""Known truth of ``compare_models``: the base demo model against its fine-tune whose rule
no longer needs operating cash flow (``load_demo_model(variant="net_income_only")``).

The base model reads two rule lines (net income, operating cash flow) with its layer-1
heads at the answer position; the fine-tuned one was trained so that net income alone
decides. On held-out statements the comparison must find the operating-cash-flow path
weakened and the net-income path kept, each claim by Benjamini-Hochberg q over every
test of the comparison:

- the answer's dependence on the operating cash flow line (``line_dependence``: |change of
  the logit difference| when that line's input embeddings are zeroed) drops, significantly;
  on the net income line it does not drop significantly;
- the layer-1 heads that read the rule lines in the base model (L1H0, L1H1, L1H3, per its
  model card) pay significantly less answer attention to the operating cash flow line, and
  not significantly less to the net income line.
"""

from __future__ import annotations

import pytest
from helpers import single_thread

from finwidget.demo import make_statements

SEED = 97_531  # held out: no training, validation or card seed
N = 40
READER_HEADS = [(1, 0), (1, 1), (1, 3)]

one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)


@pytest.fixture(scope="module")
def comparison():
    from finwidget import compare_models, load_demo_model

    base, tokenizer = load_demo_model()
    fine_tuned, _ = load_demo_model(variant="net_income_only")
    statements = make_statements(N, SEED, rule="net_income_only")
    return compare_models(base, fine_tuned, statements, tokenizer_a=tokenizer, measures=("line_attention",),
                          names=("base", "net income only"))


def _line(comparison, measure, item):
    rows = comparison.lines(measure)
    return rows[rows["line_item"] == item].iloc[0]


def test_heads_are_matched_by_position(comparison):
    assert comparison.settings["matched_by"] == "position"
    pairs = comparison.matching
    assert (pairs["layer_a"] == pairs["layer_b"]).all() and (pairs["head_a"] == pairs["head_b"]).all()
    assert len(pairs) == 8


def test_operating_cash_flow_path_weakened(comparison):
    ocf = _line(comparison, "line_dependence", "Operating cash flow")
    assert ocf["significant"] and ocf["difference"] < 0, ocf
    assert ocf["n"] == N
    for layer, head in READER_HEADS:
        rows = comparison.head_rows("line_attention:Operating cash flow")
        row = rows[(rows["layer_a"] == layer) & (rows["head_a"] == head)].iloc[0]
        assert row["significant"] and row["difference"] < 0, row


def test_net_income_path_stays(comparison):
    ni = _line(comparison, "line_dependence", "Net income")
    assert not (ni["significant"] and ni["difference"] < 0), ni
    rows = comparison.head_rows("line_attention:Net income")
    for layer, head in READER_HEADS:
        row = rows[(rows["layer_a"] == layer) & (rows["head_a"] == head)].iloc[0]
        assert not (row["significant"] and row["difference"] < 0), row


def test_summary_reads_the_line_rows(comparison):
    text = comparison.summary()
    assert "Operating cash flow: line_dependence" in text and "q = " in text and "CI" in text
    assert f"n = {N}" in text
