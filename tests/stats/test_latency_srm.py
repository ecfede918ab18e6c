"""Latency helpers, the whole-distribution test, and the sample-ratio mismatch test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analyzer.core.stats.distribution import DistributionTest
from analyzer.core.stats.latency import (
    bound_for_slo,
    choose_bound,
    interpolate_quantile,
)
from analyzer.core.stats.srm import SampleRatioTest
from analyzer.core.types import Histogram

LE = (0.05, 0.1, 0.25, 0.5, 1.0, math.inf)


def _hist(rng: np.random.Generator, n: int, slow: float = 1.0) -> Histogram:
    lat = rng.lognormal(math.log(0.04), 0.6, n)
    tail = rng.random(n) < 0.02 * slow
    lat[tail] = rng.uniform(0.2, 2.0, int(tail.sum()))
    return Histogram(LE, tuple(int((lat <= b).sum()) for b in LE))


def test_interpolated_quantile_like_promql() -> None:
    h = Histogram((0.1, 0.2, math.inf), (50, 100, 100))
    assert interpolate_quantile(h, 0.5) == pytest.approx(0.1)
    assert interpolate_quantile(h, 0.75) == pytest.approx(0.15)
    assert interpolate_quantile(h, 0.25) == pytest.approx(0.05)
    assert interpolate_quantile(Histogram((0.1, math.inf), (10, 20)), 0.99) == 0.1
    assert interpolate_quantile(Histogram((0.1, math.inf), (0, 0)), 0.5) is None


def test_bounds_from_baseline_and_slo() -> None:
    h = Histogram(LE, (800, 950, 985, 995, 999, 1000))
    assert choose_bound(h, 0.5) == 0.05
    assert choose_bound(h, 0.99) == 0.5
    assert choose_bound(h, 0.9999) == 1.0  # in the +Inf bucket: the largest finite bound
    assert bound_for_slo(LE, 0.3) == 0.5
    assert bound_for_slo(LE, 0.25) == 0.25


def test_distribution_test_aa_validity_and_power() -> None:
    rng = np.random.default_rng(21)
    alpha, runs = 0.05, 150
    false = 0
    for _ in range(runs):
        t = DistributionTest()
        for _ in range(10):
            res = t.update(_hist(rng, 300), _hist(rng, 3000))
        false += res.e_value >= 1 / alpha
    assert false / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)
    detected = 0
    for _ in range(30):
        t = DistributionTest()
        for _ in range(10):
            res = t.update(_hist(rng, 300, slow=3.0), _hist(rng, 3000))
        detected += res.e_value >= 1 / alpha
    assert detected >= 25


def test_distribution_test_learns_the_noise_from_the_baseline_and_round_trips() -> None:
    rng = np.random.default_rng(23)
    quiet, noisy = DistributionTest(), DistributionTest()
    quiet.set_baseline([_hist(rng, 3000) for _ in range(20)])
    # a baseline whose tail share moves a lot from interval to interval
    noisy.set_baseline([_hist(rng, 3000, slow=float(rng.choice([0.3, 3.0]))) for _ in range(20)])
    assert noisy.noise_level()[0] > 10 * quiet.noise_level()[0]
    a = noisy.update(_hist(rng, 300), _hist(rng, 3000))
    assert a.tempering < quiet.update(_hist(rng, 300), _hist(rng, 3000)).tempering
    state = noisy.to_state()
    again = DistributionTest.from_state(state)
    h = (_hist(rng, 300, slow=2.0), _hist(rng, 3000))
    assert noisy.update(*h) == again.update(*h)
    with pytest.raises(ValueError, match="version"):
        DistributionTest.from_state({"le": None, "log_e": 0.0, "intervals": 0, "past": None})


def test_srm_flags_a_misapplied_weight_and_not_a_correct_one() -> None:
    rng = np.random.default_rng(22)
    flagged_ok = 0
    for _ in range(40):
        t = SampleRatioTest(alpha=0.01)
        for _ in range(20):
            n = rng.poisson(3000)
            c = rng.binomial(n, 0.10)
            res = t.update(int(c), int(n - c), 10)
        flagged_ok += res.mismatch
    assert flagged_ok <= 2
    t = SampleRatioTest(alpha=0.01)
    for _ in range(10):
        n = rng.poisson(3000)
        c = rng.binomial(n, 0.05)  # router told 10%, canary gets 5%
        res = t.update(int(c), int(n - c), 10)
    assert res.mismatch
    assert res.observed_share == pytest.approx(5, abs=1)
    t = SampleRatioTest(alpha=0.01)
    assert not t.update(0, 5000, 0).mismatch  # weight 0: nothing to test
