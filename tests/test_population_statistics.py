"""Population statistics on synthetic metric tables (no model): scipy's tests applied per
head, BH q-values over one comparison, effect sizes, groupings and bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from finwidget.errors import InputError
from finwidget.population import (
    StatisticsWarning,
    compare_groups,
    compare_within,
    correlate,
    layer_band,
    recent_vs_prior_year,
)
from finwidget.population.statistics import hedges_g, paired_tests, q_values, two_group_tests


def metric_table(n=40, layers=2, heads=3, seed=0, effect=None):
    """Long table: ``n`` statements x layers x heads, metrics drawn at random; ``effect``:
    ``{(layer, head): shift}`` added to ``answer_financial`` of "increase" statements."""
    rng = np.random.default_rng(seed)
    labels = np.array(["increase", "decrease"] * (n // 2))
    logit = np.where(labels == "increase", 1.0, -1.0) * rng.uniform(0.5, 10, n)
    rows = []
    for s in range(n):
        for layer in range(layers):
            for head in range(heads):
                shift = (effect or {}).get((layer, head), 0.0) if labels[s] == "increase" else 0.0
                rows.append({"statement": s, "layer": layer, "head": head,
                             "answer_financial": rng.normal() + shift,
                             "answer_recent_year": rng.normal() + (0.8 if layer == 1 else 0.0),
                             "answer_prior_year": rng.normal(),
                             "financial_lift": rng.normal() + layer,
                             "label": labels[s], "predicted": labels[s] if s % 7 else
                             ("decrease" if labels[s] == "increase" else "increase"),
                             "logit_diff": logit[s], "sector": "tech" if s % 2 else "bank"})
    return pd.DataFrame(rows)


def test_two_group_tests_are_scipys_per_column_with_nan_columns_tested_alone():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(15, 4)), rng.normal(0.5, 1, size=(18, 4))
    a[2, 3] = np.nan
    out = two_group_tests(a, b, permutations=200, bootstrap=200, seed=3)
    for j in range(4):
        x, y = a[np.isfinite(a[:, j]), j], b[:, j]
        assert out["n_a"][j] == x.size and out["n_b"][j] == 18
        t = stats.ttest_ind(x, y, equal_var=False)
        assert out["t"][j] == pytest.approx(t.statistic, rel=1e-12)
        assert out["p_welch"][j] == pytest.approx(t.pvalue, rel=1e-12)
        assert out["p_mannwhitney"][j] == pytest.approx(stats.mannwhitneyu(x, y).pvalue, rel=1e-12)
        assert out["difference"][j] == pytest.approx(x.mean() - y.mean(), rel=1e-12)
        # Hedges' g from its definition, written out independently
        sp = np.sqrt(((x.size - 1) * np.var(x, ddof=1) + (y.size - 1) * np.var(y, ddof=1)) / (x.size + y.size - 2))
        g = (x.mean() - y.mean()) / sp * (1 - 3 / (4 * (x.size + y.size) - 9))
        assert out["hedges_g"][j] == pytest.approx(g, rel=1e-12)
        assert out["g_low"][j] < out["hedges_g"][j] < out["g_high"][j]
        assert 0 < out["p_permutation"][j] <= 1


def test_hedges_g_sign_and_scale():
    x, y = np.array([2.0, 3.0, 4.0]), np.array([0.0, 1.0, 2.0])
    assert hedges_g(x, y) == pytest.approx(2.0 * (1 - 3 / (4 * 6 - 9)))
    assert hedges_g(y, x) == pytest.approx(-hedges_g(x, y))


def test_q_values_are_benjamini_hochberg_over_finite_p():
    p = np.array([0.01, np.nan, 0.04, 0.03, 0.5])
    q = q_values(p)
    assert np.isnan(q[1])
    np.testing.assert_array_equal(q[[0, 2, 3, 4]], stats.false_discovery_control(p[[0, 2, 3, 4]]))


def test_paired_tests_are_scipys():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 2))
    y = x + rng.normal(0.3, 1, size=(20, 2))
    out = paired_tests(x, y, bootstrap=100)
    for j in range(2):
        assert out["p_paired_t"][j] == pytest.approx(stats.ttest_rel(x[:, j], y[:, j]).pvalue, rel=1e-12)
        assert out["p_wilcoxon"][j] == pytest.approx(stats.wilcoxon(x[:, j], y[:, j]).pvalue, rel=1e-12)


def test_planted_effect_is_found_and_nulls_are_not():
    table = metric_table(n=60, effect={(1, 2): 1.5})
    comparison = compare_groups(table, "label", metrics=["answer_financial"], permutations=199, bootstrap=199)
    top = comparison.top(1).iloc[0]
    assert (top["layer"], top["head"]) == (1, 2) and top["q"] < 0.05 and top["hedges_g"] > 0.8
    hits = comparison.significant(0.05)
    assert list(zip(hits["layer"], hits["head"])) == [(1, 2)]
    assert comparison.settings["group_sizes"] == {"increase": 30, "decrease": 30}
    # q is BH over every test of the comparison
    np.testing.assert_allclose(comparison.table["q"], stats.false_discovery_control(comparison.table["p"]))


def test_summary_states_group_sizes_effects_and_q():
    comparison = compare_groups(metric_table(effect={(0, 1): 2.0}), "label", permutations=0, bootstrap=99)
    text = comparison.summary()
    assert "'increase': n = 20" in text and "'decrease': n = 20" in text
    for line in text.splitlines()[4:]:
        assert "hedges_g = " in line and "p = " in line and "q = " in line
    assert "significant" not in text.replace("not significant", "").replace("significance is not", "")


def test_groupings_predicted_correct_confidence_and_user_column():
    table = metric_table()
    wrong = compare_groups(table, "correct", permutations=0, bootstrap=0)
    assert wrong.settings["group_sizes"] == {"correct": 34, "wrong": 6}
    confident = compare_groups(table, "confidence", permutations=0, bootstrap=0)
    assert "median" in confident.settings["threshold_rule"]
    fixed = compare_groups(table, "confidence", threshold=5.0, permutations=0, bootstrap=0)
    assert fixed.settings["threshold"] == 5.0 and "5" in fixed.summary()
    sector = compare_groups(table, "sector", groups=("tech", "bank"), permutations=0, bootstrap=0)
    assert sector.settings["group_sizes"] == {"tech": 20, "bank": 20}
    compare_groups(table, "predicted", permutations=0, bootstrap=0)


def test_within_statement_contrasts_band_and_correlation():
    table = metric_table(n=40)
    recent = recent_vs_prior_year(table, bootstrap=99)
    by_head = recent.table.set_index(["layer", "head"])
    assert (by_head.loc[1, "hedges_g"] > 0.3).all()
    band = layer_band(table, "financial_lift", min_layer=1, bootstrap=99)
    assert band.table["band"].tolist() == ["1-1"] and band.table["q"].iloc[0] < 0.05
    assert band.settings["test_name"] == "paired t-test"
    corr = correlate(table, ["answer_financial"])
    assert {"pearson_r", "p_pearson", "spearman_rho", "p_spearman", "q_pearson", "q_spearman"} <= set(corr.table)
    with pytest.raises(InputError, match="both sides"):
        layer_band(table, min_layer=0)


# ------------------------------------------------------------------ bad input
def test_empty_group_is_an_error():
    table = metric_table()
    table = table.assign(label="increase")
    with pytest.raises(InputError, match="empty"):
        compare_groups(table, "label", permutations=0, bootstrap=0)


def test_unexpected_label_values_are_an_error():
    table = metric_table()
    table.loc[table["statement"] == 3, "label"] = "up"
    with pytest.raises(InputError, match="unexpected value.*'up'"):
        compare_groups(table, "label")
    with pytest.raises(InputError, match="outside the groups"):
        compare_groups(metric_table(), "sector", groups=("tech", "energy"))


def test_group_of_one_and_identical_values_give_nan_with_a_warning():
    table = metric_table()
    one = table[(table["label"] == "decrease") | (table["statement"] == 0)]
    with pytest.warns(StatisticsWarning, match="fewer than two"):
        comparison = compare_groups(one, "label", permutations=0, bootstrap=0)
    assert comparison.table["p"].isna().all() and comparison.table["q"].isna().all()
    flat = table.assign(answer_financial=1.0)
    with pytest.warns(StatisticsWarning, match="identical"):
        comparison = compare_groups(flat, "label", metrics=["answer_financial"], permutations=0, bootstrap=0)
    assert comparison.table["hedges_g"].isna().all()
    assert "no test (undefined)" in comparison.summary()


def test_nan_metric_values_are_left_out_and_counted():
    table = metric_table()
    table.loc[(table["statement"] < 4) & (table["layer"] == 0) & (table["head"] == 0), "answer_financial"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        comparison = compare_groups(table, "label", metrics=["answer_financial"], permutations=0, bootstrap=0)
    row = comparison.table.set_index(["layer", "head"]).loc[(0, 0)]
    assert row["n_a"] + row["n_b"] == 36 and np.isfinite(row["p"])


def test_missing_columns_and_tests_are_named():
    with pytest.raises(InputError, match="no column"):
        compare_groups(metric_table().drop(columns="head"), "label")
    with pytest.raises(InputError, match="test must be"):
        compare_groups(metric_table(), "label", test="z")
    with pytest.raises(InputError, match="no statement column 'region'"):
        compare_groups(metric_table(), "region")
    with pytest.raises(InputError, match="no column"):
        compare_within(metric_table(), "answer_financial", "nope")
