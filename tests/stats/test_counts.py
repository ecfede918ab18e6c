"""Validity (healthy canaries and canaries exactly at the tolerance), robustness to bursts,
power and promotion of the sequential count test, by simulation.

Sizes are modest and seeds fixed; bounds allow Monte Carlo error (3 standard errors)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analyzer.core.stats.counts import CountTest
from analyzer.core.stats.power import wald_events_needed
from analyzer.core.stats.rates import rate_below
from tests.stats._sim import simulate

ALPHA = 0.05  # a large alpha makes the level bound sharp at small simulation sizes
R0 = 1.25


def _mc_bound(level: float, n: int) -> float:
    return level + 3 * math.sqrt(level * (1 - level) / n)


def test_aa_rollback_rate_below_alpha_across_traffic_and_base_rates() -> None:
    rps = np.array([20.0, 200.0, 2000.0])
    rates = np.array([0.001, 0.01, 0.05])
    per = 300
    grid_rps, grid_rate = np.meshgrid(rps, rates, indexing="ij")
    scen_rps = np.repeat(grid_rps.ravel(), per)
    scen_rate = np.repeat(grid_rate.ravel(), per)
    res = simulate(streams=len(scen_rps), total_rps=scen_rps, base_rate=scen_rate,
                   weights=(5, 10, 25, 50, 100), ticks_per_step=8, alpha=ALPHA, seed=11)
    rates_by_scenario = res.rejected.reshape(-1, per).mean(axis=1)
    assert rates_by_scenario.max() <= _mc_bound(ALPHA, per), rates_by_scenario
    assert res.rejected.mean() <= _mc_bound(ALPHA, len(scen_rps))


def test_at_the_tolerance_boundary_neither_error_exceeds_its_level() -> None:
    """Poisson counts, ratio exactly r0, weights changing and a shared traffic trend:
    P(ever E_reg >= 1/alpha) <= alpha (Ville) and P(ever E_ok >= 1/beta) <= beta."""
    res = simulate(streams=3000, total_rps=200, base_rate=0.01, ratio=R0,
                   weights=(5, 10, 25, 50), ticks_per_step=30, alpha=ALPHA, beta=0.05,
                   trend=0.5, seed=1)
    assert res.rejected.mean() <= _mc_bound(ALPHA, 3000)
    assert res.ok.mean() <= _mc_bound(0.05, 3000)


def test_false_promotion_beyond_the_tolerance_and_severe_exclusion() -> None:
    beyond = simulate(streams=2000, total_rps=200, base_rate=0.01, ratio=1.6,
                      weights=(5, 10, 25, 50), ticks_per_step=30, seed=2)
    assert beyond.ok.mean() <= _mc_bound(0.05, 2000)
    severe = simulate(streams=2000, total_rps=200, base_rate=0.01, ratio=2.0,
                      weights=(5, 10, 25, 50), ticks_per_step=30, seed=3)
    assert severe.severe.mean() <= _mc_bound(0.05, 2000)


def test_bursts_the_baseline_showed_at_the_boundary_tempered_and_untempered() -> None:
    """Not a theorem (docs/statistics.md, 2.5): per-version Gamma bursts (CV 1.2) that the
    stable's pre-rollout intervals showed, canary exactly at the tolerance, 1000 req/s: the
    tempered test stays within its level; without tempering it does not."""
    kw = dict(streams=1500, total_rps=1000, base_rate=0.01, ratio=R0, burst_cv=1.2,
              weights=(5, 10, 25, 50), ticks_per_step=30, alpha=ALPHA, seed=12)
    tempered = simulate(**kw)
    plain = simulate(**kw, temper=False)
    assert tempered.rejected.mean() <= _mc_bound(ALPHA, 1500)
    assert tempered.ok.mean() <= _mc_bound(0.05, 1500)
    assert plain.rejected.mean() > 3 * _mc_bound(ALPHA, 1500)


def test_power_2x_regression_at_50_canary_rps_and_1_percent() -> None:
    res = simulate(streams=500, total_rps=100, base_rate=0.01, ratio=2.0, weights=(50,),
                   ticks_per_step=40, alpha=0.01, seed=13)
    assert res.rejected.mean() >= 0.95
    # Wald's bound: no test can need fewer events on average than d(1-b||a)/KL
    minimum_ticks = wald_events_needed(0.5, 2.0, 1.25, 0.01) / (30 * 50 * 0.01 * 3)
    assert np.median(res.tick) >= math.floor(minimum_ticks)


def test_a_gross_regression_is_caught_at_the_first_interval() -> None:
    """No per-interval cap: 5x errors at 10 canary req/s and 1 % (3 canary errors expected in
    the first 30 s) are caught at the first tick in most runs, as the SPRT oracle does
    (statistics v1 capped each interval at half the threshold: 3 ticks at least)."""
    res = simulate(streams=1000, total_rps=200, base_rate=0.01, ratio=5.0, weights=(5,),
                   ticks_per_step=10, alpha=0.005, seed=21)
    assert (res.tick == 1).mean() >= 0.45
    assert res.rejected.mean() >= 0.99


def _z_paths(rng: np.random.Generator, b: int, ratio: float, horizon: int, r0: float) -> np.ndarray:
    """A one-sided z test of H0 r <= r0 recomputed on the cumulative counts at every tick (the
    peeking practice), 50 canary and 50 stable requests/s, 1% base rate: (streams, ticks)."""
    nc = rng.poisson(1500, (horizon, b))
    ns = rng.poisson(1500, (horizon, b))
    x = rng.poisson(nc * 0.01 * ratio).cumsum(0)
    y = rng.poisson(ns * 0.01).cumsum(0)
    nc, ns = nc.cumsum(0), ns.cumsum(0)
    t = x + y
    pi = nc * r0 / (nc * r0 + ns)
    with np.errstate(all="ignore"):
        z = (x - t * pi) / np.sqrt(t * pi * (1 - pi))
    return np.nan_to_num(z).T


def test_repeated_fixed_horizon_test_inflates_false_rollbacks_and_ours_does_not() -> None:
    rng = np.random.default_rng(19)
    horizon = 60
    z = _z_paths(rng, 3000, R0, horizon, R0)  # at the null boundary
    peeking = (z.max(axis=1) >= 2.326).mean()  # nominal one-sided level 0.01 at every tick
    ours = simulate(streams=1500, total_rps=100, base_rate=0.01, ratio=R0, weights=(50,),
                    ticks_per_step=horizon, alpha=0.01, seed=20)
    assert peeking > 3 * 0.01
    assert ours.rejected.mean() <= _mc_bound(0.01, 1500)


def test_regression_only_at_higher_weight_is_caught_faster_with_step_restarts() -> None:
    kw = dict(streams=600, total_rps=200, base_rate=0.01, ratio=2.0, ratio_from_weight=50,
              weights=(5, 10, 25, 50), ticks_per_step=30, alpha=0.01, seed=17)
    with_restarts = simulate(**kw)
    single = simulate(**kw, restarts=False)
    assert with_restarts.rejected.mean() >= 0.9
    assert np.mean(np.minimum(with_restarts.tick, 121)) < np.mean(np.minimum(single.tick, 121))


def test_a_ratio_that_changes_with_the_weight_is_not_read_as_bursts() -> None:
    """The burst estimate's residuals are taken against the step's own running ratio: a
    regression that appears at a new step is a level shift, and must not temper the evidence
    against it (statistics v1 read it as overdispersion: its regression e-value froze at ~9
    while the promotion evidence from the healthy step was 1e12)."""
    t = CountTest(0.5, 0.025, n_starts=3)
    t.set_baseline([10000.0] * 12, [100.0] * 12, 0.1)
    for _ in range(20):
        t.update(1000, 10, 9000, 90)  # healthy at 10 %
    before = t.result().burst_tau2
    t.start_step()
    tau2 = []
    for _ in range(5):
        res = t.update(5000, 150, 5000, 50)  # 3x at 50 %
        tau2.append(res.burst_tau2)
    assert max(tau2) <= before * 1.001, (before, tau2)
    assert res.e_regression >= 40


def test_no_information_intervals_leave_state_unchanged() -> None:
    t = CountTest(0.25, 0.01)
    before = t.result()
    t.update(0, 0, 1000, 5)  # canary without traffic
    t.update(1000, 0, 1000, 0)  # no events
    t.update(1000, 3, 0, 0)  # stable without traffic
    after = t.result()
    assert after.e_regression == pytest.approx(before.e_regression)
    assert after.e_noninferiority == pytest.approx(before.e_noninferiority)
    assert before.e_regression == pytest.approx(1.0)


def test_no_information_intervals_do_not_change_what_follows() -> None:
    """The first window after a weight change often has no canary requests yet: its stable
    errors must not become a ratio estimate that inflates the burst estimate (v1: a 2x
    regression then took 52 ticks instead of 3)."""
    data = [(3000, 60, 27000, 270)] * 6
    plain, after_gap = CountTest(0.25, 0.01), CountTest(0.25, 0.01)
    after_gap.update(0, 0, 30000, 300)
    after_gap.update(3000, 4, 0, 0)
    assert math.isnan(after_gap.result().estimate)  # nothing compared yet
    for row in data:
        a, b = plain.update(*row), after_gap.update(*row)
        assert b.e_regression == pytest.approx(a.e_regression, rel=0.05)
        assert b.estimate == pytest.approx(a.estimate)
    assert b.e_regression > 1e5 and b.canary_exposure == a.canary_exposure + 3000


def test_first_interval_without_canary_errors_does_not_explode_the_tempering() -> None:
    """A boundary estimate (no canary errors yet: ratio 0) as the plug-in would make the next
    residual huge; the plug-in adds half an event per version."""
    t = CountTest(0.25, 0.01)
    t.set_baseline([3000.0] * 20, [30.0] * 20, 0.1)
    t.update(300, 0, 2700, 27)  # 3 canary errors expected, none seen (5 % of the time)
    for _ in range(5):
        r = t.update(300, 3, 2700, 27)
    assert r.tempering > 0.9, r.tempering


def test_confidence_sequence_covers_the_true_ratio() -> None:
    t = CountTest(0.25, 0.05, streams=400, temper=False)
    rng = np.random.default_rng(18)
    covered = np.ones(400, dtype=bool)
    for _ in range(30):
        nc = rng.poisson(3000, 400)
        ns = rng.poisson(3000, 400)
        res = t.update(nc, rng.poisson(nc * 0.01 * 1.5), ns, rng.poisson(ns * 0.01))
        covered &= (res.ci_low <= 1.5) & (res.ci_high >= 1.5)
    assert covered.mean() >= 1 - _mc_bound(0.05, 400)
    assert np.median(res.ci_high / res.ci_low) < 1.6  # and it narrows


def test_zero_error_canary_becomes_non_inferior_by_negligible_rate() -> None:
    few = rate_below(0.001, 0, 1000, 0.01)
    many = rate_below(0.001, 0, 20000, 0.01)
    assert few.e_value < 100 <= many.e_value
    assert many.upper_bound < 0.001 < few.upper_bound
    assert rate_below(0.001, 40, 20000, 0.01).e_value < 1  # 0.2% is not negligible
    t = CountTest(0.25, 0.005, negligible_rate=0.001)
    t.set_baseline([6000.0] * 20, [0.0] * 20, 0.05)  # a service without errors
    assert t.result().ratio_weight == pytest.approx(0.05)  # the rate route is the fast one
    for _ in range(20):
        res = t.update(300, 0, 5700, 0)
    assert res.e_ok >= 20 and res.e_noninferiority == pytest.approx(1.0)


def test_warmup_caps_the_first_ticks_and_then_lets_go() -> None:
    """burstWarmup 3: during the first 3 ticks an interval adds at most half the rollback
    threshold (a decisive regression needs 3 ticks instead of 1); afterwards one decisive
    interval decides."""
    kw = dict(alpha=0.005, n_starts=1)
    capped, free = CountTest(0.25, warmup_ticks=3, **kw), CountTest(0.25, **kw)
    assert free.update(300, 90, 5700, 57).e_regression >= 200
    first = capped.update(300, 90, 5700, 57).e_regression
    assert first <= math.sqrt(200) * 1.0001
    assert capped.update(300, 90, 5700, 57).e_regression < 200
    assert capped.update(300, 90, 5700, 57).e_regression >= 200
    after = CountTest(0.25, warmup_ticks=1, **kw)
    after.update(300, 3, 5700, 57)  # the warm-up tick: an ordinary interval
    assert after.update(300, 90, 5700, 57).e_regression >= 200


def test_promotion_evidence_per_step_restarts() -> None:
    rollout, step = CountTest(0.25, 0.005), CountTest(0.25, 0.005, evidence_per_step=True)
    for t in (rollout, step):
        for _ in range(10):
            t.update(3000, 30, 27000, 270)
        t.start_step()
    assert rollout.result().e_ok > 1e3
    assert step.result().e_ok == pytest.approx(1.0)


def test_state_round_trip_continues_identically() -> None:
    a = CountTest(0.25, 0.01, n_starts=3, negligible_rate=0.001)
    a.set_baseline([9000.0] * 20, [80.0 + i for i in range(20)], 0.1)
    a.update(1000, 12, 9000, 80)
    a.start_step()
    b = CountTest.from_state(a.to_state())
    for t in (a, b):
        t.update(2000, 40, 8000, 70)
    assert a.result() == b.result()
    with pytest.raises(ValueError, match="version"):
        CountTest.from_state({"r_up": 1.25, "alpha": 0.01})  # statistics v1's shape
