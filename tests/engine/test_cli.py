"""`canary start|status|promote|abort|pause|resume|history` against a SQLite file."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from typer.testing import CliRunner

from analyzer.cli.app import app
from analyzer.core.rollout import Phase
from analyzer.daemon.engine import Engine
from analyzer.daemon.store import Store

from .conftest import T0, policy_yaml

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args))


def test_start_status_commands_history(tmp_path: Path):
    pfile = tmp_path / "p.yaml"
    pfile.write_text(policy_yaml("checkout"))
    db = f"sqlite:///{tmp_path / 'c.db'}"
    r = cli("start", str(pfile), "--canary-version", "v7", "--db", db)
    assert r.exit_code == 0, r.output
    assert "v1 -> v7" in r.output
    again = cli("start", str(pfile), "--canary-version", "v7", "--db", db)
    assert again.exit_code == 0  # a retried pipeline step
    other = cli("start", str(pfile), "--canary-version", "v8", "--db", db)
    assert other.exit_code == 1 and "abort it first" in other.output

    store = Store(db)
    engine = Engine(store)
    rec = store.latest("checkout")
    for k in range(3):
        engine.tick(rec.id, T0 + k * store.latest("checkout").load_policy().spec.analysis.interval)

    r = cli("status", "--db", db, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data[0]["name"] == "checkout" and data[0]["canary_version"] == "v7"
    r = cli("status", "checkout", "--db", db)
    assert r.exit_code == 0 and "progressing" in r.output

    r = cli("pause", "checkout", "--db", db)
    assert r.exit_code == 0 and "queued" in r.output
    engine.tick(rec.id, T0 + timedelta(seconds=15))
    assert store.latest("checkout").phase is Phase.PAUSED
    assert cli("resume", "checkout", "--db", db).exit_code == 0
    assert cli("abort", "checkout", "--db", db).exit_code == 0
    for k in (20, 25):
        engine.tick(rec.id, T0 + timedelta(seconds=k))
    assert store.latest("checkout").phase is Phase.ROLLED_BACK

    r = cli("history", "checkout", "--db", db, "--json")
    assert r.exit_code == 0, r.output
    hist = json.loads(r.output)
    assert [t["seq"] for t in hist["ticks"]] == list(range(1, len(hist["ticks"]) + 1))
    assert [t["command"] for t in hist["ticks"] if t["command"]] == ["pause", "resume", "abort"]
    r = cli("history", "checkout", "--db", db)
    assert r.exit_code == 0 and "rolled_back" in r.output

    r = cli("promote", "checkout", "--db", db)
    assert r.exit_code == 1 and "rolled_back" in r.output and "Traceback" not in r.output


def test_errors_name_the_problem(tmp_path: Path):
    db = f"sqlite:///{tmp_path / 'c.db'}"
    r = cli("status", "ghost", "--db", db)
    assert r.exit_code == 1 and "ghost" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Nope\n")
    r = cli("start", str(bad), "--db", db)
    assert r.exit_code == 1 and "bad.yaml" in r.output
    r = cli("status", "--db", "mysql://x@y/z")
    assert r.exit_code == 1 and "only sqlite and postgresql" in r.output
    r = cli("run", "--db", db, "--listen", "nonsense")
    assert r.exit_code == 2 and "HOST:PORT" in r.output
    r = cli("run", "--db", db, "--link", "Grafana=https://g.example/d/x?r={rollout}")
    assert r.exit_code == 2 and "unknown placeholder {rollout}" in r.output and "{name}" in r.output
