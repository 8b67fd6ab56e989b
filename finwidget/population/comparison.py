"""Comparisons of per-head metrics across statements: the ``Comparison`` result and the
groupings and contrasts that make one.

A *metric table* is long: one row per (statement, layer, head) with the metric columns
of ``finwidget.population.metrics`` and the statement's own columns (``label``,
``predicted``, ``logit_diff``, ... and whatever the user adds), as
``measure_statements`` and ``Experiment.results`` return it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from finwidget.errors import InputError
from finwidget.population import statistics as st
from finwidget.population.metrics import METRICS

HEAD_KEYS = ["layer", "head"]
#: The primary p-value column of each test name, and the q column BH computes from it.
TESTS = {
    "welch": "p_welch", "mannwhitney": "p_mannwhitney", "permutation": "p_permutation",
    "paired_t": "p_paired_t", "wilcoxon": "p_wilcoxon", "pearson": "p_pearson", "spearman": "p_spearman",
}
LABEL_VALUES = ("increase", "decrease")


@dataclass
class Comparison:
    """The result of one comparison: a tidy table plus the settings that made it.

    ``table`` has one row per test (``layer``, ``head``, ``metric``, ...), the group sizes,
    means, the effect (``hedges_g`` with its ``g_low``/``g_high`` interval for group and paired
    comparisons, ``pearson_r``/``spearman_rho`` for correlations), every p-value and a
    Benjamini-Hochberg q-value per p column over all tests of this comparison (``q_welch``
    ...); ``p`` and ``q`` are the primary test's (``settings["test"]``).
    """

    table: pd.DataFrame
    settings: dict = field(default_factory=dict)
    #: the metric table the comparison was computed from (for plots and drill-down), or None
    data: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def effect_column(self) -> str:
        return "hedges_g" if "hedges_g" in self.table else "spearman_rho" if self.settings.get(
            "test") == "spearman" else "pearson_r"

    def top(self, n: int = 10, by: str = "effect") -> pd.DataFrame:
        """The ``n`` tests with the largest absolute effect (``by="effect"``) or smallest q (``by="q"``)."""
        frame = self.table.copy()
        if by == "q":
            frame = frame.sort_values(["q", "p"], kind="stable", na_position="last")
        elif by == "effect":
            frame = frame.assign(_abs=frame[self.effect_column].abs()).sort_values(
                "_abs", ascending=False, kind="stable", na_position="last").drop(columns="_abs")
        else:
            raise InputError(f"by must be 'effect' or 'q', got {by!r}")
        return frame.head(int(n)).reset_index(drop=True)

    def significant(self, q: float = 0.05) -> pd.DataFrame:
        """Tests whose Benjamini-Hochberg q-value is below ``q``, largest effect first."""
        hits = self.table[self.table["q"] < q]
        return Comparison(hits, self.settings).top(len(hits))

    def __len__(self) -> int:
        return len(self.table)

    def summary(self, n: int = 5, q: float = 0.05) -> str:
        """Text: what was compared, n per group, and the top tests with effect size, p and q."""
        s = self.settings
        lines = [f"{s.get('title', 'Comparison')}: {s.get('description', '')}".rstrip(": ")]
        if s.get("hypothesis"):
            lines.insert(0, f"hypothesis: {s['hypothesis']}")
        if "groups" in s:
            sizes = ", ".join(f"{g!r}: n = {s['group_sizes'][str(g)]}" for g in s["groups"])
            lines.append(f"groups by {s['by']} ({sizes})")
        elif "n" in s:
            lines.append(f"statements: n = {s['n']}")
        if s.get("threshold") is not None:
            lines.append(f"threshold: {s['threshold_rule']}")
        effect = self.effect_column
        finite = self.table["q"].notna()
        hits = int((self.table["q"] < q).sum())
        lines.append(f"test: {s['test']} ({s.get('test_name', s['test'])}); {int(finite.sum())} tests with a p-value, "
                     f"Benjamini-Hochberg over all of them: {hits} with q < {q}")
        lines.append(f"largest |{effect}| (significance is not importance: read the effect, then q):")
        for row in self.top(n).itertuples(index=False):
            row = row._asdict()
            where = f"L{row['layer']}H{row['head']}" if "head" in row and not _isnan(row.get("head")) else \
                f"layers {row.get('band', '')}"
            ci = ""
            if "g_low" in row and np.isfinite(row["g_low"]):
                ci = f" [{s.get('confidence', 0.95):.0%} CI {row['g_low']:.2f}, {row['g_high']:.2f}]"
            verdict = f"q < {q:g}" if row["q"] < q else (f"q >= {q:g}, not significant" if np.isfinite(row["q"])
                                                         else "no test (undefined)")
            lines.append(f"  {where} {row['metric']}: {effect} = {row[effect]:.3f}{ci}, p = {_fmt(row['p'])}, "
                         f"q = {_fmt(row['q'])} ({verdict})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def _repr_pretty_(self, printer, cycle):  # IPython
        printer.text(self.summary())


def _isnan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _fmt(p) -> str:
    return "nan" if not np.isfinite(p) else f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


# ---------------------------------------------------------------- shaping
def _check_table(table: pd.DataFrame, columns: Sequence[str]) -> None:
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"expected a metric table (pandas DataFrame), got {type(table).__name__}")
    missing = [c for c in ["statement", *HEAD_KEYS, *columns] if c not in table.columns]
    if missing:
        raise InputError(f"the metric table has no column(s) {missing}; it has {list(table.columns)}")
    if table.empty:
        raise InputError("the metric table is empty: measure at least one statement first")


def _metrics(table: pd.DataFrame, metrics) -> list[str]:
    if metrics is None:
        return [m for m in METRICS if m in table.columns]
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if not metrics:
        raise InputError("no metrics given")
    return metrics


def wide(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``[statements, (layer, head)]`` values of one metric."""
    return table.pivot(index="statement", columns=HEAD_KEYS, values=metric).sort_index(axis=1)


