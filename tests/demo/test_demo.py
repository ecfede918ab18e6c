"""`canary demo`: the shortened real demo (nginx + Prometheus), Ctrl-C/SIGTERM clean-up, and the
simulated fallback."""

from __future__ import annotations

import io
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

import analyzer.demo.run as demo
from analyzer.cli.app import app
from analyzer.core.rollout import Phase
from analyzer.daemon.store import Store
from analyzer.demo import scenario
from tests.demo.conftest import (
    demo_processes,
    start_demo,
    still_alive,
    stop_demo,
    workdir_of,
)


def _canary_shares(store: Store, rollout_id: int) -> dict[int, float]:
    """Per weight: the canary's share of the requests Prometheus counted in the analysed
    windows at that weight (what nginx really sent)."""
    n = defaultdict(lambda: [0, 0])
    for t in store.ticks(rollout_id):
        s = t.samples
        if not s or s.get("no_data_reason") or not s.get("stable") or not s.get("canary"):
            continue
        n[t.weight_before][0] += s["canary"]["requests"]
        n[t.weight_before][1] += s["canary"]["requests"] + s["stable"]["requests"]
    return {w: c / total for w, (c, total) in n.items() if total}


@pytest.mark.nginx
@pytest.mark.prometheus
@pytest.mark.slow
def test_short_demo_promotes_the_healthy_canary_and_rolls_back_the_regressed_one(
    real_stack: None, mark: str, tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    proc = start_demo(["--short", "--out", str(out)], mark, tmp_path / "stderr.log")
    try:
        stdout, _ = proc.communicate(timeout=170)
    finally:
        stop_demo(proc)
    stderr = (tmp_path / "stderr.log").read_text()
    assert proc.returncode == 0, f"demo failed:\n{stdout[-4000:]}\n{stderr[-3000:]}"
    assert "SIMULATED" not in stdout
    assert "real nginx + Prometheus" in stdout

    store = Store(f"sqlite:///{out / 'demo.db'}")
    try:
        healthy = store.latest("demo-healthy")
        regressed = store.latest("demo-regressed")
        assert healthy.phase is Phase.SUCCEEDED and healthy.state.weight == 100
        assert regressed.phase is Phase.ROLLED_BACK and regressed.state.weight == 0

        # The healthy canary walked every step of the short policy, in order.
        weights = [c.weight_after for c in store.weight_changes(healthy.id)]
        assert [w for w in weights if w] == scenario.SHORT_STEPS, weights
        promotes = [t for t in store.ticks(healthy.id) if t.decision == "promote"]
        assert len(promotes) == len(scenario.SHORT_STEPS) - 1

        # The regressed canary was rolled back by a regression verdict on real data.
        rollback = [t for t in store.ticks(regressed.id) if t.decision == "rollback"]
        assert len(rollback) == 1
        outcomes = {v["name"]: v["outcome"] for v in rollback[0].verdicts}
        assert "regression" in outcomes.values(), outcomes

        # nginx really split the traffic as the router said (Prometheus' counts, not ours).
        for rid in (healthy.id, regressed.id):
            for weight, share in _canary_shares(store, rid).items():
                assert abs(share - weight / 100) < 0.1, (weight, share)
    finally:
        store.dispose()

    # One report per rollout: an HTML page and its PNG plots.
    for name in ("demo-healthy", "demo-regressed"):
        report_dir = out / name
        assert any(report_dir.rglob("*.html")), f"no HTML report in {report_dir}: {stderr}"
        assert any(report_dir.rglob("*.png")), f"no PNG plot in {report_dir}"
    # Everything the demo started is gone (and its work dir).
    workdir = workdir_of(stdout)
    assert workdir is not None and not Path(workdir).exists()
    assert demo_processes(mark, workdir) == {}


@pytest.mark.nginx
@pytest.mark.prometheus
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_everything_the_demo_started(
    real_stack: None, mark: str, tmp_path: Path, sig: signal.Signals,
) -> None:
    proc = start_demo(["--short", "--out", str(tmp_path / "out")], mark,
                      tmp_path / "stderr.log")
    assert proc.stdout is not None
    try:
        seen = []
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("warm-up:") or time.monotonic() > deadline:
                break
        assert any(x.startswith("warm-up:") for x in seen), "".join(seen)
        workdir = workdir_of("".join(seen))
        assert workdir is not None
        # Mid-demo: the demo, 4 apps, Prometheus, 2 nginx masters and their workers.
        running = demo_processes(mark, workdir)
        assert len(running) >= 10, running
        proc.send_signal(sig)
        proc.wait(timeout=40)
    finally:
        stop_demo(proc)
    assert proc.returncode == 130
    assert "interrupted" in (tmp_path / "stderr.log").read_text() + proc.stdout.read()
    assert still_alive(running) == {}
    assert demo_processes(mark, workdir) == {}
    assert not Path(workdir).exists()


def simulated_demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Any, str]:
    """`run_demo` (--short) as if nginx were missing: its result and what it printed."""
    monkeypatch.setattr(demo, "missing_binaries", lambda: ["nginx"])
    buf = io.StringIO()
    result = demo.run_demo(
        scenario.DemoOptions(short=True, out_dir=tmp_path, speed=0, live=False),
        Console(file=buf, width=160),
    )
    return result, buf.getvalue()


