"""The peer judges of the benchmark behave sensibly on trivial inputs; the SPRT oracle hits
its nominal error rates roughly."""

from __future__ import annotations

import functools
import math
from datetime import timedelta

import pytest

from analyzer.core.stats.power import wald_events_needed
from analyzer.core.types import Action, Histogram, Samples, VersionSample
from analyzer.offline.montecarlo import EPOCH, Scenario, simulate_rollouts
from analyzer.policy import Policy
from benchmarks.decision_quality import reference_policy
from benchmarks.peers import (
    FlaggerJudge,
    KayentaJudge,
    OracleJudge,
    RepeatedFisherJudge,
    fisher_greater,
)

LE = (0.1, 0.25, 0.5, 1.0, math.inf)


def policy(checks: list[dict] | None = None) -> Policy:
    data = reference_policy().model_dump(mode="json", exclude_none=True)
    if checks:
        data["spec"]["checks"] = checks
    return Policy.model_validate(data)


def hist(n: int, slow: float = 0.0) -> Histogram:
    """n requests: most under 100 ms, a share `slow` between 0.5 s and 1 s."""
    k = round(n * slow)
    return Histogram(LE, (n - k, n - k, n - k, n, n))


def tick(k: int, stable: tuple[int, int, float], canary: tuple[int, int, float]) -> Samples:
    t0 = EPOCH + timedelta(seconds=30 * k)
    return Samples(
        t0, t0 + timedelta(seconds=30),
        VersionSample(stable[0], stable[1], hist(stable[0], stable[2])),
        VersionSample(canary[0], canary[1], hist(canary[0], canary[2])),
        canary_weight=10,
    )


def drive(judge, stable, canary, ticks: int = 12) -> list[Action]:
    judge.set_baseline(hist(100000, 0.005))
    judge.start_step(EPOCH, 10)
    actions = []
    for k in range(ticks):
        s = tick(k, stable, canary)
        actions.append(judge.evaluate(s, s.t1).action)
        if actions[-1] in (Action.ROLLBACK, Action.PROMOTE):
            break
    return actions


@pytest.mark.parametrize("cls", [KayentaJudge, FlaggerJudge, RepeatedFisherJudge])
def test_identical_healthy_versions_are_promoted(cls) -> None:
    actions = drive(cls(policy()), (9000, 0, 0.0), (1000, 0, 0.0))
    assert actions[-1] is Action.PROMOTE
    assert len(actions) >= 4  # not before minStepDuration (2 m of 30 s ticks)


@pytest.mark.parametrize("cls", [KayentaJudge, FlaggerJudge, RepeatedFisherJudge])
def test_a_broken_canary_is_rolled_back(cls) -> None:
    actions = drive(cls(policy()), (9000, 9, 0.0), (1000, 500, 0.5))
    assert actions[-1] is Action.ROLLBACK


def test_flagger_needs_five_failed_checks_and_ignores_stable() -> None:
    actions = drive(FlaggerJudge(policy()), (9000, 9000, 0.0), (1000, 20, 0.0))
    assert actions == [Action.HOLD] * 4 + [Action.ROLLBACK]  # 2 % errors > 1 %
    # a slow canary: p99 above 500 ms fails the check too
    assert drive(FlaggerJudge(policy()), (9000, 0, 0.0), (1000, 0, 0.05))[-1] is Action.ROLLBACK


def test_kayenta_needs_three_minutes_of_data_then_fails_fast() -> None:
    actions = drive(KayentaJudge(policy()), (9000, 9, 0.0), (1000, 100, 0.0))
    assert actions[-1] is Action.ROLLBACK
    assert len(actions) == 6  # minutes 0..2 are complete at the 6th tick (3 min)


def test_fisher_p_value() -> None:
    from scipy.stats import fisher_exact

    p = fisher_greater(12, 1000, 40, 9000)
    ref = fisher_exact([[12, 1000 - 12], [40, 9000 - 40]], alternative="greater").pvalue
    assert p == pytest.approx(ref, rel=1e-9)
    assert fisher_greater(0, 0, 5, 100) == 1.0


def test_oracle_decides_from_the_truth() -> None:
    bad = Scenario("bad", rps=1, error_rate=0.01, error_multiplier=3.0)
    actions = drive(OracleJudge(policy(), scenario=bad), (9000, 90, 0.005), (1000, 30, 0.005))
    assert actions[-1] is Action.ROLLBACK
    good = Scenario("good", rps=1, error_rate=0.01)
    actions = drive(OracleJudge(policy(), scenario=good), (9000, 90, 0.005), (1000, 10, 0.005),
                    ticks=40)
    assert actions[-1] is Action.PROMOTE


ERRORS_ONLY = [{"type": "error-rate", "tolerance": 0.25}]


def test_sprt_oracle_hits_its_nominal_error_rates_roughly() -> None:
    p = policy(ERRORS_ONLY)
    alpha, beta = p.spec.decision.alpha, 0.05
    healthy = Scenario("sprt-aa", rps=4000, error_rate=0.02)
    s = simulate_rollouts(p, healthy, 300, seed=11,
                          judge_factory=functools.partial(OracleJudge, scenario=healthy))
    # Wald's approximations are conservative up to overshoot: about alpha, rarely more
    assert s.rollback_rate.value <= 3 * alpha
    assert s.promote_rate.value >= 0.9
    bad = Scenario("sprt-2x", rps=100, error_rate=0.02, error_multiplier=2.0)
    s = simulate_rollouts(p, bad, 200, seed=12,
                          judge_factory=functools.partial(OracleJudge, scenario=bad))
    assert 1 - s.rollback_rate.value <= 2.5 * beta
    # and it needs about Wald's expected number of events (the bound it attains): compare
    # mean times, the 30 s ticks adding up to one interval
    need = wald_events_needed(0.05, 2.0, 1.25, alpha, beta)
    events_per_s = 100 * 0.02 * (0.05 * 2 + 0.95)
    times = s.times()[s.outcomes() == "rolled_back"]
    assert 0.6 * need / events_per_s <= times.mean() <= 1.4 * need / events_per_s + 30
