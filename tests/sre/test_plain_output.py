"""Output off a terminal (issue 22, item 5): every table command, run as a subprocess with its
stdout on a pipe and a narrow COLUMNS, prints full tab-separated lines: no header cut mid-word,
no reason cut mid-number, every cell whole."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from analyzer.offline.backtest import backtest_rollout
from analyzer.policy import load_policy
from tests.sre.conftest import REPO, Recorded

CANARY = str(Path(sys.executable).with_name("canary"))
NARROW = {**os.environ, "COLUMNS": "40", "PYTHONPATH": str(REPO)}
RATE = re.compile(r"^(-|\d+\.\d% ± \d+\.\d)$")
DURATION = re.compile(r"^(-|\d+(s|m\d\ds|h\d\dm)( ± \d+(s|m\d\ds|h\d\dm))?)$")


def piped(*args: str) -> list[str]:
    """`canary ARGS` with stdout to a pipe (not a terminal) and COLUMNS=40; its lines."""
    res = subprocess.run([CANARY, *args], capture_output=True, text=True, env=NARROW,
                         timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    assert "\x1b[" not in res.stdout  # no colour codes in a file
    return res.stdout.splitlines()


def table(lines: list[str], header: list[str]) -> list[dict[str, str]]:
    """The rows of the tab-separated table whose header line is `header`."""
    start = lines.index("\t".join(header))
    rows = []
    for line in lines[start + 1:]:
        cells = line.split("\t")
        if len(cells) == 1:
            break  # the lines after the table (summary, notes)
        assert len(cells) == len(header), line
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def test_simulate_to_a_file_prints_whole_headers_and_numbers() -> None:
    lines = piped("simulate", str(REPO / "policies" / "local-simulated.yaml"), "--runs", "4",
                  "--regression", "error-rate=2x", "--regression", "p99=+30%")
    assert lines[0].startswith("# local-simulated: 4 simulated rollouts per scenario")
    header = ["scenario", "false rollbacks", "detected", "rollback after (median)", "(p90)",
              "promoted after (median)", "undecided"]
    rows = table(lines, header)
    assert [r["scenario"] for r in rows] == ["no regression", "error-rate=2x", "p99=+30%"]
    for r in rows:
        for col in ("false rollbacks", "detected", "undecided"):
            assert RATE.match(r[col]), (col, r[col])
        for col in ("rollback after (median)", "(p90)", "promoted after (median)"):
            assert DURATION.match(r[col]), (col, r[col])
    assert any(line.startswith("alpha 0.01; ± is the Monte Carlo standard error") and
               line.endswith("times from the rollout's start.") for line in lines)


def test_simulate_grid_to_a_file(tmp_path: Path) -> None:
    lines = piped("simulate", str(REPO / "policies" / "local-simulated.yaml"), "--runs", "2",
                  "--grid", "alpha=0.01,0.05")
    rows = table(lines, ["alpha", "false rollbacks", "detected error-rate=2x",
                         "rollback after (median)", "promoted after (median)"])
    assert [r["alpha"] for r in rows] == ["0.01", "0.05"]
    assert any(line.startswith("fastest with false rollbacks <= 0.01") for line in lines)


def test_status_and_history_print_every_reason_whole(recorded: Recorded) -> None:
    store = recorded.store()
    lines = piped("status", "--db", recorded.url)
    header = ["NAME", "RUN", "CANARY", "PHASE", "STEP", "WEIGHT", "TICKS", "UPDATED", "REASON"]
    rows = {r["NAME"]: r for r in table(lines, header)}
    for name in ("web-regressed", "web-healthy"):
        rec = store.latest(name)
        assert rows[name]["REASON"] == rec.state.reason  # not cut (it was, at 160 characters)
        assert rows[name]["STEP"].endswith(" of 3")
    regressed = store.latest("web-regressed")
    assert len(regressed.state.reason) > 160  # long enough to have been cut before

    lines = piped("history", "web-regressed", "--db", recorded.url)
    rows = table(lines, ["TICK", "TIME", "PHASE", "WEIGHT", "ACTION", "REASON"])
    ticks = store.ticks(regressed.id)
    assert [int(r["TICK"]) for r in rows] == [t.seq for t in ticks]
    assert [r["REASON"] for r in rows] == [t.reason for t in ticks]


def test_backtest_and_replay_to_a_file(recorded: Recorded, tmp_path: Path) -> None:
    lines = piped("backtest", str(recorded.lax_policy), "--db", recorded.url,
                  "--rollout", "web-regressed")
    header = ["tick", "time", "data %", "canary req/err", "would", "then", "why (this policy)"]
    rows = table(lines, header)
    res = backtest_rollout(recorded.store(), recorded.regressed_id,
                           load_policy(recorded.lax_policy))
    assert [r["why (this policy)"] for r in rows] == [t.reason for t in res.ticks]
    assert [r["tick"].rstrip("*") for r in rows] == [str(t.tick) for t in res.ticks]
    assert f"this policy: {res.summary()}; then: rolled_back" in lines

    export = tmp_path / "r.jsonl"
    assert piped("export", "web-regressed", "--db", recorded.url, "-o", str(export)) == []
    lines = piped("replay", str(recorded.regressed_policy), str(export))
    rows = table(lines, ["tick", "time", "step", "weight", "data %", "decision", "reason"])
    store = recorded.store()
    decided = {t.seq: t for t in store.ticks(recorded.regressed_id) if t.decision}
    assert [int(r["tick"]) for r in rows] == sorted(decided)[:len(rows)]
    for r in rows:  # named by the engine's tick numbers: the same window at the same number
        tick = decided[int(r["tick"])]
        assert tick.t1 is not None and r["time"] == tick.t1.strftime("%H:%M:%S")
        assert r["reason"].startswith(("hold at", "promote at", "rollback at"))
