"""Statistical tests over many tests at once, from scipy.

Every function takes one column per test (``[n, k]`` arrays: n statements, k tests, e.g.
one per layer x head x metric) and returns one value per test (``[k]`` arrays). Tests
are scipy's; the only formulas written here are the effect sizes (Hedges' g and its
paired form), which scipy does not provide, and their bootstrap intervals come from
``scipy.stats.bootstrap``.

Undefined statistics (a group of fewer than two finite values, values that are all
identical) are NaN with a ``StatisticsWarning`` that says how many tests it hit; NaN
metric values are left out test by test, and the count left is reported (``n_a``,
``n_b``, ``n``).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats


class StatisticsWarning(UserWarning):
    """A statistic is undefined for some tests (reported as NaN)."""


def hedges_g(x, y, axis=-1):
    """Hedges' g of ``x`` against ``y`` along ``axis``: the difference of means over the
    pooled standard deviation, times the small-sample correction ``1 - 3 / (4 (nx + ny) - 9)``."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    nx, ny = x.shape[axis], y.shape[axis]
    pooled = np.sqrt(((nx - 1) * x.var(axis=axis, ddof=1) + (ny - 1) * y.var(axis=axis, ddof=1)) / (nx + ny - 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (x.mean(axis=axis) - y.mean(axis=axis)) / pooled
    return d * (1.0 - 3.0 / (4.0 * (nx + ny) - 9.0))


def paired_hedges_g(d, axis=-1):
    """Paired effect size of differences ``d``: mean / standard deviation (Cohen's d_z), times
    the small-sample correction ``1 - 3 / (4 (n - 1) - 1)``."""
    d = np.asarray(d, dtype=float)
    n = d.shape[axis]
    with np.errstate(divide="ignore", invalid="ignore"):
        dz = d.mean(axis=axis) / d.std(axis=axis, ddof=1)
    return dz * (1.0 - 3.0 / (4.0 * (n - 1) - 1.0))


def _mean_difference(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def q_values(p) -> np.ndarray:
    """Benjamini-Hochberg q-values (``scipy.stats.false_discovery_control``) over the finite
    p-values of ``p``; NaN stays NaN and does not count as a test."""
    p = np.asarray(p, dtype=float)
    q = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        q[finite] = stats.false_discovery_control(p[finite], method="bh")
    return q


def _warn(count: int, what: str) -> None:
    if count:
        warnings.warn(f"{count} test(s): {what}; reported as NaN", StatisticsWarning, stacklevel=3)


def _quiet():
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore", RuntimeWarning)
    for name in ("DegenerateDataWarning", "SmallSampleWarning"):
        category = getattr(stats, name, None) or getattr(getattr(stats, "_warnings_errors", None), name, None)
        if category is not None:
            warnings.simplefilter("ignore", category)
    return ctx


def _columns(a: np.ndarray, b: np.ndarray | None = None):
    """Split the test columns into those with every value finite (tested together) and the rest."""
    finite = np.isfinite(a).all(axis=0)
    if b is not None:
        finite &= np.isfinite(b).all(axis=0)
    return np.flatnonzero(finite), np.flatnonzero(~finite)


def two_group_tests(a, b, *, permutations: int = 999, bootstrap: int = 999, confidence: float = 0.95,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """Group ``a`` (``[n_a, k]``) against group ``b`` (``[n_b, k]``), test by test.

    Returns ``[k]`` arrays: ``n_a``, ``n_b`` (finite values used), ``mean_a``, ``mean_b``,
    ``difference`` (mean_a - mean_b), ``t``, ``p_welch`` (``ttest_ind(equal_var=False)``),
    ``u``, ``p_mannwhitney`` (``mannwhitneyu``, two-sided), ``p_permutation``
    (``permutation_test`` of the difference of means, two-sided, ``permutations`` resamples;
    NaN when 0), ``hedges_g`` and its ``g_low``/``g_high`` bootstrap interval
    (``bootstrap``, percentile, ``bootstrap`` resamples; NaN when 0).
    """
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    k = a.shape[1]
    out = {name: np.full(k, np.nan) for name in (
        "n_a", "n_b", "mean_a", "mean_b", "difference", "t", "p_welch", "u", "p_mannwhitney",
        "p_permutation", "hedges_g", "g_low", "g_high")}
    rng = np.random.default_rng(seed)
    whole, partial = _columns(a, b)
    chunks = [(whole, a[:, whole], b[:, whole])] if whole.size else []
    chunks += [(np.array([j]), a[np.isfinite(a[:, j]), j][:, None], b[np.isfinite(b[:, j]), j][:, None])
               for j in partial]
    small = constant = 0
    ctx = _quiet()
    try:
        for cols, x, y in chunks:
            nx, ny = x.shape[0], y.shape[0]
            out["n_a"][cols], out["n_b"][cols] = nx, ny
            out["mean_a"][cols] = x.mean(axis=0) if nx else np.nan
            out["mean_b"][cols] = y.mean(axis=0) if ny else np.nan
            out["difference"][cols] = out["mean_a"][cols] - out["mean_b"][cols]
            if nx < 2 or ny < 2:
                small += cols.size
                continue
            flat = (np.ptp(x, axis=0) == 0) & (np.ptp(y, axis=0) == 0)
            constant += int(flat.sum())
            ok = cols[~flat]
            x, y = x[:, ~flat], y[:, ~flat]
            if not ok.size:
                continue
            t = stats.ttest_ind(x, y, axis=0, equal_var=False)
            out["t"][ok], out["p_welch"][ok] = t.statistic, t.pvalue
            u = stats.mannwhitneyu(x, y, axis=0, alternative="two-sided")
            out["u"][ok], out["p_mannwhitney"][ok] = u.statistic, u.pvalue
            out["hedges_g"][ok] = hedges_g(x, y, axis=0)
            if permutations:
                perm = stats.permutation_test((x, y), _mean_difference, permutation_type="independent",
                                              vectorized=True, n_resamples=permutations, axis=0,
                                              alternative="two-sided", rng=rng)
                out["p_permutation"][ok] = perm.pvalue
            if bootstrap:
                boot = stats.bootstrap((x, y), hedges_g, vectorized=True, axis=0, n_resamples=bootstrap,
                                       confidence_level=confidence, method="percentile", rng=rng)
                out["g_low"][ok], out["g_high"][ok] = boot.confidence_interval
    finally:
        ctx.__exit__(None, None, None)
    _warn(small, "a group has fewer than two finite values, so no test is defined")
    _warn(constant, "every value is identical in both groups, so no test is defined")
    return out


def paired_tests(first, second, *, bootstrap: int = 999, confidence: float = 0.95,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Within-statement contrast: ``first`` against ``second`` (``[n, k]`` each, same statements).

    Returns ``[k]`` arrays: ``n`` (pairs with both values finite), ``mean_first``,
    ``mean_second``, ``difference`` (mean of first - second), ``t``, ``p_paired_t``
    (``ttest_rel``), ``w``, ``p_wilcoxon`` (``wilcoxon``, two-sided), ``hedges_g`` (paired,
    ``paired_hedges_g``) and its ``g_low``/``g_high`` bootstrap interval.
    """
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if first.ndim == 1:
        first, second = first[:, None], second[:, None]
    k = first.shape[1]
    out = {name: np.full(k, np.nan) for name in (
        "n", "mean_first", "mean_second", "difference", "t", "p_paired_t", "w", "p_wilcoxon",
        "hedges_g", "g_low", "g_high")}
    rng = np.random.default_rng(seed)
    whole, partial = _columns(first, second)
    chunks = [(whole, first[:, whole], second[:, whole])] if whole.size else []
    for j in partial:
        keep = np.isfinite(first[:, j]) & np.isfinite(second[:, j])
        chunks.append((np.array([j]), first[keep, j][:, None], second[keep, j][:, None]))
    small = constant = 0
    ctx = _quiet()
    try:
        for cols, x, y in chunks:
            n = x.shape[0]
            out["n"][cols] = n
            out["mean_first"][cols] = x.mean(axis=0) if n else np.nan
            out["mean_second"][cols] = y.mean(axis=0) if n else np.nan
            out["difference"][cols] = out["mean_first"][cols] - out["mean_second"][cols]
            if n < 2:
                small += cols.size
                continue
            d = x - y
            flat = np.ptp(d, axis=0) == 0
            constant += int(flat.sum())
            ok, x, y, d = cols[~flat], x[:, ~flat], y[:, ~flat], d[:, ~flat]
            if not ok.size:
                continue
            t = stats.ttest_rel(x, y, axis=0)
            out["t"][ok], out["p_paired_t"][ok] = t.statistic, t.pvalue
            w = stats.wilcoxon(x, y, axis=0, alternative="two-sided")
            out["w"][ok], out["p_wilcoxon"][ok] = w.statistic, w.pvalue
            out["hedges_g"][ok] = paired_hedges_g(d, axis=0)
            if bootstrap:
                boot = stats.bootstrap((d,), paired_hedges_g, vectorized=True, axis=0, n_resamples=bootstrap,
                                       confidence_level=confidence, method="percentile", rng=rng)
                out["g_low"][ok], out["g_high"][ok] = boot.confidence_interval
    finally:
        ctx.__exit__(None, None, None)
    _warn(small, "fewer than two complete pairs, so no test is defined")
    _warn(constant, "the paired differences are all identical, so no test is defined")
    return out


def correlation_tests(values, target) -> dict[str, np.ndarray]:
    """Correlation of each test column of ``values`` (``[n, k]``) with ``target`` (``[n]``).

    Returns ``[k]`` arrays: ``n``, ``pearson_r``, ``p_pearson`` (``pearsonr``),
    ``spearman_rho``, ``p_spearman`` (``spearmanr``). Rows where either is NaN are left out.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    target = np.asarray(target, dtype=float)
    k = values.shape[1]
    out = {name: np.full(k, np.nan) for name in ("n", "pearson_r", "p_pearson", "spearman_rho", "p_spearman")}
    small = constant = 0
    ctx = _quiet()
    try:
        for j in range(k):
            keep = np.isfinite(values[:, j]) & np.isfinite(target)
            x, y = values[keep, j], target[keep]
            out["n"][j] = x.size
            if x.size < 3:
                small += 1
                continue
            if np.ptp(x) == 0 or np.ptp(y) == 0:
                constant += 1
                continue
            r = stats.pearsonr(x, y)
            out["pearson_r"][j], out["p_pearson"][j] = r.statistic, r.pvalue
            s = stats.spearmanr(x, y)
            out["spearman_rho"][j], out["p_spearman"][j] = s.statistic, s.pvalue
    finally:
        ctx.__exit__(None, None, None)
    _warn(small, "fewer than three complete pairs, so no correlation test is defined")
    _warn(constant, "one side is constant, so the correlation is undefined")
    return out
