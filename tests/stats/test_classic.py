"""Classic fixed-horizon tests agree with scipy.stats."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from analyzer.core.stats.classic import fisher_exact, kayenta_classify, mann_whitney, welch_t


@pytest.mark.parametrize("seed", range(6))
def test_mann_whitney_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(0.3 * seed, 1, 15 + seed), 1)  # rounding makes ties
    y = np.round(rng.normal(0, 1, 20), 1)
    ours = mann_whitney(x, y)
    ref = stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic")
    assert ours.statistic == pytest.approx(ref.statistic)
    assert ours.pvalue == pytest.approx(ref.pvalue, rel=1e-9)


def test_mann_whitney_interval_inverts_the_test() -> None:
    """Shifts inside the 98% interval are not rejected at 2%; shifts well outside are."""
    rng = np.random.default_rng(7)
    x = rng.normal(1.0, 1, 40)
    y = rng.normal(0.0, 1, 50)
    r = mann_whitney(x, y, confidence=0.98)
    lo, hi = r.confidence_interval
    assert lo < r.estimate < hi
    diffs = np.sort((x[:, None] - y[None, :]).ravel())
    assert r.estimate == pytest.approx(np.median(diffs))
    width = hi - lo
    for d in np.linspace(lo + 0.02 * width, hi - 0.02 * width, 7):
        assert stats.mannwhitneyu(x - d, y, method="asymptotic").pvalue > 0.02 * 0.9
    for d in (lo - 0.2 * width, hi + 0.2 * width):
        assert stats.mannwhitneyu(x - d, y, method="asymptotic").pvalue < 0.02


@pytest.mark.parametrize("seed", range(5))
def test_welch_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.2, 1, 12 + seed)
    y = rng.normal(0, 2, 30)
    ours = welch_t(x, y)
    ref = stats.ttest_ind(x, y, equal_var=False)
    assert ours.statistic == pytest.approx(ref.statistic)
    assert ours.pvalue == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval(0.95)
    assert ours.confidence_interval == pytest.approx((ci.low, ci.high))


@pytest.mark.parametrize(
    "table", [[[8, 2], [1, 5]], [[0, 10], [3, 7]], [[20, 980], [9, 991]], [[5, 5], [5, 5]],
              [[3, 120], [30, 900]]],
)
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_fisher_matches_scipy(table: list[list[int]], alternative: str) -> None:
    ours = fisher_exact(table, alternative)
    ref = stats.fisher_exact(table, alternative=alternative)
    assert ours.pvalue == pytest.approx(ref.pvalue, rel=1e-7)
    if np.isfinite(ref.statistic):
        assert ours.statistic == pytest.approx(ref.statistic)


def test_kayenta_classification() -> None:
    rng = np.random.default_rng(3)
    stable = rng.normal(100, 5, 30)
    assert kayenta_classify(rng.normal(130, 5, 30), stable).classification == "High"
    assert kayenta_classify(rng.normal(70, 5, 30), stable).classification == "Low"
    same = kayenta_classify(rng.normal(100, 5, 30), stable)
    assert same.classification == "Pass"
    assert same.effect_size == pytest.approx(1.0, abs=0.05)
    assert kayenta_classify([], stable).classification == "NoData"
