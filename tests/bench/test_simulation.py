"""The Monte Carlo harness (analyzer/offline/montecarlo.py): reproducible, sensible, truthful."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest

from analyzer.offline.montecarlo import (
    EPOCH,
    Latency,
    RunOutcome,
    Scenario,
    SimulationSummary,
    TrafficGenerator,
    simulate_rollouts,
)
from analyzer.policy import Policy
from benchmarks.decision_quality import reference_policy
from benchmarks.peers import FlaggerJudge, OracleJudge


def policy(checks: list[dict] | None = None, **analysis: str) -> Policy:
    data = reference_policy().model_dump(mode="json", exclude_none=True)
    if checks:
        data["spec"]["checks"] = checks
    data["spec"]["analysis"].update(analysis)
    return Policy.model_validate(data)


def test_same_seed_same_results_other_seed_other_results() -> None:
    p = policy()
    sc = Scenario("repro", rps=400, error_rate=0.01, error_multiplier=1.5, regression=True)
    a = simulate_rollouts(p, sc, 30, seed=3, judge_factory=FlaggerJudge)
    b = simulate_rollouts(p, sc, 30, seed=3, judge_factory=FlaggerJudge)
    c = simulate_rollouts(p, sc, 30, seed=4, judge_factory=FlaggerJudge)
    assert a.results == b.results
    assert a.results != c.results
    assert a.runs == 30 and len(a.results) == 30


def test_our_judge_rolls_back_a_gross_regression_and_counts_ticks() -> None:
    p = policy()
    sc = Scenario("5x", rps=2000, error_rate=0.01, error_multiplier=5.0)
    s = simulate_rollouts(p, sc, 6, seed=1)
    assert s.scenario.is_regression
    assert s.detection_rate is not None and s.false_rollback_rate is None
    assert all(r.outcome is RunOutcome.ROLLED_BACK for r in s.results)
    assert all(r.weight == 0 for r in s.results)  # traffic back to stable
    interval = p.spec.analysis.interval.total_seconds()
    for r in s.results:
        assert r.seconds == pytest.approx(r.ticks * interval)
    assert s.rollback_rate.value == 1.0
    assert s.median_time_to_rollback.value <= s.p90_time_to_rollback.value


def test_a_healthy_canary_passes_every_step_with_a_permissive_judge() -> None:
    p = policy()
    sc = Scenario("aa", rps=200, error_rate=0.0001)
    s = simulate_rollouts(p, sc, 10, seed=2, judge_factory=FlaggerJudge)
    assert s.false_rollback_rate is not None
    promoted = [r for r in s.results if r.outcome is RunOutcome.PROMOTED]
    assert promoted, [r.reason for r in s.results]
    # four analysis steps of at least minStepDuration each, then the final weight
    min_step = p.spec.analysis.minStepDuration.total_seconds()
    assert all(r.seconds >= 4 * min_step and r.weight == 100 for r in promoted)


def test_pause_steps_pass_through() -> None:
    data = policy().model_dump(mode="json", exclude_none=True)
    data["spec"]["strategy"]["steps"] = [5, {"pause": {}}, 50, 100]
    p = Policy.model_validate(data)
    s = simulate_rollouts(p, Scenario("aa", rps=200, error_rate=0.0001), 4, seed=2,
                          judge_factory=FlaggerJudge)
    assert any(r.outcome is RunOutcome.PROMOTED for r in s.results)


def test_the_judges_pause_ends_a_run_as_inconclusive() -> None:
    # at 1 rps with no errors nothing can be shown: our judge pauses at maxStepDuration
    p = policy(maxStepDuration="3m", minStepDuration="1m")
    s = simulate_rollouts(p, Scenario("thin", rps=1, error_rate=0.01), 3, seed=5)
    assert all(r.outcome is RunOutcome.INCONCLUSIVE for r in s.results)
    assert all(r.seconds <= 3 * 60 + 30 for r in s.results)
    assert s.inconclusive_rate.value == 1.0
    assert math.isnan(s.median_time_to_promote.value)


def test_generator_follows_the_scenario() -> None:
    sc = Scenario("gen", rps=1000, error_rate=0.02, error_multiplier=3.0,
                  canary_latency=Latency(0.05, 0.6), regression_above_weight=25)
    gen = TrafficGenerator(sc, np.random.default_rng(0))
    weights = np.array([10.0] * 200 + [50.0] * 200)
    d = gen.draw(0.0, 60.0, weights)
    n_c, e_c = d["n_c"], d["e_c"]
    low, high = slice(0, 200), slice(200, 400)
    assert n_c[low].sum() / (n_c[low] + d["n_s"][low]).sum() == pytest.approx(0.10, abs=0.01)
    assert e_c[low].sum() / n_c[low].sum() == pytest.approx(0.02, rel=0.1)  # healthy below 25 %
    assert e_c[high].sum() / n_c[high].sum() == pytest.approx(0.06, rel=0.1)
    assert (d["h_c"][:, -1] == n_c).all() and (d["h_s"][:, -1] == d["n_s"]).all()
    s = gen.samples(d, 250, EPOCH, EPOCH + timedelta(seconds=60), 50.0)
    assert s.canary is not None and s.canary.latency is not None
    assert s.canary.latency.total == s.canary.requests
    truth = sc.true_ratios(50.0, 0.3)
    assert truth["error-rate"] == pytest.approx(3.0)
    assert truth["latency"] > 2
    assert sc.true_ratios(10.0, 0.3) == {"error-rate": 1.0, "latency": 1.0}


def test_scenario_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="rps"):
        Scenario("x", rps=0)
    with pytest.raises(ValueError, match="error rates"):
        Scenario("x", rps=1, error_rate=0.5, error_multiplier=3)


def test_summary_standard_errors() -> None:
    from analyzer.offline.montecarlo import RunResult

    results = [RunResult(RunOutcome.ROLLED_BACK, 60.0 * (i + 1), i + 1, 0, "")
               for i in range(10)] + [RunResult(RunOutcome.PROMOTED, 600.0, 20, 100, "")] * 30
    s = SimulationSummary.from_results(Scenario("s", rps=1), 0, results)
    assert s.rollback_rate.value == pytest.approx(0.25)
    assert s.rollback_rate.stderr == pytest.approx(math.sqrt(0.25 * 0.75 / 40))
    assert s.median_time_to_rollback.value == pytest.approx(330.0)
    assert s.median_time_to_rollback.stderr > 0
    assert s.median_time_to_promote.value == 600.0


def test_oracle_factory_gets_the_scenario() -> None:
    import functools

    sc = Scenario("or", rps=2000, error_rate=0.01, error_multiplier=2.0)
    s = simulate_rollouts(policy(), sc, 5, seed=1,
                          judge_factory=functools.partial(OracleJudge, scenario=sc))
    assert all(r.outcome is RunOutcome.ROLLED_BACK for r in s.results)


def test_baseline_series_has_the_scenarios_bursts_unless_they_begin_with_the_rollout() -> None:
    windows = [(-30.0 * (k + 1), -30.0 * k) for k in range(20)][::-1]
    for seen in (True, False):
        sc = Scenario("b", rps=20000, error_rate=0.01, burstiness=1.0, bursts_in_baseline=seen)
        series = TrafficGenerator(sc, np.random.default_rng(1)).baseline_series(windows, 50)
        rates = np.array([[v.errors / v.requests for v in run] for run in series])
        cv = rates.std(axis=1).mean() / 0.01
        # CV 1 bursts versus Poisson noise alone (sd 1 / sqrt(6 errors) ~ 0.07 of the rate)
        assert (cv > 0.6) if seen else (cv < 0.15), (seen, cv)
        assert all(len(run) == 20 and run[0].latency is not None for run in series)


def test_canary_only_bursts_and_latency_noise() -> None:
    sc = Scenario("c", rps=20000, error_rate=0.01, burstiness=1.0, canary_only_bursts=True,
                  latency_noise=0.3)
    gen = TrafficGenerator(sc, np.random.default_rng(2))
    draws = [gen.draw(30.0 * k, 30.0, np.full(50, 50.0)) for k in range(20)]
    c = np.array([d["e_c"] / d["n_c"] for d in draws])
    s = np.array([d["e_s"] / d["n_s"] for d in draws])
    assert c.std(axis=0).mean() > 5 * s.std(axis=0).mean()
    # each version's median moves on its own: the share under 50 ms differs between versions
    # by far more than binomial noise
    bucket = gen.bounds.index(0.05)
    under_c = np.array([d["h_c"][:, bucket] / d["n_c"] for d in draws])
    under_s = np.array([d["h_s"][:, bucket] / d["n_s"] for d in draws])
    assert np.abs(under_c - under_s).mean() > 0.05


def test_overlapping_windows_overlap_for_real(monkeypatch: pytest.MonkeyPatch) -> None:
    """window_intervals 4: each tick's window adds up the step's last 4 intervals, so
    consecutive windows share 3 intervals (the old harness drew fresh data for a longer
    window, which is not what an overlapping analysis.window gives)."""
    draws: list[dict] = []
    seen: list = []
    real_draw = TrafficGenerator.draw

    def recording_draw(self, t_offset, seconds, weights):  # type: ignore[no-untyped-def]
        d = real_draw(self, t_offset, seconds, weights)
        draws.append(d)
        return d

    class Recorder(FlaggerJudge):
        def evaluate(self, samples, now):  # type: ignore[no-untyped-def]
            seen.append(samples)
            return super().evaluate(samples, now)

    monkeypatch.setattr(TrafficGenerator, "draw", recording_draw)
    sc = Scenario("ov", rps=400, error_rate=0.0001, window_intervals=4, regression=False)
    simulate_rollouts(policy(minStepDuration="4m"), sc, 1, seed=3, judge_factory=Recorder)
    step = [i for i, s in enumerate(seen) if s.canary_weight == seen[0].canary_weight]
    assert len(step) >= 6
    for i in step[:6]:
        k = min(i + 1, 4)
        window = draws[i + 1 - k:i + 1]
        assert seen[i].canary.requests == sum(int(d["n_c"][0]) for d in window)
        assert seen[i].stable.errors == sum(int(d["e_s"][0]) for d in window)
        assert (seen[i].t1 - seen[i].t0).total_seconds() == 30 * k
    # a new step starts its windows afresh (the engine clips a window to the step's start)
    nxt = step[-1] + 1
    assert seen[nxt].canary_weight != seen[0].canary_weight
    assert seen[nxt].canary.requests == int(draws[nxt]["n_c"][0])


def test_our_judge_does_not_count_overlapping_windows_twice() -> None:
    sc = Scenario("ov2", rps=400, error_rate=0.01, window_intervals=4, regression=False)
    decisions: list = []

    from analyzer.core.judge import Judge

    class Recorder(Judge):
        def evaluate(self, samples, now):  # type: ignore[no-untyped-def]
            d = super().evaluate(samples, now)
            decisions.append(d)
            return d

    simulate_rollouts(policy(), sc, 1, seed=3, judge_factory=Recorder)
    skipped = [d for d in decisions if "overlaps data already analysed" in d.reason
               or any("overlaps data already analysed" in v.reason for v in d.verdicts)]
    assert skipped and len(skipped) < len(decisions)
