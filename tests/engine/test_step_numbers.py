"""Step numbers an SRE reads agree everywhere (issue 22, item 1): the judge's sentences in the
history ("hold at 25% (step 2)"), the API's `step` (the 0-based index into `steps`), `canary
status` ("2 of 4") and the dashboard ("step 2 of 4"), tick by tick through pause, resume and a
manual promote sent through the HTTP API."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from analyzer.daemon.api import ApiServer
from analyzer.daemon.engine import Engine
from analyzer.daemon.store import Store
from analyzer.policy import parse_policy

from .conftest import CANARY, T0, policy_yaml

TOKEN = "step-numbers-token"
INTERVAL = timedelta(seconds=5)
STEP_IN_SENTENCE = re.compile(r" at (\d+)% \(step (\d+)\)")


def post(url: str) -> int:
    req = urllib.request.Request(url, method="POST", data=b"")
    req.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Store, Engine, ApiServer, str]]:
    url = f"sqlite:///{tmp_path / 'canary.db'}"
    store = Store(url)
    engine = Engine(store)
    server = ApiServer(store, engine.metrics, token=TOKEN, port=0)
    server.start()
    yield store, engine, server, url
    server.stop()
    store.dispose()


def drive(store: Store, engine: Engine, server: ApiServer, policy_text: str,
          commands: dict[int, str], ticks: int) -> list[tuple[Any, dict[str, Any]]]:
    """Tick the rollout `ticks` times on a simulated clock, POSTing `commands[k]` through the
    API before tick k; after every tick, the tick row and what the API says about the
    rollout."""
    policy = parse_policy(policy_text)
    rec = store.create_rollout(policy, T0)
    seen = []
    for k in range(1, ticks + 1):
        if k in commands:
            assert post(f"{server.url}/rollouts/{policy.name}/{commands[k]}") == 202
        out = engine.tick(rec.id, T0 + k * INTERVAL)
        api = get(f"{server.url}/rollouts/{policy.name}")
        if out.recorded:
            row = store.ticks(rec.id, since_seq=out.seq - 1)[0]
            seen.append((row, api))
    return seen


def check_step_numbers(seen: list[tuple[Any, dict[str, Any]]]) -> int:
    """Every judge sentence names the step the API reports (index + 1) at its weight; returns
    how many sentences were checked."""
    checked = 0
    for row, api in seen:
        assert (row.step_after, row.seq) == (api["step"], api["tick_seq"])
        m = STEP_IN_SENTENCE.search(row.reason) if row.decision else None
        if m is None:
            continue
        weight, number = int(m.group(1)), int(m.group(2))
        assert number == row.step_before + 1, (
            f"tick {row.seq}: the sentence says step {number}, the rollout was at step "
            f"{row.step_before + 1} of {len(api['steps'])} (API step {row.step_before}): "
            f"{row.reason}")
        assert api["steps"][row.step_before] == f"{weight}%", (row.seq, row.reason)
        checked += 1
    return checked


def test_pause_resume_promote_through_the_api_keeps_one_step_number(served) -> None:
    store, engine, server, url = served
    # minStepDuration of 5 minutes: the judge holds at every step, only the promote moves it
    text = policy_yaml("web", steps="[10, 25, 50, 100]", min_step="5m", max_step="30m")
    seen = drive(store, engine, server, text,
                 {3: "pause", 5: "resume", 7: "promote", 10: "pause", 11: "resume"}, ticks=14)
    actions = [(row.action, row.command) for row, _ in seen]
    assert ("resume", "resume") in actions and ("promote", "promote") in actions
    assert check_step_numbers(seen) >= 6
    last_row, last_api = seen[-1]
    assert last_api["step"] == 1 and "(step 2)" in last_row.reason

    # the CLI says the same, off a terminal: `canary status` STEP "2 of 4", history sentences
    status = subprocess.run([*CANARY, "status", "--db", url], capture_output=True, text=True,
                            timeout=60, check=True).stdout.splitlines()
    header, row = status[0].split("\t"), status[1].split("\t")
    assert row[header.index("STEP")] == "2 of 4"
    detail = subprocess.run([*CANARY, "status", "web", "--db", url], capture_output=True,
                            text=True, timeout=60, check=True).stdout
    assert "step:     2 of 4 at weight 25%" in detail
    # through the HTTP API (`--server`) too, with the whole reason
    remote = subprocess.run([*CANARY, "status", "--server", server.url], capture_output=True,
                            text=True, timeout=60, check=True).stdout.splitlines()
    header, row = remote[0].split("\t"), remote[1].split("\t")
    assert row[header.index("STEP")] == "2 of 4"
    assert row[header.index("REASON")] == store.latest("web").state.reason


def test_resume_after_the_judge_paused_at_max_step_duration_restarts_its_clock(served) -> None:
    """Resuming is not a new step, but maxStepDuration counts from the resume: the rollout
    does not pause again on the next tick."""
    store, engine, server, _ = served
    # 10 rps: nothing is decided within 20 s; onInconclusive: pause
    text = policy_yaml("slow", steps="[10, 50, 100]", rps=10, min_step="10s", max_step="20s",
                       extra="")
    text = text.replace("decision: {alpha: 0.05, minSamples: 100}",
                        "decision: {alpha: 0.05, minSamples: 100, onInconclusive: pause}")
    seen = drive(store, engine, server, text, {7: "resume"}, ticks=9)
    kinds = [(row.seq, row.action, row.command) for row, _ in seen]
    paused = next(i for i, (_, a, _c) in enumerate(kinds) if a == "pause")
    assert "inconclusive after" in seen[paused][0].reason
    resumed = next(i for i, (_, a, c) in enumerate(kinds) if c == "resume")
    after = [row for row, _ in seen[resumed + 1:]]
    assert after and all(r.action == "hold" for r in after), [r.reason for r in after]
    assert all("(step 1)" in r.reason for r in after)


def test_step_numbers_count_pause_steps_as_the_api_does(served) -> None:
    """steps [10, {pause: 5s}, 50, 100]: 50% is step 3 of 4 for the API and the dashboard."""
    store, engine, server, _ = served
    text = policy_yaml("paused", steps="[10, {pause: {duration: 5s}}, 50, 100]",
                       min_step="10s", max_step="30m")
    seen = drive(store, engine, server, text, {}, ticks=30)
    assert any(row.step_before == 2 and row.decision for row, _ in seen)
    check_step_numbers(seen)
