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