def statements(table: pd.DataFrame) -> pd.DataFrame:
    """One row per statement: the statement-level columns of a metric table."""
    per_statement = [c for c in table.columns if c not in HEAD_KEYS and c not in METRICS and
                     table.groupby("statement")[c].nunique(dropna=False).max() <= 1]
    return table.drop_duplicates("statement").set_index("statement")[
        [c for c in per_statement if c != "statement"]].sort_index()


def _finish(rows: list[pd.DataFrame], settings: dict, test: str, data: pd.DataFrame | None = None) -> Comparison:
    frame = pd.concat(rows, ignore_index=True)
    for column in [c for c in frame.columns if c.startswith("p_")]:
        frame["q_" + column[2:]] = st.q_values(frame[column].to_numpy())
    primary = TESTS[test]
    if primary not in frame or frame[primary].isna().all() and test == "permutation":
        raise InputError(f"test {test!r} was not computed here (permutations=0?); choose one of the p columns "
                         f"{[c for c in frame.columns if c.startswith('p_')]}")
    frame["p"] = frame[primary]
    frame["q"] = frame["q_" + primary[2:]]
    settings = {**settings, "test": test, "test_name": _TEST_NAMES[test], "n_tests": int(frame["p"].notna().sum())}
    return Comparison(frame, settings, data)


_TEST_NAMES = {
    "welch": "Welch's two-sample t-test", "mannwhitney": "Mann-Whitney U, two-sided",
    "permutation": "permutation test of the difference of means, two-sided",
    "paired_t": "paired t-test", "wilcoxon": "Wilcoxon signed-rank, two-sided",
    "pearson": "Pearson correlation", "spearman": "Spearman rank correlation",
}


def _check_test(test: str, allowed: Sequence[str]) -> str:
    if test not in allowed:
        raise InputError(f"test must be one of {list(allowed)}, got {test!r}")
    return test


