"""Property tests (hypothesis) on the e-values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.core.stats.counts import CountTest
from analyzer.core.stats.distribution import DistributionTest
from analyzer.core.stats.rates import rate_below
from analyzer.core.types import Histogram

interval = st.tuples(
    st.integers(0, 5000), st.integers(0, 60), st.integers(0, 5000), st.integers(0, 60)
)


@settings(max_examples=60, deadline=None)
@given(st.lists(interval, min_size=0, max_size=8), st.floats(0.05, 2.0), st.booleans(),
       st.sampled_from([0.0, 0.001]), st.lists(interval, min_size=0, max_size=4))
def test_e_values_non_negative_and_one_before_data(
    data: list[tuple[int, int, int, int]], tol: float, temper: bool, q: float,
    baseline: list[tuple[int, int, int, int]],
) -> None:
    t = CountTest(tol, 0.01, temper=temper, negligible_rate=q, n_starts=2)
    if baseline:
        t.set_baseline([b[2] for b in baseline], [min(b[3], b[2]) for b in baseline], 0.05)
    first = t.result()
    for e in (first.e_regression, first.e_noninferiority, first.e_ok, first.e_severe):
        assert e == pytest.approx(1.0, abs=1e-12)
    for i, (n_c, x, n_s, y) in enumerate(data):
        if i == 3:
            t.start_step()
        r = t.update(n_c, min(x, n_c), n_s, min(y, n_s))
        for e in (r.e_regression, r.e_noninferiority, r.e_ok, r.e_severe, r.e_rate):
            assert e >= 0 and not math.isnan(e)
        assert 0 < r.tempering <= 1


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 200), st.integers(1, 200), st.integers(1, 40), st.integers(0, 30),
    st.integers(0, 30), st.integers(0, 30), st.integers(0, 30),
)
def test_splitting_an_interval_with_equal_shares_changes_nothing(
    a: int, b: int, k: int, x1: int, y1: int, x2: int, y2: int
) -> None:
    """The model says: two halves with the same canary share carry the same likelihood as the
    whole (binomial coefficients cancel in the ratio). Holds for the plain Poisson test."""
    n_c1, n_s1 = a * k, b * k  # first half
    n_c2, n_s2 = a * 2 * k, b * 2 * k  # second half, same share
    whole = CountTest(0.25, 0.01, temper=False)
    whole.update(n_c1 + n_c2, x1 + x2, n_s1 + n_s2, y1 + y2)
    split = CountTest(0.25, 0.01, temper=False)
    split.update(n_c1, x1, n_s1, y1)
    split.update(n_c2, x2, n_s2, y2)
    rw, rs = whole.result(), split.result()
    assert np.isclose(rw.e_regression, rs.e_regression, rtol=1e-9)
    assert np.isclose(rw.e_noninferiority, rs.e_noninferiority, rtol=1e-9)
    assert np.isclose(rw.e_severe, rs.e_severe, rtol=1e-9)
    assert rw.estimate == rs.estimate or (math.isnan(rw.estimate) and math.isnan(rs.estimate))


@settings(max_examples=40, deadline=None)
@given(st.floats(1e-5, 0.1), st.integers(0, 100), st.integers(0, 100000))
def test_rate_bound_e_value_non_negative_and_monotone(q: float, e: int, n: int) -> None:
    e = min(e, n)
    r = rate_below(q, e, n, 0.01)
    assert r.e_value >= 0
    assert rate_below(q * 2, e, n, 0.01).e_value >= r.e_value
    assert rate_below(q, 0, 0, 0.01).e_value == 1.0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=3, max_size=3),
       st.lists(st.integers(0, 300), min_size=3, max_size=3))
def test_distribution_e_value_non_negative_and_one_before_data(c: list[int], s: list[int]) -> None:
    t = DistributionTest()
    assert t.result().e_value == 1.0
    le = (0.1, 0.5, math.inf)
    hc = Histogram(le, tuple(int(v) for v in np.cumsum(c)))
    hs = Histogram(le, tuple(int(v) for v in np.cumsum(s)))
    for _ in range(3):
        assert t.update(hc, hs).e_value >= 0
