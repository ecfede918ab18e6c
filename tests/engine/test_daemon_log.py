"""The daemon's log (issue 22, item 8): a real `canary run` walks a rollout to its end; at INFO
its log holds one engine line per decision that changed something and none of APScheduler's
per-job lines; `--log-format json` gives one JSON object per line; a bad `--log-level` is a
usage error naming the flag."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from analyzer.daemon.store import Store

from .conftest import CANARY, REPO, Daemon, daemon_env, policy_yaml, wait_for

# Promotes in about 30 s on simulated traffic (2000 rps, 1 s ticks, error rate checked only).
FAST = policy_yaml("logged", steps="[50, 100]", interval="1s", min_step="2s",
                   max_step="5m").replace(", {type: latency}]", "]")
assert "checks: [{type: error-rate, tolerance: 0.5}]" in FAST


def run_to_the_end(tmp_path: Path, *args: str) -> tuple[list[str], Store]:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "logged.yaml").write_text(FAST)
    url = f"sqlite:///{tmp_path / 'canary.db'}"
    log = tmp_path / "daemon.log"
    daemon = Daemon(["--policies", str(policies), "--db", url, "--no-api", "--sync-interval",
                     "0.5", *args], daemon_env(PYTHONPATH=str(REPO)), log)
    store = Store(url)
    try:
        wait_for(lambda: store.list_rollouts() and not store.latest("logged").active, 120,
                 "the rollout to finish")
        # idle seconds: the scheduler's sync job keeps running every 0.5 s (APScheduler logged
        # each run at INFO)
        time.sleep(3)
    finally:
        assert daemon.stop() == 0
    return log.read_text().splitlines(), store


def test_info_log_has_one_line_per_change_and_no_scheduler_chatter(tmp_path: Path) -> None:
    lines, store = run_to_the_end(tmp_path)
    rec = store.latest("logged")
    ticks = store.ticks(rec.id)
    # the wall clock seeds the simulated traffic: a rare draw rolls the healthy canary back,
    # which changes nothing below
    assert str(rec.phase) in ("succeeded", "rolled_back") and len(ticks) >= 3
    # APScheduler is held at WARNING: none of its per-job INFO lines. Its warnings stay (on a
    # loaded machine a 1 s tick can overrun: "skipped: maximum number of running instances").
    scheduler = [ln for ln in lines if " apscheduler." in ln]
    assert all(" WARNING " in ln or " ERROR " in ln for ln in scheduler), scheduler[:5]
    assert not [ln for ln in lines if "Running job" in ln or "executed successfully" in ln]
    lines = [ln for ln in lines if ln not in scheduler]
    engine = [ln for ln in lines if " analyzer.daemon.engine: " in ln]
    changes = [t for t in ticks if (t.phase_before, t.step_before, t.weight_before) !=
               (t.phase_after, t.step_after, t.weight_after)]
    holds = [t for t in ticks if t.action == "hold"]
    assert holds, "the rollout held at least once (those ticks are not logged at INFO)"
    assert [int(ln.split(" tick ", 1)[1].split(":", 1)[0]) for ln in engine] == [
        t.seq for t in changes]
    assert all(" INFO " in ln for ln in engine)
    assert "step 1 of 2, weight 50%: rollout started" in engine[0]
    assert len(lines) <= len(changes) + 6, lines  # + start, ownership, stop lines


def test_json_log_lines(tmp_path: Path) -> None:
    lines, store = run_to_the_end(tmp_path, "--log-format", "json", "--log-level", "DEBUG")
    records = [json.loads(ln) for ln in lines]  # every line is one JSON object
    assert all(set(r) >= {"time", "level", "logger", "message"} for r in records)
    ticks = store.ticks(store.latest("logged").id)
    logged = {r["message"].split(" tick ", 1)[1].split(":", 1)[0] for r in records
              if r["logger"] == "analyzer.daemon.engine"}
    assert logged == {str(t.seq) for t in ticks}  # at DEBUG, every tick, holds too
    assert any(r["logger"].startswith("apscheduler") for r in records)  # and the scheduler's


def test_bad_log_level_is_a_usage_error(tmp_path: Path) -> None:
    res = subprocess.run([*CANARY, "run", "--no-api", "--db", f"sqlite:///{tmp_path / 'x.db'}",
                          "--log-level", "LOUD"], capture_output=True, text=True, timeout=60,
                         env=daemon_env(PYTHONPATH=str(REPO)), check=False)
    assert res.returncode == 2
    assert "--log-level 'LOUD': expected one of DEBUG, INFO, WARNING, ERROR" in res.stderr
    assert "Traceback" not in res.stderr


def test_log_lines_go_to_the_current_stderr_after_a_redirect_closed() -> None:
    """configure() inside a redirected stderr (a CLI runner, `2>` in a wrapper) must not bind
    the log to that stream: after it is closed, log lines go where stderr now points, instead
    of a "--- Logging error ---" traceback on every line (seen in the full suite: a
    `canary run` test left the handler on a closed runner stream for every later test)."""
    import io
    import logging
    import sys

    from analyzer.daemon import logs

    root = logging.getLogger()
    saved = (list(root.handlers), root.level, sys.stderr)
    try:
        sys.stderr = first = io.StringIO()
        logs.configure("INFO")
        first.close()
        sys.stderr = second = io.StringIO()
        logging.getLogger("analyzer.test").warning("after the redirect")
        assert "after the redirect" in second.getvalue()
        assert "Logging error" not in second.getvalue()
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        sys.stderr = saved[2]
