"""`canary export`, `canary backtest` and `canary report` on rollouts recorded by the engine,
and a backtest against a real Prometheus backfilled with the same traffic."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from analyzer.cli.app import app
from analyzer.demo.local_prometheus import PrometheusServer
from analyzer.offline.backtest import backtest_rollout
from analyzer.offline.export import recorded_intervals, resolve_rollout
from analyzer.policy import load_policy
from analyzer.sources.replay import read_replay
from tests.sre.conftest import Recorded

runner = CliRunner()


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


def canary(*args: str) -> Run:
    """`canary ARGS` in process; an uncaught exception (a traceback for the user) fails."""
    res = runner.invoke(app, list(args))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return Run(res.exit_code, res.stdout, res.stderr)


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_export_round_trips_the_recorded_intervals(recorded: Recorded, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    res = canary("export", "web-regressed", "--db", recorded.url, "--out", str(out))
    assert res.returncode == 0, res.stderr
    every = read_replay(out)  # the replay reader accepts every line
    baseline = [ln for ln in every if ln.baseline]
    lines = [ln for ln in every if not ln.baseline]
    # first the stable's pre-rollout intervals the engine's judge started from (1m at 10s)
    assert len(baseline) == 6 and every[:6] == baseline
    assert all(ln.samples.canary is None and ln.samples.stable for ln in baseline)
    store = recorded.store()
    intervals = recorded_intervals(store, recorded.regressed_id)
    assert len(lines) == len(intervals) == len([t for t in store.ticks(recorded.regressed_id)
                                                if t.samples and t.t0])
    for ln, rec in zip(lines, intervals, strict=True):
        assert ln.samples.stable == rec.samples.stable
        assert ln.samples.canary == rec.samples.canary
        assert (ln.samples.t0, ln.samples.t1) == (rec.samples.t0, rec.samples.t1)
        assert ln.samples.canary_weight == rec.tick.weight_before
    # stdout and the id form give the same lines
    by_id = canary("export", str(recorded.regressed_id), "--db", recorded.url)
    assert by_id.returncode == 0 and by_id.stdout == out.read_text()
    assert resolve_rollout(store, "web-regressed#1").id == recorded.regressed_id


def test_replay_of_the_export_gives_the_engine_decisions(recorded: Recorded,
                                                         tmp_path: Path) -> None:
    """Same policy, same data: `canary replay` and the engine agree tick by tick."""
    out = tmp_path / "h.jsonl"
    assert canary("export", "web-healthy", "--db", recorded.url, "-o", str(out)).returncode == 0
    res = canary("replay", str(recorded.healthy_policy), str(out), "--json")
    assert res.returncode == 0, res.stderr
    rows = jsonl(res.stdout)
    final = rows.pop()
    engine = [r.tick.decision for r in recorded_intervals(recorded.store(), recorded.healthy_id)]
    assert [r["decision"] for r in rows] == engine
    assert final["outcome"] == "promoted"


def test_backtest_same_policy_reproduces_the_record(recorded: Recorded) -> None:
    store = recorded.store()
    for rid in (recorded.healthy_id, recorded.regressed_id):
        res = backtest_rollout(store, rid)
        assert res.differences == []
        assert res.outcome == {"succeeded": "promoted"}.get(res.then_outcome, res.then_outcome)
        assert all(t.then_decision is not None for t in res.ticks)


def test_backtest_other_policy_shows_where_it_differs(recorded: Recorded) -> None:
    store = recorded.store()
    lax = load_policy(recorded.lax_policy)
    res = backtest_rollout(store, recorded.regressed_id, lax)
    assert res.then_outcome == "rolled_back"
    assert res.differences
    last = res.ticks[-1]
    assert last.then_decision == "rollback" and last.decision != "rollback"
    # CLI: the table names the first difference
    out = canary("backtest", str(recorded.lax_policy), "--db", recorded.url,
                 "--rollout", "web-regressed")
    assert out.returncode == 0, out.stderr
    assert "differ" in out.stdout and "rolled_back" in out.stdout


def test_backtest_on_prometheus_equals_replay_of_the_export(
    recorded: Recorded, prom_recorded: PrometheusServer, tmp_path: Path,
) -> None:
    policy = str(recorded.prom_policy)
    exported = tmp_path / "x.jsonl"
    assert canary("export", "web-regressed", "--db", recorded.url, "-o",
                  str(exported)).returncode == 0
    replay = jsonl(canary("replay", policy, str(exported), "--json").stdout)
    replay_final = replay.pop()

    # Prometheus for the data, the store for the windows, weights and decisions then
    res = canary("backtest", policy, "--prometheus", prom_recorded.url, "--db", recorded.url,
                 "--rollout", "web-regressed", "--json")
    assert res.returncode == 0, res.stderr
    bt = jsonl(res.stdout)
    bt_final = bt.pop()
    n = len(replay)
    assert [t["decision"] for t in bt[:n]] == [t["decision"] for t in replay]
    assert all(t["decision"] is None for t in bt[n:])  # the policy's run ended there
    assert (bt_final["outcome"], bt_final["ticks"]) == (replay_final["outcome"],
                                                         replay_final["ticks"])
    store_counts = [(r.samples.canary.requests, r.samples.canary.errors,
                     r.samples.stable.requests, r.samples.stable.errors)
                    for r in recorded_intervals(recorded.store(), recorded.regressed_id)]
    prom_counts = [(t["canary_requests"], t["canary_errors"], t["stable_requests"],
                    t["stable_errors"]) for t in bt]
    assert prom_counts == store_counts  # exact integer counts back from Prometheus

    # Prometheus alone: the range of the recorded windows, weights from observed shares (and
    # the baseline read from Prometheus before the range, as the engine does)
    lines = [ln for ln in read_replay(exported) if not ln.baseline]
    start = lines[0].samples.t0.isoformat()
    end = lines[-1].samples.t1.isoformat()
    alone = canary("backtest", policy, "--prometheus", prom_recorded.url, "--start", start,
                   "--end", end, "--json")
    assert alone.returncode == 0, alone.stderr
    rows = jsonl(alone.stdout)
    final = rows.pop()
    assert len(rows) == len(lines) and final["then_outcome"] is None
    assert [(t["canary_requests"], t["canary_errors"]) for t in rows] == \
        [(c[0], c[1]) for c in store_counts]
    assert final["notes"]


def test_report_command(recorded: Recorded, tmp_path: Path) -> None:
    res = canary("report", "web-regressed", "--db", recorded.url, "--out", str(tmp_path / "r"))
    assert res.returncode == 0, res.stderr
    page = Path(res.stdout.strip()).read_text()
    for png in ("weight", "error-rate", "latency", "check-error-rate", "check-latency-p99",
                "check-threshold-error-rate"):
        assert (tmp_path / "r" / f"{png}.png").stat().st_size > 1000
        assert f"{png}.png" in page
    assert "SECRETTOKEN" not in page and "rolled_back" in page
    assert page.count("<tr>") == len(recorded.store().ticks(recorded.regressed_id)) + 1


def test_errors_name_the_problem(recorded: Recorded, tmp_path: Path) -> None:
    missing = canary("export", "1", "--db", f"sqlite:///{tmp_path / 'nope.db'}")
    assert missing.returncode == 1 and "nope.db not found" in missing.stderr
    unknown = canary("report", "no-such-rollout", "--db", recorded.url, "--out", str(tmp_path))
    assert unknown.returncode == 1 and "no-such-rollout" in unknown.stderr
    wrong = canary("backtest", str(recorded.healthy_policy), "--prometheus",
                   "http://127.0.0.1:9", "--start", "now-1h", "--end", "now")
    assert wrong.returncode == 1 and "source: prometheus" in wrong.stderr
    usage = canary("backtest", str(recorded.healthy_policy))
    assert usage.returncode == 2 and "--rollout" in usage.stderr
    for res in (missing, unknown, wrong, usage):
        assert "Traceback" not in res.stderr
