"""The pure state machine: plans per strategy, transitions, commands, router failures."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from analyzer.core.rollout import (
    ROUTER_FAILURE_LIMIT,
    STABLE_ONLY,
    Command,
    Phase,
    RolloutMachine,
    RolloutPlan,
    RolloutState,
    Traffic,
)
from analyzer.core.types import Action, Decision

from .conftest import T0, make_policy

PROMOTE = Decision(Action.PROMOTE, "all good")
HOLD = Decision(Action.HOLD, "not yet")
ROLLBACK = Decision(Action.ROLLBACK, "error-rate ratio 3 exceeds 1.5")
PAUSE = Decision(Action.PAUSE, "inconclusive at max step duration")
S = timedelta(seconds=5)


def test_canary_plan_appends_final_100_and_keeps_pauses():
    p = make_policy(steps="[10, {pause: {}}, 40]")
    plan = RolloutPlan.from_policy(p)
    assert [s.kind for s in plan.steps] == ["weight", "pause", "weight", "weight"]
    assert [s.traffic.weight for s in plan.steps if s.kind == "weight"] == [10, 40, 100]
    assert [s.final for s in plan.steps] == [False, False, False, True]


def test_canary_walks_every_step_then_promotes_and_succeeds():
    m = RolloutMachine.for_policy(make_policy(steps="[20, 50, 100]"))
    state = RolloutState()
    t = m.on_time(state, T0)
    assert t.action == "start" and t.after.phase is Phase.PROGRESSING
    assert t.traffic == Traffic(20) and t.start_step and t.gate is not None
    state = t.after
    weights = [state.weight]
    for _ in range(2):
        t = m.on_decision(state, HOLD, T0)
        assert t.after == replace(state, reason=HOLD.reason)
        t = m.on_decision(state, PROMOTE, T0 + S)
        state = t.after
        weights.append(state.weight)
    assert weights == [20, 50, 100]
    assert state.phase is Phase.PROMOTING and not m.needs_analysis(state)
    t = m.on_time(state, T0 + 2 * S)
    assert t.after.phase is Phase.SUCCEEDED and t.after.weight == 100


def test_rollback_resets_to_stable_first():
    m = RolloutMachine.for_policy(make_policy())
    state = m.on_time(RolloutState(), T0).after
    t = m.on_decision(state, ROLLBACK, T0 + S)
    assert t.reset and t.traffic == STABLE_ONLY
    assert t.after.phase is Phase.ROLLED_BACK and t.after.weight == 0
    assert t.gate is None  # a rollback is never held by a gate
    assert "exceeds" in t.reason


@pytest.mark.parametrize("strategy,analysis,final", [
    ("type: ab, match: {header: {name: x-canary, value: '1'}}",
     Traffic(0, header_route={"header": "x-canary", "value": "1"}), Traffic(100)),
    ("type: ab, match: {cookie: {name: canary}}",
     Traffic(0, header_route={"cookie": "canary"}), Traffic(100)),
    ("type: blue-green, mirrorPercent: 20", Traffic(0, mirror_percent=20), Traffic(100)),
    ("type: blue-green", Traffic(0), Traffic(100)),
    ("type: mirror, mirrorPercent: 100", Traffic(0, mirror_percent=100), STABLE_ONLY),
])
def test_strategies_analysis_traffic_and_promotion(strategy, analysis, final):
    m = RolloutMachine.for_policy(make_policy(strategy=strategy))
    state = m.on_time(RolloutState(), T0).after
    assert state.traffic == analysis and m.needs_analysis(state)
    t = m.on_decision(state, PROMOTE, T0 + S)
    assert t.after.phase is Phase.PROMOTING and t.after.traffic == final
    assert m.on_time(t.after, T0 + 2 * S).after.phase is Phase.SUCCEEDED


def test_pause_step_without_duration_waits_for_resume():
    m = RolloutMachine.for_policy(make_policy(steps="[20, {pause: {}}, 50]"))
    state = m.on_time(RolloutState(), T0).after
    state = m.on_decision(state, PROMOTE, T0 + S).after
    assert state.phase is Phase.PAUSED and state.weight == 20 and state.pause_until is None
    for k in range(1, 50):  # time alone never ends it
        t = m.on_time(state, T0 + k * timedelta(hours=1))
        assert t.is_wait and t.after == state
    t = m.on_command(state, Command.RESUME, T0 + timedelta(hours=60), actor="alice")
    assert t.after.phase is Phase.PROGRESSING and t.after.weight == 50
    assert "alice" in t.reason and t.command is Command.RESUME


def test_timed_pause_step_ends_by_itself():
    m = RolloutMachine.for_policy(make_policy(steps="[20, {pause: {duration: 1m}}, 50]"))
    state = m.on_time(RolloutState(), T0).after
    state = m.on_decision(state, PROMOTE, T0).after
    assert state.pause_until == T0 + timedelta(minutes=1)
    assert m.on_time(state, T0 + timedelta(seconds=59)).is_wait
    t = m.on_time(state, T0 + timedelta(minutes=1))
    assert t.after.phase is Phase.PROGRESSING and t.after.weight == 50 and t.gate is not None


def test_judge_pause_then_resume_restarts_the_step_clock():
    m = RolloutMachine.for_policy(make_policy())
    state = m.on_time(RolloutState(), T0).after
    state = m.on_decision(state, PAUSE, T0 + S).after
    assert state.phase is Phase.PAUSED and not m.needs_analysis(state)
    later = T0 + timedelta(hours=2)
    t = m.on_command(state, Command.RESUME, later)
    assert t.after.phase is Phase.PROGRESSING and t.after.weight == 20
    # the same step goes on (the judge starts no new step: step numbers do not drift); only
    # its clock restarts
    assert t.after.step_started_at == later and t.restart_clock and not t.start_step
    assert t.after.step == state.step


def test_manual_commands():
    m = RolloutMachine.for_policy(make_policy())
    state = m.on_time(RolloutState(), T0).after
    paused = m.on_command(state, Command.PAUSE, T0 + S).after
    assert paused.phase is Phase.PAUSED and paused.weight == 20
    assert m.on_command(paused, Command.PAUSE, T0).action == "ignored"
    promoted = m.on_command(paused, Command.PROMOTE, T0 + S).after
    assert promoted.phase is Phase.PROGRESSING and promoted.weight == 50
    aborted = m.on_command(promoted, Command.ABORT, T0 + S)
    assert aborted.reset and aborted.after.phase is Phase.ROLLED_BACK
    assert m.on_command(aborted.after, Command.RESUME, T0).action == "ignored"
    assert m.on_command(state, Command.RESUME, T0).action == "ignored"


def test_gate_hold_keeps_the_state():
    m = RolloutMachine.for_policy(make_policy())
    state = m.on_time(RolloutState(), T0).after
    t = m.on_decision(state, PROMOTE, T0 + S)
    held = m.gate_held(t, "gate 'load' answered HTTP 503")
    assert held.after.phase is state.phase and held.after.traffic == state.traffic
    assert held.action == "gate-hold" and "503" in held.after.reason


def test_router_refusals_hold_then_roll_back():
    m = RolloutMachine.for_policy(make_policy())
    state = m.on_time(RolloutState(), T0).after
    for k in range(1, ROUTER_FAILURE_LIMIT):
        t = m.router_failed(m.on_decision(state, PROMOTE, T0), T0, "409 conflict")
        assert t.action == "router-hold" and t.after.weight == 20
        assert t.after.router_failures == k
        state = t.after
    t = m.router_failed(m.on_decision(state, PROMOTE, T0), T0, "409 conflict")
    assert t.reset and t.after.phase is Phase.ROLLED_BACK


def test_refused_rollback_stays_pending_then_fails():
    m = RolloutMachine.for_policy(make_policy())
    state = m.on_time(RolloutState(), T0).after
    t = m.router_failed(m.on_decision(state, ROLLBACK, T0), T0, "API down")
    assert t.after.rollback_pending and t.after.phase is Phase.PROGRESSING
    assert not m.needs_analysis(t.after)  # no analysis while traffic must come back
    state = t.after
    for _ in range(ROUTER_FAILURE_LIMIT - 2):
        retry = m.on_time(state, T0)
        assert retry.reset
        state = m.router_failed(retry, T0, "API down").after
    last = m.router_failed(m.on_time(state, T0), T0, "API down")
    assert last.after.phase is Phase.FAILED


def test_rollback_after_refused_steps_gets_its_own_retries():
    m = RolloutMachine.for_policy(make_policy())
    state = m.on_time(RolloutState(), T0).after
    for _ in range(ROUTER_FAILURE_LIMIT - 1):
        state = m.router_failed(m.on_decision(state, PROMOTE, T0), T0, "HTTP 500").after
    to_rollback = m.router_failed(m.on_decision(state, PROMOTE, T0), T0, "HTTP 500")
    assert to_rollback.reset  # the engine tries it at once; the API refuses again:
    t = m.router_failed(to_rollback, T0, "HTTP 500")
    assert t.action == "rollback-retry" and t.after.rollback_pending
    assert t.after.router_failures == 1 and t.after.phase is Phase.PROGRESSING
    state = t.after
    for k in range(2, ROUTER_FAILURE_LIMIT):
        state = m.router_failed(m.on_time(state, T0), T0, "HTTP 500").after
        assert state.rollback_pending and state.router_failures == k
    last = m.router_failed(m.on_time(state, T0), T0, "HTTP 500")
    assert last.after.phase is Phase.FAILED
    assert f"the router refused it {ROUTER_FAILURE_LIMIT} times in a row" in last.after.reason


def test_state_json_roundtrip():
    m = RolloutMachine.for_policy(make_policy(steps="[20, {pause: {duration: 1m}}, 50]"))
    state = m.on_time(RolloutState(), T0).after
    state = m.on_decision(state, PROMOTE, T0).after
    assert RolloutState.from_json(state.to_json()) == state


def test_rebase_places_a_running_step_in_a_changed_plan() -> None:
    """A changed spec applies from the next step: the running step keeps its traffic and is
    placed at the new plan's step of that weight (else the nearest analysis step)."""
    old = RolloutMachine.for_policy(make_policy(steps="[10, 20, 50, 100]"))
    new = RolloutMachine.for_policy(make_policy(steps="[20, 40, 100]"))
    at_20 = RolloutState(phase=Phase.PROGRESSING, step=1, traffic=Traffic(20))
    assert old.current_step(at_20).traffic.weight == 20
    assert new.rebase(at_20).step == 0
    assert new.plan.steps[new.rebase(at_20).step + 1].traffic.weight == 40
    at_50 = replace(at_20, step=2, traffic=Traffic(50))
    assert new.rebase(at_50).step == 1  # no 50 in the new plan: its last analysis step
    paused = replace(at_20, phase=Phase.PAUSED)
    assert new.rebase(paused) == paused
