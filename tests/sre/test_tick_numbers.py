"""One tick numbering everywhere (issue 22, item 2): `canary history`'s TICK is the number that
`canary backtest`, `canary export` / `canary replay`, `canary report`, the API and the
dashboard's series use for the same tick; a manual promote is a difference in the backtest;
an undecided run never says "tick 0"."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from analyzer.cli.app import app
from analyzer.core.rollout import Command
from analyzer.daemon.api import ApiServer
from analyzer.daemon.engine import Engine
from analyzer.daemon.metrics import EngineMetrics
from analyzer.daemon.store import Store, TickRow
from analyzer.policy import load_policy
from tests.sre.conftest import (
    CHECKS_FULL,
    CHECKS_LAX,
    START,
    Recorded,
    make,
    sim_metrics,
    write_policy,
)

runner = CliRunner()
PROMOTE_AT = 4  # the tick at which a human promotes (the policy would still hold)


@dataclass(frozen=True)
class Manual:
    url: str
    policy: Path
    lax_policy: Path
    ticks: list[TickRow]

    def seqs(self, analysed_only: bool = False) -> list[int]:
        # an analysed tick has a window (the start tick's samples hold only the baseline the
        # new judge read)
        return [t.seq for t in self.ticks if t.t0 is not None or not analysed_only]


@pytest.fixture(scope="module")
def manual(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Manual]:
    """web-manual: held at 10% (minStepDuration 5m) until promoted by hand at tick 4; the
    canary regresses above 20% and is rolled back at 50%."""
    d = tmp_path_factory.mktemp("ticks")
    url = f"sqlite:///{d / 'canary.db'}"
    policy = make("web-manual", sim_metrics(0.03, "450ms"), CHECKS_FULL)
    doc = policy.model_dump(mode="json", exclude_none=True)
    doc["spec"]["analysis"]["minStepDuration"] = "5m"
    path = d / "manual.yaml"
    path.write_text(json.dumps(doc))
    policy = load_policy(path)
    store = Store(url)
    engine = Engine(store)
    rec = store.create_rollout(policy, START)
    now = START
    for k in range(1, 120):
        if k == PROMOTE_AT:
            store.add_command("web-manual", Command.PROMOTE, "cli (sre)", now)
        engine.tick(rec.id, now)
        if not store.get(rec.id).active:
            break
        now += policy.spec.analysis.interval
    ticks = store.ticks(rec.id)
    assert str(store.get(rec.id).phase) == "rolled_back", ticks[-1].reason
    store.dispose()
    lax = write_policy(d / "lax.yaml", make("web-manual", sim_metrics(0.03), CHECKS_LAX))
    yield Manual(url, path, lax, ticks)


def cli(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.stdout


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_the_engine_record_has_the_manual_promote(manual: Manual) -> None:
    promote = manual.ticks[PROMOTE_AT - 1]
    assert (promote.seq, promote.command, promote.action) == (PROMOTE_AT, "promote", "promote")
    assert not promote.samples and manual.ticks[-1].action == "rollback"


def test_backtest_uses_history_tick_numbers_and_shows_the_manual_promote(manual: Manual) -> None:
    rows = jsonl(cli("backtest", str(manual.policy), "--db", manual.url, "--rollout",
                     "web-manual", "--json"))
    final = rows.pop()
    history = {t.seq: t for t in manual.ticks}
    for r in rows:
        tick = history[r["tick"]]  # every row is the history's tick of that number
        assert r["t"] == (tick.t1 or tick.scheduled_at).isoformat().replace("+00:00", "Z")
    assert [r["tick"] for r in rows if r["command"] is None] == manual.seqs(analysed_only=True)
    promote = next(r for r in rows if r["command"] is not None)
    assert promote["tick"] == PROMOTE_AT and promote["differs"]
    assert (promote["then_decision"], promote["then_weight"]) == ("promote", 50)
    assert final["first_difference"] == PROMOTE_AT
    # the policy alone stays at 10%; whether it rolls back on the 50% data depends on the draw,
    # its outcome is named by the history's ticks either way
    analysed = manual.seqs(analysed_only=True)
    if final["outcome"] == "inconclusive":
        assert final["ticks"] is None
        assert final["summary"] == (f"inconclusive: no rollback or full promotion in "
                                    f"{len(analysed)} analysed tick(s) ({analysed[0]}-"
                                    f"{analysed[-1]})")
    else:
        assert final["ticks"] in analysed
        assert final["summary"].startswith(f"{final['outcome']} at tick {final['ticks']} "
                                           f"(analysed ticks {analysed[0]}-")

    text = cli("backtest", str(manual.policy), "--db", manual.url, "--rollout", "web-manual")
    assert f"first at tick {PROMOTE_AT}: promote by hand" in text


def test_an_undecided_backtest_names_its_ticks_not_tick_zero(manual: Manual) -> None:
    text = cli("backtest", str(manual.lax_policy), "--db", manual.url, "--rollout",
               "web-manual")
    analysed = manual.seqs(analysed_only=True)
    summary = next(line for line in text.splitlines() if line.startswith("this policy:"))
    assert "tick 0" not in text
    assert summary.startswith(f"this policy: inconclusive: no rollback or full promotion in "
                              f"{len(analysed)} analysed tick(s) ({analysed[0]}-"
                              f"{analysed[-1]})")


def test_export_and_replay_keep_the_history_tick_numbers(manual: Manual, tmp_path: Path) -> None:
    out = tmp_path / "m.jsonl"
    cli("export", "web-manual", "--db", manual.url, "-o", str(out))
    lines = [ln for ln in jsonl(out.read_text()) if not ln.get("baseline")]
    assert [ln["tick"] for ln in lines] == manual.seqs(analysed_only=True)
    rows = jsonl(cli("replay", str(manual.policy), str(out), "--json"))
    rows.pop()
    assert [r["tick"] for r in rows] == manual.seqs(analysed_only=True)


def test_decisive_tick_is_the_history_tick(recorded: Recorded, tmp_path: Path) -> None:
    """A rollout's own policy decides where the engine did: the backtest of the regressed
    rollout and the replay of the healthy one's export (error rate only, so no latency bound to
    pick differently) name the history's tick of the decision."""
    store = recorded.store()
    rollback = next(t for t in store.ticks(recorded.regressed_id) if t.action == "rollback")
    final = jsonl(cli("backtest", str(recorded.regressed_policy), "--db", recorded.url,
                      "--rollout", "web-regressed", "--json"))[-1]
    assert (final["outcome"], final["ticks"]) == ("rolled_back", rollback.seq)
    assert final["summary"].startswith(f"rolled_back at tick {rollback.seq} (analysed ticks ")
    promote = [t for t in store.ticks(recorded.healthy_id) if t.decision == "promote"][-1]
    out = tmp_path / "h.jsonl"
    cli("export", "web-healthy", "--db", recorded.url, "-o", str(out))
    final = jsonl(cli("replay", str(recorded.healthy_policy), str(out), "--json"))[-1]
    assert (final["outcome"], final["ticks"]) == ("promoted", promote.seq)
    text = cli("replay", str(recorded.healthy_policy), str(out))
    assert f"outcome: promoted at tick {promote.seq} (analysed ticks " in text