# ---------------------------------------------------------------- groupings
def group_labels(table: pd.DataFrame, by: str, threshold: float | None = None) -> tuple[pd.Series, dict]:
    """Per statement, its group under ``by``, and settings that describe the grouping.

    ``by``: ``"label"`` (true label), ``"predicted"`` (predicted label), ``"correct"``
    (correct vs wrong), ``"confidence"`` (confident if ``|logit_diff| >= threshold``, default
    threshold: the median |logit difference| of these statements) or any statement column.
    """
    info = statements(table) if not isinstance(table, pd.DataFrame) or "statement" in table.columns else table
    settings: dict = {"by": by}
    if by in ("label", "predicted"):
        if by not in info:
            raise InputError(f"grouping by {by!r} needs a {by!r} column; the table has {list(info.columns)}")
        values = info[by]
        if values.isna().all():
            raise InputError(f"the statements have no {by!r} values (a dataset without a label column?); "
                             "give the dataset a label column or group by something else")
        unexpected = sorted(set(values.dropna().astype(str)) - set(LABEL_VALUES))
        if unexpected or values.isna().any():
            raise InputError(f"column {by!r} must hold only {list(LABEL_VALUES)}; found unexpected value(s) "
                             f"{unexpected + (['<missing>'] if values.isna().any() else [])}")
        settings["groups"] = list(LABEL_VALUES)
        return values.astype(str), settings
    if by == "correct":
        for c in ("label", "predicted"):
            if c not in info:
                raise InputError(f"grouping by 'correct' needs a {c!r} column; the table has {list(info.columns)}")
        group_labels(table, "label")
        values = np.where(info["label"] == info["predicted"], "correct", "wrong")
        settings["groups"] = ["correct", "wrong"]
        return pd.Series(values, index=info.index), settings
    if by == "confidence":
        if "logit_diff" not in info:
            raise InputError("grouping by 'confidence' needs a 'logit_diff' column")
        size = info["logit_diff"].abs()
        rule = "given"
        if threshold is None:
            threshold, rule = float(size.median()), "the median |logit difference| of these statements"
        settings.update(groups=["confident", "uncertain"], threshold=float(threshold),
                        threshold_rule=f"confident if |logit difference| >= {float(threshold):.4g} ({rule})")
        return pd.Series(np.where(size >= threshold, "confident", "uncertain"), index=info.index), settings
    if by not in info:
        raise InputError(f"no statement column {by!r} to group by; statement columns: {list(info.columns)}")
    return info[by], settings


def compare_groups(table: pd.DataFrame, by: str = "label", groups: Sequence | None = None, metrics=None, *,
                   threshold: float | None = None, test: str = "welch", permutations: int = 999,
                   bootstrap: int = 999, confidence: float = 0.95, seed: int = 0) -> Comparison:
    """Every head's metrics, one group of statements against another.

    Args:
        table: a metric table.
        by: the grouping (see ``group_labels``).
        groups: the two group values to compare, first minus second (default: the
            grouping's own pair; required for a user column with other than two values).
            A statement whose value is in neither group is an error, not silently dropped.
        metrics: metric names (default: every metric column present).
        test: the primary test, whose q-value is ``q``: "welch", "mannwhitney" or "permutation".
        permutations, bootstrap: resamples for the permutation test and the Hedges' g
            interval (0 skips them).
        seed: seeds the permutation and bootstrap resampling.
    """
    _check_test(test, ("welch", "mannwhitney", "permutation"))
    metrics = _metrics(table, metrics)
    _check_table(table, metrics)
    labels, settings = group_labels(table, by, threshold)
    if groups is None:
        groups = settings.get("groups") or sorted(labels.dropna().unique().tolist(), key=str)
    groups = list(groups)
    if len(groups) != 2 or groups[0] == groups[1]:
        raise InputError(f"compare two different groups; {by!r} gives {groups!r}: pass groups=(first, second)")
    outside = sorted({str(v) for v in labels if v not in groups})
    if outside:
        raise InputError(f"column {by!r} has value(s) {outside} outside the groups {groups}; "
                         "filter the table first or pass the groups you mean")
    sizes = {str(g): int((labels == g).sum()) for g in groups}
    empty = [g for g, n in sizes.items() if n == 0]
    if empty:
        raise InputError(f"group(s) {empty} of {by!r} are empty (sizes: {sizes}); nothing to compare")
    rows = []
    for k, metric in enumerate(metrics):
        values = wide(table, metric).reindex(labels.index)
        result = st.two_group_tests(values[labels == groups[0]].to_numpy(), values[labels == groups[1]].to_numpy(),
                                    permutations=permutations, bootstrap=bootstrap, confidence=confidence,
                                    seed=seed + k)
        frame = pd.DataFrame(values.columns.tolist(), columns=HEAD_KEYS)
        frame.insert(2, "metric", metric)
        rows.append(frame.assign(**result))
    settings.update(title=f"{groups[0]} vs {groups[1]}", description=f"statements grouped by {by}",
                    groups=groups, group_sizes=sizes, metrics=metrics, permutations=permutations,
                    bootstrap=bootstrap, confidence=confidence, seed=seed, kind="groups")
    return _finish(rows, settings, test, table)


