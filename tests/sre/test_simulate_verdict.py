"""`canary simulate` says what its numbers mean (issue 22, item 6): a verdict per scenario, and
when the policy does not decide at this traffic, what would help, with the power estimate's
numbers, checked by simulating the suggestion."""

from __future__ import annotations

import json
import re

from analyzer.offline import tuning
from analyzer.offline.montecarlo import simulate_rollouts
from analyzer.offline.verdict import SAFETY, simulation_verdict
from analyzer.policy import load_policy
from tests.sre.test_simulate import LOCAL, simulate


def verdict_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("verdict: ")]


def test_a_policy_that_never_promotes_says_so_and_what_would_help() -> None:
    code, out, _ = simulate(LOCAL, "--rps", "5", "--base-error-rate", "0.005", "--runs", "8")
    assert code == 0, out
    healthy, regression = verdict_lines(out)
    assert healthy.startswith("verdict: no regression: this policy never promotes a healthy "
                              "canary at this traffic (0 of 8 runs; 100% undecided")
    # the binding check, its tolerance as the policy writes it, and Wald's numbers
    assert "first step (10%: 0.5 canary rps)" in healthy
    assert "check 'error-rate' (1 + tolerance 0.25 = 1.25, stable rate 0.5%)" in healthy
    assert re.search(r"needs about 14\.\dh to show the canary within tolerance", healthy)
    assert "maxStepDuration 30m" in healthy
    assert regression.startswith("verdict: error-rate=2x: never caught in 8 runs")
    helps = out.split(healthy, 1)[1].split("verdict: ", 1)[0]
    assert f"aims at {SAFETY:g}x Wald's bound" in helps
    assert "no first step is enough at this traffic: the quickest, 48%" in helps
    assert re.search(r"check 'error-rate' tolerance \d+\.\d+ \(1 \+ tolerance", helps)
    assert re.search(r"maxStepDuration \d+\.\dh", helps)
    assert re.search(r"or about \d+ rps in all \(now 5\)", helps)


def test_the_suggested_step_duration_promotes_when_simulated() -> None:
    """At 100 rps the local policy promotes a healthy canary in well under 90% of runs; the
    maxStepDuration the verdict suggests makes it promote in most."""
    args = (LOCAL, "--rps", "100", "--base-error-rate", "0.01", "--runs", "20", "--seed", "4")
    doc = json.loads(simulate(*args, "--json")[1])
    healthy = doc["verdicts"][0]
    assert healthy["scenario"] == "no regression" and healthy["ok"] is False
    before = doc["scenarios"][0]["promote_rate"]["value"]
    assert before < 0.7
    step = next(s for s in healthy["suggestions"]
                if s["setting"] == "analysis.maxStepDuration")
    assert step["wald_seconds"] * SAFETY <= 3600 * 24
    grid = json.loads(simulate(*args, "--grid", f"maxStepDuration={step['value']}",
                               "--json")[1])
    after = grid["rows"][0]["scenarios"][0]["promote_rate"]["value"]
    assert after >= 0.8 > before
    # and the regression is still caught
    assert grid["rows"][0]["scenarios"][1]["detection_rate"]["value"] >= 0.9


def test_a_policy_that_decides_gets_a_plain_verdict_without_suggestions() -> None:
    code, out, _ = simulate(LOCAL, "--runs", "10")  # 2000 rps from the policy's block
    assert code == 0
    healthy, regression = verdict_lines(out)
    assert re.fullmatch(r"verdict: no regression: a healthy canary is promoted in 100% of 10 "
                        r"runs, median \d+m", healthy)
    assert re.fullmatch(r"verdict: error-rate=2x: rolled back in 100% of 10 runs, "
                        r"median \d+s", regression)
    assert "what would help" not in out


def test_a_change_inside_the_tolerance_is_not_called_a_miss() -> None:
    policy = load_policy(LOCAL)
    _, small = tuning.build_scenarios(policy, 2000, 0.01,
                                      [tuning.parse_regression("error-rate=1.2x")])
    v = simulation_verdict(policy, simulate_rollouts(policy, small, 4, 0))
    assert not v.ok and not v.suggestions
    assert "within every check's tolerance (error-rate ratio 1.2 <= 1 + tolerance 0.25 = " \
        "1.25, latency ratio 1 <= 1 + tolerance 0.25 = 1.25)" in v.headline
    assert "not meant to roll it back" in v.headline


def test_suggestions_only_ever_ask_for_more() -> None:
    """A suggestion is a change in the helpful direction: a larger first step, a longer step,
    more traffic, a wider tolerance (never a value at or below the policy's own)."""
    policy = load_policy(LOCAL)
    for rps in (20.0, 60.0, 150.0):
        healthy, reg = tuning.build_scenarios(policy, rps, 0.01,
                                              [tuning.parse_regression("error-rate=2x")])
        for scenario in (healthy, reg):
            v = simulation_verdict(policy, simulate_rollouts(policy, scenario, 3, 1))
            for s in v.suggestions:
                if s.setting == "analysis.maxStepDuration":
                    assert s.seconds is not None and s.seconds * SAFETY > 1800
                elif s.setting == "traffic":
                    assert float(s.value.split()[0]) > rps
                elif s.setting == "strategy.steps" and s.value:
                    assert json.loads(s.value)[0] > 10
                elif s.setting == "checks.tolerance":
                    assert all(float(kv.split("=")[1]) > 0.25 for kv in s.value.split(", "))