def test_report_api_and_dashboard_series_use_the_same_numbers(manual: Manual,
                                                              tmp_path: Path) -> None:
    cli("report", "web-manual", "--db", manual.url, "--out", str(tmp_path / "r"))
    page = (tmp_path / "r" / "index.html").read_text()
    last = manual.ticks[-1].seq
    assert f"at tick\n{last} (started" in page
    assert [int(x) for x in re.findall(r"<tr><td>(\d+)</td>", page)] == manual.seqs()

    store = Store(manual.url)
    server = ApiServer(store, EngineMetrics(), port=0)
    server.start()
    try:
        def get(path: str) -> Any:
            with urllib.request.urlopen(f"{server.url}{path}", timeout=10) as resp:
                return json.loads(resp.read())

        assert [t["seq"] for t in get("/rollouts/web-manual/ticks")["ticks"]] == manual.seqs()
        assert get("/rollouts/web-manual/series")["seq"] == manual.seqs()
        detail = get("/rollouts/web-manual")
        assert detail["tick_seq"] == last and detail["last_decision"]["tick"] == last
    finally:
        server.stop()
        store.dispose()


def test_interval_numbers_survive_a_gap(manual: Manual, tmp_path: Path) -> None:
    """A replay file without `tick` numbers its lines 1, 2, ...; with them, the numbers it
    carries (gaps where the engine had no data to analyse)."""
    out = tmp_path / "m.jsonl"
    cli("export", "web-manual", "--db", manual.url, "-o", str(out))
    lines = jsonl(out.read_text())
    bare = tmp_path / "bare.jsonl"
    bare.write_text("".join(json.dumps({k: v for k, v in ln.items() if k != "tick"}) + "\n"
                            for ln in lines))
    rows = jsonl(cli("replay", str(manual.policy), str(bare), "--json"))[:-1]
    assert [r["tick"] for r in rows] == list(range(1, len(rows) + 1))
    numbered = jsonl(cli("replay", str(manual.policy), str(out), "--json"))[:-1]
    assert numbered[PROMOTE_AT - 2]["tick"] == PROMOTE_AT + 1  # tick 4 had no data
