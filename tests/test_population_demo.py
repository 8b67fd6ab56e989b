"""Calibration of the population statistics on the shipped demo model.

The statements are measured once (one batched capture); every permutation of the labels
is then tested on the stored metric table.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from finwidget.population import StatisticsWarning, compare_groups, measure_statements
from finwidget.population.metrics import ANSWER_METRICS

N_STATEMENTS = 80
N_PERMUTATIONS = 100


@pytest.fixture(scope="module")
def demo_table():
    from finwidget import load_demo_model
    from finwidget.demo import make_statements

    model, tokenizer = load_demo_model()
    return measure_statements(model, tokenizer, make_statements(N_STATEMENTS, seed=999), batch_size=16,
                              progress=False)


def test_shuffled_labels_report_at_most_five_percent_of_tests_at_q_below_005(demo_table):
    """Null calibration: labels permuted across statements, every metric of every head
    tested (Welch, BH over all tests of one comparison). Under the null the expected
    fraction of tests with q < 0.05 is at most 5% (BH controls the FDR; with no true
    effect any rejection is false)."""
    rng = np.random.default_rng(20261130)
    statements = demo_table.drop_duplicates("statement").set_index("statement")["label"]
    fractions = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StatisticsWarning)
        for _ in range(N_PERMUTATIONS):
            shuffled = dict(zip(statements.index, rng.permutation(statements.to_numpy())))
            table = demo_table.assign(label=demo_table["statement"].map(shuffled))
            comparison = compare_groups(table, "label", permutations=0, bootstrap=0)
            tested = comparison.table["q"].notna()
            fractions.append(float((comparison.table.loc[tested, "q"] < 0.05).mean()))
    mean = float(np.mean(fractions))
    print(f"null: mean fraction of tests at q < 0.05 over {N_PERMUTATIONS} permutations = {mean:.4f}; "
          f"permutations with any: {np.mean(np.asarray(fractions) > 0):.2f}")
    assert mean <= 0.05
    # the same data with the real labels does find differences, so the null result is not a dead test
    real = compare_groups(demo_table, "label", permutations=0, bootstrap=0)
    assert (real.table["q"] < 0.05).mean() > 0.2


def test_real_labels_put_the_model_cards_reading_heads_on_top(demo_table):
    """The model card: at the answer position, layer-1 heads L1H0, L1H1 and L1H3 read the
    rule lines redundantly and L1H2 is the least selective. Comparing "increase" with
    "decrease" statements on the answer position's attention to financial line items,
    those three heads come out on top, each at q < 0.05, and L1H2 does not."""
    comparison = compare_groups(demo_table, "label", metrics=["answer_financial"], permutations=999, bootstrap=999)
    top = comparison.top(3)
    assert set(zip(top["layer"], top["head"])) == {(1, 0), (1, 1), (1, 3)}, comparison.summary()
    assert (top["q"] < 0.05).all() and (top["q_permutation"] < 0.05).all()
    assert (top["g_low"] > 0).all()  # the bootstrap interval excludes no effect
    l1h2 = comparison.table.set_index(["layer", "head"]).loc[(1, 2)]
    assert abs(l1h2["hedges_g"]) < min(top["hedges_g"].abs())
    print(comparison.summary())


def test_answer_metrics_sum_like_prediction_attention(demo_table):
    """The answer-position metrics are sums of the analysis layer's ``prediction_attention``
    over spans: checked against that public function for one statement."""
    from finwidget import EarningsTask, load_demo_model
    from finwidget.analysis import prediction_attention
    from finwidget.capture import capture_attention
    from finwidget.demo import make_statements
    from finwidget.statement import read_statement

    model, tokenizer = load_demo_model()
    text = make_statements(N_STATEMENTS, seed=999)[5].text
    task = EarningsTask(tokenizer)
    with capture_attention(model) as cap:
        model(**task.encode(text))
    frame = prediction_attention(cap, read_statement(text, tokenizer, task=task))
    financial = frame[frame["kind"].isin(["word", "line_item_name"]) & frame["category"].isin(
        ["income_statement", "balance_sheet", "cash_flow"])]
    expected = financial.groupby(["layer", "head"])["attention"].sum()
    measured = demo_table[demo_table["statement"] == 5].set_index(["layer", "head"])["answer_financial"]
    # batched (left-padded) capture against a batch of one: the reference drift is float rounding
    np.testing.assert_allclose(measured.loc[expected.index].to_numpy(), expected.to_numpy(), atol=1e-5)
    assert set(ANSWER_METRICS) <= set(demo_table.columns)