def test_fallback_runs_the_same_policies_simulated_when_nginx_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    result, text = simulated_demo(monkeypatch, tmp_path)
    assert result.mode == "simulated"
    assert "nginx not installed" in (result.mode_reason or "")
    assert "SIMULATED" in text
    assert {r.name: r.phase for r in result.rollouts} == {
        "demo-healthy": Phase.SUCCEEDED, "demo-regressed": Phase.ROLLED_BACK}
    assert result.ok
    store = Store(result.db_url)
    try:
        for r in result.rollouts:
            policy = store.get(r.rollout_id).load_policy()
            # The same policy as written, only the source and the router swapped.
            assert policy.spec.router.provider == "dry-run"
            assert policy.spec.metrics.source == "simulate"
            assert policy.spec.strategy.steps == scenario.SHORT_STEPS
    finally:
        store.dispose()


def test_cli_fallback_flag_labels_the_run_and_exits_zero(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["demo", "--fallback-simulate", "--short", "--speed", "0",
                                   "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "SIMULATED" in res.output
    assert "demo-healthy" in res.output and "demo-regressed" in res.output
    assert (tmp_path / "demo.db").exists()


def test_cli_reports_a_broken_demo_policy_without_traceback(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    src = scenario.REPO_POLICIES
    healthy = (src / "demo-healthy.yaml").read_text()
    assert "steps: [25, 50, 75, 100]" in healthy
    (policies / "demo-healthy.yaml").write_text(
        healthy.replace("steps: [25, 50, 75, 100]", "steps: [50, 10]"))
    (policies / "demo-regressed.yaml").write_text((src / "demo-regressed.yaml").read_text())
    res = CliRunner().invoke(app, ["demo", "--fallback-simulate", "--speed", "0",
                                   "--policies", str(policies), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    assert "demo-healthy.yaml" in res.output and "spec.strategy" in res.output


def test_final_panels_show_the_whole_rollout_beside_the_last_windows(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """Issue 22, item 9: under "expected: promote" the last windows alone can show the canary
    worse than stable; each version's figures over every analysed window stand beside them,
    labelled, and equal the decision log's totals."""
    result, text = simulated_demo(monkeypatch, tmp_path)
    store = Store(result.db_url)
    try:
        for r in result.rollouts:
            panel = text[text.index(f"─ {r.name} "):]
            panel = panel[:panel.index("╰")]
            policy = store.get(r.rollout_id).load_policy()
            analysed = [t.samples for t in store.ticks(r.rollout_id)
                        if t.samples and t.samples.get("stable") and t.samples.get("canary")
                        and not t.samples.get("no_data_reason")]
            for role in ("stable", "canary"):
                version = getattr(policy.spec.target, role)
                rows = [ln for ln in panel.splitlines() if f"{version} ({role})" in ln]
                assert len(rows) == 1 and "last " in rows[0], panel
                whole = panel.splitlines()[panel.splitlines().index(rows[0]) + 1]
                requests = sum(s[role]["requests"] for s in analysed)
                errors = sum(s[role]["errors"] for s in analysed)
                assert "whole rollout (" in whole, panel
                assert f"{100 * errors / requests:.1f}%" in whole, (whole, errors, requests)
    finally:
        store.dispose()
