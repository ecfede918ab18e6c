"""The e-value inequalities behind every guarantee (docs/statistics.md), checked exactly by
enumerating the conditional binomial and hypergeometric laws, plus the properties the
guarantees lean on: predictable tempering, the negligible-rate weight fixed before the rollout,
the burst estimator's consistency, the distribution test's level."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from analyzer.core.stats.bursts import BurstEstimator
from analyzer.core.stats.counts import (
    REGRESSION_OFFSETS,
    WARMUP_FRACTION,
    CountTest,
    loglik,
    share,
)
from analyzer.core.stats.distribution import DistributionTest, hypergeom_log_mgf_bound
from analyzer.core.stats.thresholds import ThresholdOutcome, ThresholdTracker

R0 = 1.25


def _mc_bound(level: float, n: int) -> float:
    return level + 3 * math.sqrt(level * (1 - level) / n)


def _log_mean_under(r: float, n_c: float, n_s: float, t: int, log_factor) -> np.ndarray:  # type: ignore[no-untyped-def]
    """log E[factor(x)] for x ~ Binomial(t, pi(r)) (the conditional law of the canary's count
    given the interval's total t), one value per column of `log_factor(xs)`."""
    pi = float(share(math.log(r), np.array([n_c]), np.array([n_s]))[0])
    xs = np.arange(t + 1)
    return logsumexp(stats.binom.logpmf(xs, t, pi)[:, None] + log_factor(xs), axis=0)


def _ll(points: np.ndarray, n_c: float, n_s: float, xs: np.ndarray) -> np.ndarray:
    m = len(xs)
    return loglik(points, np.full(m, n_c), xs.astype(float), np.full(m, n_s),
                  (xs.max() - xs).astype(float))


@pytest.mark.parametrize("n_c,n_s", [(300, 5700), (3000, 3000), (10, 90000)])
@pytest.mark.parametrize("t", [1, 7, 60, 400])
@pytest.mark.parametrize("a,capped", [(1.0, False), (0.3, False), (1.0, True), (0.05, True)])
def test_regression_factor_is_an_e_value_for_every_null_ratio(n_c: int, n_s: int, t: int,
                                                              a: float, capped: bool) -> None:
    """E_r[min(LR_theta^a, C)] <= 1 for every grid theta > r0 and every r <= r0 (monotone
    likelihood ratio + Jensen; C the warm-up cap)."""
    thetas = np.concatenate(([math.log(R0)], math.log(R0) + REGRESSION_OFFSETS[::7]))
    cap = WARMUP_FRACTION * math.log(1 / 0.005) if capped else math.inf

    def log_factor(xs: np.ndarray) -> np.ndarray:
        ll = _ll(thetas, n_c, n_s, xs)
        return np.minimum(a * (ll[:, 1:] - ll[:, :1]), cap)

    for r in (0.2, 1.0, 1.2, R0):
        assert (_log_mean_under(r, n_c, n_s, t, log_factor) <= 1e-9).all(), r


@pytest.mark.parametrize("boundary,null", [(R0, [R0, 1.5, 3.0]), (2.0, [2.0, 4.0])])
@pytest.mark.parametrize("a", [1.0, 0.4])
def test_noninferiority_and_severe_factors_are_e_values(boundary: float, null: list[float],
                                                        a: float) -> None:
    """LR(1 : r_b)^a has mean <= 1 under every r >= r_b (r_b = r0: promotion; r_b = the
    severe ratio: the risk-budgeted ramp's intermediate steps), whatever r does per interval."""
    pts = np.array([math.log(boundary), 0.0])
    for n_c, n_s, t in ((300, 5700, 60), (3000, 3000, 20), (50, 50, 5)):
        def log_factor(xs: np.ndarray, n_c: int = n_c, n_s: int = n_s) -> np.ndarray:
            ll = _ll(pts, n_c, n_s, xs)
            return (a * (ll[:, 1] - ll[:, 0]))[:, None]

        for r in null:
            assert _log_mean_under(r, n_c, n_s, t, log_factor)[0] <= 1e-9


def test_negligible_rate_factor_is_an_e_value_at_and_above_the_rate() -> None:
    """Each component f q of the rate route: E[f^x e^{(1-f) q n}] = e^{n (1-f)(q - p)} <= 1 for
    a Poisson count of mean n p with p >= q; tempering by c in (0, 1] keeps it (Jensen)."""
    q, n = 0.001, 3000.0
    for p in (q, 2 * q):
        xs = np.arange(60)
        logpmf = stats.poisson.logpmf(xs, n * p)
        for f in (0.25, 0.5, 0.75):
            for c in (1.0, 0.5):
                log_factor = c * (xs * math.log(f) + (1 - f) * q * n)
                assert logsumexp(logpmf + log_factor) <= 1e-9
        assert -n * p + q * n <= 1e-12  # f = 0: the factor is e^{qn} when x = 0, else 0


def test_tempering_is_predictable() -> None:
    """The tempering of an interval does not depend on that interval's counts."""
    base = CountTest(0.25, 0.005)
    base.set_baseline([6000.0] * 20, [60.0 + (i % 5) for i in range(20)], 0.05)
    for _ in range(5):
        base.update(300, 3, 5700, 57)
    state = base.to_state()
    seen = set()
    for x, y in ((0, 0), (40, 2), (3, 500)):
        c = CountTest.from_state(state)
        seen.add(round(c.update(300, x, 5700, y).tempering, 12))
    assert len(seen) == 1


def test_burst_estimator_is_consistent() -> None:
    """Pairs of consecutive stable intervals with Gamma multipliers of CV kappa estimate
    tau2 = 2 kappa^2 (per-version multipliers: the log-ratio's variance)."""
    rng = np.random.default_rng(5)
    b, j, kappa = 400, 200, 0.5
    k = 1 / kappa**2
    n = np.full((b, j), 20000.0)
    y = rng.poisson(n * 0.01 * rng.gamma(k, 1 / k, (b, j))).astype(float)
    est = BurstEstimator(b)
    est.add_baseline(n, y)
    assert np.median(est.baseline_estimate()) == pytest.approx(2 * kappa**2, rel=0.15)
    none = BurstEstimator(b)
    none.add_baseline(n, rng.poisson(n * 0.01).astype(float))
    assert np.median(none.baseline_estimate()) < 0.01  # Poisson: no bursts
    assert np.quantile(none.tau2_promotion(), 0.9) < 0.02  # ... and little for promotion


def test_negligible_rate_weight_is_fixed_before_the_rollout_and_valid() -> None:
    """A canary at the intersection null (rate = q, ratio >= r0): the combined e-value
    w E_ratio + (1 - w) E_rate stays below 1/beta with probability >= 1 - beta."""
    rng = np.random.default_rng(4)
    b, q = 3000, 0.001
    c = CountTest(0.25, 0.05, streams=b, negligible_rate=q, compute_cs=False)
    n = np.full((b, 20), 4000.0)
    c.set_baseline(n, rng.poisson(n * q / R0).astype(float), 0.05)  # stable at q / r0
    w = c.ratio_weight.copy()
    hit = np.zeros(b, dtype=bool)
    for _ in range(120):
        n_c, n_s = np.full(b, 300.0), np.full(b, 5700.0)
        res = c.update(n_c, rng.poisson(n_c * q), n_s, rng.poisson(n_s * q / R0))
        hit |= res.e_ok >= 20
    assert (c.ratio_weight == w).all()
    assert hit.mean() <= _mc_bound(0.05, b)


@pytest.mark.parametrize("n_tot,k_c,m", [(100, 5, 30), (100, 50, 60), (1000, 50, 900),
                                          (40, 39, 3), (6000, 300, 2500)])
def test_hypergeometric_moment_bound(n_tot: int, k_c: int, m: int) -> None:
    xs = np.arange(max(0, m - (n_tot - k_c)), min(k_c, m) + 1)
    pmf = stats.hypergeom.pmf(xs, n_tot, k_c, m)
    for lw in (-1.5, -0.5, -0.1, 0.0):
        exact = math.log(float(pmf @ np.exp(lw * xs)))
        bound = float(hypergeom_log_mgf_bound(np.array(float(n_tot)), np.array(float(k_c)),
                                              np.array(float(m)), np.array(lw)))
        assert bound >= exact - 1e-9
        if lw == -0.1 and k_c <= 0.1 * n_tot:
            assert bound - exact < 0.15 * abs(exact) + 1e-6  # and tight at small shares


def _latency_streams(runs: int, ticks: int, sd: float, rng: np.random.Generator,
                     canary_scale: float = 1.0) -> DistributionTest:
    """Per-version lognormal latencies over 20 buckets, each version's log-median moved by
    N(0, sd^2) per interval; 300 canary vs 5700 stable requests per interval; a pre-rollout
    baseline of 20 stable intervals with the same noise."""
    edges = np.log(np.geomspace(0.005, 10.0, 19))

    def probs(shift: np.ndarray) -> np.ndarray:
        cdf = stats.norm.cdf((edges[None, :] - math.log(0.05) - shift[:, None]) / 0.74)
        cdf = np.concatenate([np.zeros((len(shift), 1)), cdf, np.ones((len(shift), 1))], 1)
        return np.diff(cdf, axis=1)

    t = DistributionTest(streams=runs)
    base = np.stack([rng.multinomial(6000, probs(rng.normal(0, sd, runs)))
                     for _ in range(20)], axis=1).astype(float)
    t.set_baseline_counts(base)
    for _ in range(ticks):
        c = rng.multinomial(300, probs(rng.normal(0, sd, runs) + math.log(canary_scale)))
        s = rng.multinomial(5700, probs(rng.normal(0, sd, runs)))
        t.update_counts(c.astype(float), s.astype(float))
    return t


def test_distribution_test_level_without_and_with_latency_noise() -> None:
    """Without noise the tempered test is exact (Theorem 6); with per-interval noise (sd 0.15
    in log median per version) the tempering keeps it near its level; untempered it is not."""
    rng = np.random.default_rng(3)
    alpha = 0.05
    clean = _latency_streams(1000, 60, 0.0, rng)
    assert (clean.e_value() >= 1 / alpha).mean() <= _mc_bound(alpha, 1000)
    noisy = _latency_streams(1000, 60, 0.15, rng)
    assert (noisy.e_value() >= 1 / alpha).mean() <= _mc_bound(alpha, 1000)
    slower = _latency_streams(200, 20, 0.0, rng, canary_scale=1.5)
    assert (slower.e_value() >= 1 / alpha).mean() >= 0.95


def test_threshold_shared_breach_holds_unless_asked() -> None:
    t = ThresholdTracker(5.0, 2)
    assert t.update(7.0, 6.0).outcome is ThresholdOutcome.SHARED_BREACH
    assert t.update(7.0, 6.0).consecutive_failures == 0
    r = t.update(7.0, 4.0)
    assert r.outcome is ThresholdOutcome.FAIL and not r.failed
    assert t.update(7.0, None).failed  # stable unknown: the canary's breach counts
    assert t.update(4.0, 6.0).outcome is ThresholdOutcome.PASS and t.failures == 0
    strict = ThresholdTracker(5.0, 1, when_stable_breaches="rollback")
    assert strict.update(7.0, 6.0).failed
