"""The rollout report: plots exist, every tick is listed, secrets are not printed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from analyzer.daemon.engine import run_rollout
from analyzer.daemon.series import histogram_quantile as _quantile
from analyzer.offline.report import write_report
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
