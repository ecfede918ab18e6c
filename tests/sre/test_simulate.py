"""`canary simulate` on the reference policies (small N), grids, and the tuning helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from analyzer.cli.app import app
from analyzer.offline.tuning import (
    apply_settings,
    build_scenarios,
    parse_grid,
    parse_regression,
    simulation_policy,
)
from analyzer.policy import load_policy
from tests.sre.conftest import REPO

runner = CliRunner()
POLICIES = sorted((REPO / "policies").glob("*.yaml"))
LOCAL = str(REPO / "policies" / "local-simulated.yaml")


def simulate(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, ["simulate", *args], env={"COLUMNS": "200"})
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.stdout, res.stderr


def test_every_reference_policy_simulates() -> None:
    assert len(POLICIES) >= 10
    detected = false = 0
    for path in POLICIES:
        code, out, err = simulate(str(path), "--rps", "3000", "--base-error-rate", "0.01",
                                  "--regression", "error-rate=3x", "--runs", "4", "--json")
        assert code == 0, (path, err)
        doc = json.loads(out)
        healthy, reg = doc["scenarios"]
        assert healthy["regression"] is False and reg["regression"] is True
        assert healthy["detection_rate"] is None and reg["false_rollback_rate"] is None
        for s in (healthy, reg):
            rates = [s[k]["value"] for k in ("promote_rate", "inconclusive_rate")]
            rb = (s["false_rollback_rate"] or s["detection_rate"])["value"]
            assert sum(rates) + rb == pytest.approx(1.0)
            assert s["runs"] == 4
        detected += reg["detection_rate"]["value"] * 4
        false += healthy["false_rollback_rate"]["value"] * 4
        if load_policy(path).spec.strategy.type != "canary":
            assert doc["notes"] and "simulated as one analysis step" in doc["notes"][0]
    assert detected > false  # a 3x regression is rolled back more often than a healthy canary


def test_table_and_reproducibility() -> None:
    args = (LOCAL, "--rps", "3000", "--runs", "3", "--seed", "5", "--regression",
            "error-rate=2x,p99=+50%", "--regression", "p50=+40%")
    code, out, _ = simulate(*args)
    assert code == 0
    for text in ("no regression", "error-rate=2x,p99=+50%", "p50=+40%", "false", "detected"):
        assert text in out
    a = json.loads(simulate(*args, "--json")[1])
    b = json.loads(simulate(*args, "--json")[1])
    assert a == b and len(a["scenarios"]) == 3
    c = json.loads(simulate(*args[:-4], "--seed", "6", "--json")[1])
    assert c["scenarios"][0] != a["scenarios"][0]  # another seed, other draws


def test_grid_prints_the_trade_off() -> None:
    code, out, err = simulate(LOCAL, "--rps", "3000", "--runs", "3", "--grid",
                              "alpha=0.01,0.1", "tolerance=0.2,0.5", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert [r["settings"] for r in doc["rows"]] == [
        {"alpha": 0.01, "tolerance": 0.2}, {"alpha": 0.01, "tolerance": 0.5},
        {"alpha": 0.1, "tolerance": 0.2}, {"alpha": 0.1, "tolerance": 0.5}]
    code, out, _ = simulate(LOCAL, "--rps", "3000", "--runs", "2", "--grid", "alpha=0.01,0.1")
    assert code == 0 and "trade-off" in out and "fastest" in out


@pytest.mark.parametrize("args, needle", [
    (["policies/istio-canary.yaml", "--runs", "2"], "--rps"),
    ([LOCAL, "--regression", "error-rate=double"], "not a factor"),
    ([LOCAL, "--regression", "p95=+10%"], "KEY=FACTOR"),
    ([LOCAL, "--grid", "speed=1,2"], "grid key 'speed' unknown"),
    ([LOCAL, "alpha=0.1"], "grid axes follow --grid"),
    ([LOCAL, "--grid", "alpha=2"], "alpha"),
])
def test_usage_errors(args: list[str], needle: str) -> None:
    args = [str(REPO / a) if a.startswith("policies/") else a for a in args]
    code, _out, err = simulate(*args)
    assert code == 2 and needle in err


def test_tuning_helpers() -> None:
    r = parse_regression("error-rate=1.5x, p99=+30%")
    assert (r.error_multiplier, r.median_factor, r.p99_factor) == (1.5, 1.0, pytest.approx(1.3))
    assert parse_regression("latency=-10%").median_factor == pytest.approx(0.9)
    assert parse_grid(["alpha=0.01,0.05", "minStepDuration=1m,2m"]) == {
        "alpha": [0.01, 0.05], "minStepDuration": ["1m", "2m"]}
    policy = load_policy(Path(LOCAL))
    tuned = apply_settings(policy, {"alpha": 0.2, "tolerance": 0.7, "minStepDuration": "1m"})
    assert tuned.spec.decision.alpha == 0.2
    assert tuned.spec.analysis.minStepDuration.total_seconds() == 60
    assert {c.tolerance for c in tuned.spec.checks} == {0.7}
    assert policy.spec.decision.alpha != 0.2  # the original is untouched
    with pytest.raises(ValueError, match="no check named"):
        apply_settings(policy, {"nope.tolerance": 0.1})
    scen = build_scenarios(policy, 40, 0.01, [r])
    assert [s.is_regression for s in scen] == [False, True]
    assert scen[1].canary_latency is not None and scen[1].error_multiplier == 1.5
    mirror, note = simulation_policy(load_policy(REPO / "policies" / "istio-mirror.yaml"))
    assert mirror.spec.strategy.type == "canary" and note
    same, none = simulation_policy(policy)
    assert same is policy and none is None