def compare_within(table: pd.DataFrame, first: str, second: str, *, title: str | None = None, test: str = "paired_t",
                   bootstrap: int = 999, confidence: float = 0.95, seed: int = 0) -> Comparison:
    """Within-statement contrast of two metrics, head by head: ``first`` minus ``second``,
    paired by statement (paired t-test and Wilcoxon signed-rank)."""
    _check_test(test, ("paired_t", "wilcoxon"))
    _check_table(table, [first, second])
    a, b = wide(table, first), wide(table, second)
    result = st.paired_tests(a.to_numpy(), b.to_numpy(), bootstrap=bootstrap, confidence=confidence, seed=seed)
    frame = pd.DataFrame(a.columns.tolist(), columns=HEAD_KEYS)
    frame.insert(2, "metric", f"{first} - {second}")
    settings = {"title": title or f"{first} vs {second}", "description": "within statement, paired by statement",
                "n": len(a), "first": first, "second": second, "bootstrap": bootstrap,
                "confidence": confidence, "seed": seed, "kind": "paired"}
    return _finish([frame.assign(**result)], settings, test, table)


def recent_vs_prior_year(table: pd.DataFrame, **kwargs) -> Comparison:
    """Attention from the answer to the latest year's numbers and labels vs the earliest's."""
    return compare_within(table, "answer_recent_year", "answer_prior_year", title="recent vs prior year", **kwargs)


def large_vs_small_numbers(table: pd.DataFrame, **kwargs) -> Comparison:
    """Attention from the answer to numbers above vs at most the statement's median |value|."""
    return compare_within(table, "answer_large_numbers", "answer_small_numbers", title="large vs small numbers",
                          **kwargs)


def financial_vs_other_words(table: pd.DataFrame, **kwargs) -> Comparison:
    """Attention per token from the answer to financial terms vs every other word."""
    return compare_within(table, "answer_financial_per_token", "answer_other_words_per_token",
                          title="financial terms vs other words (per token)", **kwargs)


def layer_band(table: pd.DataFrame, metric: str = "financial_lift", min_layer: int | None = None,
               max_layer: int | None = None, *, test: str = "paired_t", bootstrap: int = 999,
               confidence: float = 0.95, seed: int = 0) -> Comparison:
    """"Layers in the band specialize in ``metric``": per statement, the mean of ``metric``
    over the band's heads against its mean over every other head, paired by statement.

    The band is ``min_layer <= layer <= max_layer`` (either end open when None; default
    ``min_layer``: the upper half of the layers).
    """
    _check_test(test, ("paired_t", "wilcoxon"))
    _check_table(table, [metric])
    layers = sorted(table["layer"].unique())
    if min_layer is None and max_layer is None:
        min_layer = layers[len(layers) // 2]
    lo = layers[0] if min_layer is None else min_layer
    hi = layers[-1] if max_layer is None else max_layer
    inside = table["layer"].between(lo, hi)
    if inside.all() or not inside.any():
        raise InputError(f"the band layers {lo}..{hi} must leave heads on both sides; the table has layers {layers}")
    band = table[inside].groupby("statement")[metric].mean()
    rest = table[~inside].groupby("statement")[metric].mean().reindex(band.index)
    result = st.paired_tests(band.to_numpy(), rest.to_numpy(), bootstrap=bootstrap, confidence=confidence, seed=seed)
    frame = pd.DataFrame({"band": [f"{lo}-{hi}"], "metric": [metric]}).assign(**result)
    settings = {"title": f"layers {lo}-{hi} vs the rest", "n": len(band),
                "description": f"per statement, mean {metric} over the band's heads minus over the other heads, "
                               f"paired by statement", "band": [int(lo), int(hi)], "bootstrap": bootstrap,
                "confidence": confidence, "seed": seed, "kind": "band"}
    return _finish([frame], settings, test, table)


def correlate(table: pd.DataFrame, metrics=None, target: str = "logit_diff", *, test: str = "spearman") -> Comparison:
    """Correlation of every head's metrics with a statement column (default the logit difference)."""
    _check_test(test, ("pearson", "spearman"))
    metrics = _metrics(table, metrics)
    _check_table(table, [*metrics, target])
    info = statements(table)
    rows = []
    for metric in metrics:
        values = wide(table, metric).reindex(info.index)
        frame = pd.DataFrame(values.columns.tolist(), columns=HEAD_KEYS)
        frame.insert(2, "metric", metric)
        rows.append(frame.assign(**st.correlation_tests(values.to_numpy(), info[target].to_numpy())))
    settings = {"title": f"metrics vs {target}", "description": "correlation across statements",
                "n": len(info), "target": target, "metrics": metrics, "kind": "correlation"}
    return _finish(rows, settings, test, table)
