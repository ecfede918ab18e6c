"""The rollout report: plots exist, every tick is listed, secrets are not printed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from analyzer.daemon.engine import run_rollout
from analyzer.daemon.series import histogram_quantile as _quantile
from analyzer.daemon.series import rollout_series
from analyzer.offline.report import rollout_figures, write_report
from analyzer.policy import parse_policy

POLICY = """\
apiVersion: canary-analyzer.io/v1alpha1
kind: RolloutPolicy
metadata: {name: report-test}
spec:
  target: {service: web, stable: v1, canary: v2}
  router: {provider: dry-run}
  strategy: {steps: [20, 100]}
  analysis: {interval: 10s, minStepDuration: 20s}
  metrics:
    source: simulate
    rps: 3000
    seed: 3
    canary: {errorRate: 0.08}
  checks: [{type: error-rate}, {type: latency}]
  notifications:
    - url: https://hooks.slack.example/services/T0/B0/SECRETTOKEN
"""


def test_report_of_a_rolled_back_rollout(tmp_path: Path) -> None:
    run = run_rollout(parse_policy(POLICY), start=datetime(2026, 1, 1, tzinfo=UTC),
                      max_ticks=100)
    assert run.phase == "rolled_back"
    rid = run.store.list_rollouts()[0].id
    path = write_report(run.store, rid, tmp_path / "r")
    page = path.read_text()
    for png in ("weight.png", "error-rate.png", "latency.png", "check-error-rate.png"):
        assert (tmp_path / "r" / png).stat().st_size > 1000
        assert png in page
    assert "rolled_back" in page and "rollback" in page
    assert "SECRETTOKEN" not in page
    assert page.count("<tr>") == len(run.store.ticks(rid)) + 1


def test_interpolated_quantile() -> None:
    hist = {"le": [0.1, 0.2, "+Inf"], "counts": [50, 100, 100]}
    assert abs(_quantile(hist, 0.5) - 0.1) < 1e-9
    assert abs(_quantile(hist, 0.75) - 0.15) < 1e-9
    assert _quantile({"le": ["+Inf"], "counts": [0]}, 0.5) is None


def test_sample_ratio_chart_says_what_it_shows(tmp_path: Path) -> None:
    """Issue 22, item 9: the sample-ratio check's estimate is the canary's share of requests
    in percent: its axis says so, the expected share (the router's weight) is drawn beside it,
    and its evidence is labelled as the mismatch e-value (not a regression e-value)."""
    policy = parse_policy(POLICY.replace("errorRate: 0.08", "errorRate: 0.01"))
    run = run_rollout(policy, start=datetime(2026, 1, 1, tzinfo=UTC), max_ticks=30)
    ticks = run.store.ticks(run.rollout_id)
    figures = {stem: fig for _title, stem, fig in rollout_figures(rollout_series(ticks))}
    estimate, evidence = figures["check-sample-ratio"].axes
    assert estimate.get_ylabel() == "canary share of requests (%)"
    lines = {line.get_label(): line for line in estimate.get_lines()}
    expected = lines["expected: the router's canary weight"]
    weights = [t.samples["canary_weight"] for t in ticks
               if any(v["name"] == "sample-ratio" for v in t.verdicts)]
    assert list(expected.get_ydata()) == weights and set(weights) == {20.0}
    legend = [t.get_text() for t in evidence.get_legend().get_texts()]
    assert "sample-ratio mismatch e-value" in legend and "regression e-value" not in legend
    # the rate-ratio checks keep their labels
    error_rate, error_evidence = figures["check-error-rate"].axes
    assert error_rate.get_ylabel() == "canary / stable"
    # the tolerance as the policy writes it (the default 0.25), and the ratio it means
    assert "1 + tolerance 0.25 = 1.25" in [ln.get_label() for ln in error_rate.get_lines()]
    assert "regression e-value" in [t.get_text() for t in error_evidence.get_legend().get_texts()]
