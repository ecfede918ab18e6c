"""The rollout state machine: steps, strategies, gates and manual commands. Pure logic.

No I/O and no clock: every function takes the current time and returns a `Transition` that
says what the engine must do (traffic to apply, whether a gate must be asked, whether the
judge starts a new step) and the state to store once that is done. The engine
(analyzer/daemon/engine.py) performs the I/O and commits the transition in one transaction.

Phases:

    pending --start--> progressing(step k, weight w) --promote--> ... --> promoting --> succeeded
                           |  ^                                   (last step: 100, or mirror end)
                pause/judge|  |resume
                           v  |
                         paused
    any non-terminal --rollback/abort--> rolled_back   (traffic reset to stable *first*)
    rollback that the router keeps refusing --> failed  (needs a human)

Strategies map to steps (`Strategy.weight_steps()`):
- canary: the weight steps, `pause` steps in between; the final step (weight 100) is the
  promotion;
- blue-green: analysis at weight 0 with the preview mirrored (`mirrorPercent`) or on test
  traffic, then 0 -> 100 at once;
- ab: analysis at weight 0 with a header/cookie route to the canary, then 100 and the route
  removed;
- mirror: analysis at weight 0 with `mirrorPercent` mirrored; success removes the mirror and
  moves no live traffic.

Manual commands: `promote` (skip the rest of this step's analysis or a pause: go to the next
step, still behind the gates), `abort` (roll back), `pause` (stop deciding; the weight stays),
`resume` (continue: a pause step ends; a paused analysis step restarts its step clock and is
still the same step: the judge does not start a new one, so step numbers do not drift).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from analyzer.core.types import Action, Decision
from analyzer.policy.model import Policy
from analyzer.policy.strategy import PauseStep
from analyzer.util.times import iso

#: Consecutive refused router writes before a forward step is abandoned (rolled back), and
#: consecutive refused rollbacks before the rollout is marked failed.
ROUTER_FAILURE_LIMIT = 5


class Phase(StrEnum):
    PENDING = "pending"
    PROGRESSING = "progressing"
    PAUSED = "paused"
    PROMOTING = "promoting"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED)


class Command(StrEnum):
    PROMOTE = "promote"
    ABORT = "abort"
    PAUSE = "pause"
    RESUME = "resume"


@dataclass(frozen=True)
class Traffic:
    """What the router should be told: live weight, A/B route, mirror percent."""

    weight: int = 0
    header_route: dict[str, str] | None = None
    mirror_percent: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"weight": self.weight, "header_route": self.header_route,
                "mirror_percent": self.mirror_percent}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Traffic:
        return cls(
            weight=int(data.get("weight", 0)),
            header_route=data.get("header_route"),
            mirror_percent=data.get("mirror_percent"),
        )


STABLE_ONLY = Traffic()


@dataclass(frozen=True)
class Step:
    """One entry of the plan: a weight step (analysis unless final) or a pause."""

    index: int
    kind: str  # "weight" | "pause"
    traffic: Traffic = STABLE_ONLY
    pause: timedelta | None = None  # pause steps: None waits for a human
    final: bool = False  # entering it is the promotion

    def describe(self) -> str:
        if self.kind == "pause":
            return f"pause {self.pause}" if self.pause else "pause (until resume)"
        return f"weight {self.traffic.weight}"


@dataclass(frozen=True)
class RolloutPlan:
    """The steps a policy walks, with the traffic each step needs from the router."""

    strategy: str
    steps: tuple[Step, ...]
    final_traffic: Traffic  # what `promoting` applies

    @classmethod
    def from_policy(cls, policy: Policy) -> RolloutPlan:
        strategy = policy.spec.strategy
        raw = strategy.weight_steps()
        header: dict[str, str] | None = None
        if strategy.match is not None:
            h = strategy.match.header
            if h is not None and h.regex is not None:
                header = {"header": h.name, "pattern": h.regex}
            elif h is not None and h.value is not None:
                header = {"header": h.name, "value": h.value}
            elif strategy.match.cookie is not None:
                header = {"cookie": strategy.match.cookie.name}
        steps: list[Step] = []
        for i, s in enumerate(raw):
            if isinstance(s, PauseStep):
                steps.append(Step(i, "pause", pause=s.pause.duration))
                continue
            w = int(s)
            if strategy.type == "canary" or w >= 100:
                traffic = Traffic(weight=w)
            elif strategy.type == "ab":
                traffic = Traffic(weight=w, header_route=header)
            else:  # blue-green preview, mirror
                traffic = Traffic(weight=w, mirror_percent=strategy.mirrorPercent)
            steps.append(Step(i, "weight", traffic=traffic, final=w >= 100))
        # mirror ends where it started: no live traffic moves; the mirror is removed.
        final = Traffic(weight=100) if strategy.type != "mirror" else STABLE_ONLY
        return cls(strategy=strategy.type, steps=tuple(steps), final_traffic=final)

    def position(self, index: int) -> str:
        """Step `index` (RolloutState.step, 0-based) as people read it: "2 of 4". Sentences,
        `canary status` and the dashboard all number steps this way (the API's `step` is the
        index)."""
        if index < 0:
            return f"- of {len(self.steps)}"
        return f"{index + 1} of {len(self.steps)}"


@dataclass(frozen=True)
class RolloutState:
    """What the store keeps between ticks (besides the judge's own state)."""

    phase: Phase = Phase.PENDING
    step: int = -1  # index into RolloutPlan.steps; -1 before the first step
    traffic: Traffic = STABLE_ONLY  # applied to the router and committed
    step_started_at: datetime | None = None
    pause_until: datetime | None = None
    reason: str = ""
    rollback_pending: bool = False  # a rollback the router refused; retried every tick
    router_failures: int = 0
    rollback_cause: str = ""  # why a pending rollback was decided (its retries keep it)

    @property
    def weight(self) -> int:
        return self.traffic.weight

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": str(self.phase),
            "step": self.step,
            "traffic": self.traffic.to_json(),
            "step_started_at": iso(self.step_started_at),
            "pause_until": iso(self.pause_until),
            "reason": self.reason,
            "rollback_pending": self.rollback_pending,
            "router_failures": self.router_failures,
            "rollback_cause": self.rollback_cause,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RolloutState:
        return cls(
            phase=Phase(data.get("phase", "pending")),
            step=int(data.get("step", -1)),
            traffic=Traffic.from_json(data.get("traffic") or {}),
            step_started_at=_parse(data.get("step_started_at")),
            pause_until=_parse(data.get("pause_until")),
            reason=str(data.get("reason", "")),
            rollback_pending=bool(data.get("rollback_pending", False)),
            router_failures=int(data.get("router_failures", 0)),
            rollback_cause=str(data.get("rollback_cause", "")),
        )


@dataclass(frozen=True)
class GateRequest:
    """The engine must ask the policy's `beforeStep` webhooks before entering this step."""

    step: int
    weight: int


@dataclass(frozen=True)
class Transition:
    """The outcome of one tick of the machine.

    The engine applies, in this order: `reset` (all traffic to stable: a rollback does this
    before anything else), then `traffic` (only when it differs from `before.traffic`), then
    commits `after`. When `gate` is set it first asks the webhooks and, on a hold, calls
    `RolloutMachine.gate_held` instead; when the router fails, `RolloutMachine.router_failed`.
    """

    before: RolloutState
    after: RolloutState
    action: str  # start|promote|hold|rollback|pause|resume|succeed|wait|gate-hold|...
    reason: str
    traffic: Traffic | None = None
    reset: bool = False
    start_step: bool = False  # the judge starts a new step (its clock and per-step counts)
    restart_clock: bool = False  # a resumed step: the judge's step clock restarts, same step
    gate: GateRequest | None = None
    command: Command | None = None
    events: tuple[str, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        """True when phase, step or traffic moved (worth a tick row and a notification)."""
        b, a = self.before, self.after
        return (b.phase, b.step, b.traffic) != (a.phase, a.step, a.traffic) or (
            b.rollback_pending != a.rollback_pending
        )

    @property
    def is_wait(self) -> bool:
        return self.action == "wait"


class RolloutMachine:
    """Pure transitions for one policy's plan."""

    def __init__(self, plan: RolloutPlan) -> None:
        self.plan = plan

    @classmethod
    def for_policy(cls, policy: Policy) -> RolloutMachine:
        return cls(RolloutPlan.from_policy(policy))

    # -- what a tick needs ----------------------------------------------------------------

    def needs_analysis(self, state: RolloutState) -> bool:
        """True when this tick should fetch data and ask the judge."""
        if state.phase is not Phase.PROGRESSING or state.rollback_pending:
            return False
        step = self._step(state.step)
        return step is not None and step.kind == "weight" and not step.final

    def current_step(self, state: RolloutState) -> Step | None:
        return self._step(state.step)

    def rebase(self, state: RolloutState) -> RolloutState:
        """`state` (of a run that walked another plan) placed in this plan: the step with the
        same weight, else the step index clamped to this plan's last analysis step. The traffic
        stays; the next step is this plan's next one (a changed spec applies from there)."""
        if state.phase is not Phase.PROGRESSING:
            return state
        weights = [s.index for s in self.plan.steps
                   if s.kind == "weight" and not s.final and s.traffic == state.traffic]
        if weights:
            return replace(state, step=weights[0])
        analysis = [s.index for s in self.plan.steps if s.kind == "weight" and not s.final]
        if not analysis:
            return state
        return replace(state, step=min(max(state.step, analysis[0]), analysis[-1]))

    # -- entry points ---------------------------------------------------------------------

    def on_command(
        self, state: RolloutState, command: Command, now: datetime, actor: str = "a human"
    ) -> Transition:
        """A manual gate: promote, abort, pause, resume."""
        phase = state.phase
        if phase.terminal:
            return self._ignored(state, command, f"rollout already {phase}")
        if command is Command.ABORT:
            return replace(self._rollback(state, now, f"aborted by {actor}"), command=command)
        if command is Command.PAUSE:
            if phase is not Phase.PROGRESSING:
                return self._ignored(state, command, f"cannot pause a rollout that is {phase}")
            after = replace(state, phase=Phase.PAUSED, pause_until=None,
                            reason=f"paused by {actor}")
            return Transition(state, after, "pause", after.reason, command=command)
        if command is Command.RESUME:
            if phase is not Phase.PAUSED:
                return self._ignored(state, command, f"nothing to resume: rollout is {phase}")
            step = self._step(state.step)
            if step is None or step.kind == "pause":
                t = self._advance(state, now, f"resumed by {actor}")
            else:
                # The same step goes on (its tests and counts too); its clock restarts, so
                # maxStepDuration does not end it on the next tick.
                after = replace(state, phase=Phase.PROGRESSING, step_started_at=now,
                                pause_until=None, reason=f"resumed by {actor}")
                t = Transition(state, after, "resume", after.reason, restart_clock=True)
            return replace(t, command=command)
        # PROMOTE
        if phase is Phase.PROMOTING:
            return self._ignored(state, command, "already promoting")
        if state.rollback_pending:
            return self._ignored(state, command, "a rollback is in progress")
        return replace(self._advance(state, now, f"promoted by {actor}"), command=command)

    def on_decision(self, state: RolloutState, decision: Decision, now: datetime) -> Transition:
        """The judge's answer for an analysis step."""
        if not self.needs_analysis(state):
            raise ValueError(f"no analysis expected in phase {state.phase}, step {state.step}")
        if decision.action is Action.ROLLBACK:
            return self._rollback(state, now, decision.reason)
        if decision.action is Action.PROMOTE:
            return self._advance(state, now, decision.reason)
        if decision.action is Action.PAUSE:
            after = replace(state, phase=Phase.PAUSED, pause_until=None, reason=decision.reason)
            return Transition(state, after, "pause", decision.reason)
        after = replace(state, reason=decision.reason, router_failures=0)
        return Transition(state, after, "hold", decision.reason)

    def on_time(self, state: RolloutState, now: datetime) -> Transition:
        """A tick with neither analysis nor command: start, timed pauses, finishing."""
        if state.phase.terminal:
            return Transition(state, state, "wait", f"rollout {state.phase}")
        if state.rollback_pending:
            return self._rollback(state, now, state.rollback_cause or state.reason or "rollback")
        if state.phase is Phase.PENDING:
            return self._advance(state, now, "rollout started")
        if state.phase is Phase.PAUSED:
            step = self._step(state.step)
            if (step is not None and step.kind == "pause" and state.pause_until is not None
                    and now >= state.pause_until):
                return self._advance(state, now, f"pause of {step.pause} elapsed")
            return Transition(state, state, "wait", state.reason)
        if state.phase is Phase.PROMOTING:
            after = replace(state, phase=Phase.SUCCEEDED, reason="promotion complete",
                            router_failures=0)
            return Transition(state, after, "succeed", after.reason)
        return Transition(state, state, "wait", state.reason)

    def gate_held(self, t: Transition, reason: str) -> Transition:
        """A `beforeStep` webhook answered non-2xx: stay where we are."""
        after = replace(t.before, reason=reason)
        return Transition(t.before, after, "gate-hold", reason, command=t.command)

    def router_failed(self, t: Transition, now: datetime, error: str) -> Transition:
        """The router refused the transition's traffic: nothing moved.

        A forward step holds (and after ROUTER_FAILURE_LIMIT refusals in a row becomes a
        rollback); a refused rollback stays pending and is retried every tick until the limit,
        then the rollout is failed: traffic is in an unknown state and needs a human. A rollout
        whose first step the router never took fails at the limit without a rollback: no
        traffic ever moved, so there is nothing to undo, only the router's problem to fix.
        Reasons say the cause once, the router's error once and what to do; a retry never
        wraps the previous retry's reason.
        """
        failures = t.before.router_failures + 1
        before = t.before
        if t.reset:
            # A rollback has its own budget: refusals of the forward step that turned into it
            # do not count (else a rollback after ROUTER_FAILURE_LIMIT refused steps would
            # fail the rollout on its first refusal).
            failures = failures if before.rollback_pending else 1
            cause = t.reason
            if failures >= ROUTER_FAILURE_LIMIT:
                reason = (f"rollback failed: the router refused it {failures} times in a row: "
                          f"{error}. Traffic may still reach the canary: fix what the error "
                          "names, then move all traffic to stable by hand (`canary route "
                          f"POLICY --reset`). The rollback was for: {cause}")
                after = replace(before, phase=Phase.FAILED, router_failures=failures,
                                rollback_pending=False, rollback_cause="", reason=reason)
                return Transition(before, after, "fail", after.reason, command=t.command)
            reason = (f"rolling back, not applied yet (the router refused it {failures} of "
                      f"{ROUTER_FAILURE_LIMIT} times: {error}); the rollback is for: {cause}")
            after = replace(before, rollback_pending=True, router_failures=failures,
                            rollback_cause=cause, reason=reason)
            return Transition(before, after, "rollback-retry", after.reason, command=t.command)
        if failures >= ROUTER_FAILURE_LIMIT and before.phase is Phase.PENDING:
            reason = (f"never started: the router refused the first step {failures} times in "
                      f"a row, so no traffic moved to the canary and nothing needs rolling "
                      f"back: {error}. Fix what the error names (credentials, RBAC, the "
                      "routed object, the policy's router block), then start the rollout again "
                      "(`canary start POLICY`)")
            after = replace(before, phase=Phase.FAILED, router_failures=failures,
                            reason=reason)
            return Transition(before, after, "fail", after.reason, command=t.command)
        if failures >= ROUTER_FAILURE_LIMIT:
            r = self._rollback(before, now, f"the router refused {failures} changes in a row: "
                               f"{error}")
            return replace(r, before=before, after=replace(r.after, router_failures=failures))
        after = replace(before, router_failures=failures,
                        reason=f"router error ({failures} of {ROUTER_FAILURE_LIMIT} before "
                        f"giving up): {error}")
        return Transition(before, after, "router-hold", after.reason, command=t.command)

    # -- internals ------------------------------------------------------------------------

    def _step(self, index: int) -> Step | None:
        if 0 <= index < len(self.plan.steps):
            return self.plan.steps[index]
        return None

    def _ignored(self, state: RolloutState, command: Command, why: str) -> Transition:
        return Transition(state, state, "ignored", f"{command} ignored: {why}", command=command)

    def _rollback(self, state: RolloutState, now: datetime, reason: str) -> Transition:
        after = replace(state, phase=Phase.ROLLED_BACK, traffic=STABLE_ONLY, pause_until=None,
                        rollback_pending=False, rollback_cause="", reason=reason)
        return Transition(state, after, "rollback", reason, traffic=STABLE_ONLY, reset=True)

    def _advance(self, state: RolloutState, now: datetime, reason: str) -> Transition:
        """Move to the step after the current one (gated), skipping into pauses/promotion."""
        nxt = state.step + 1
        step = self._step(nxt)
        if step is None or step.final:
            # Promotion: the final step (weight 100) or, for mirror, the end of the plan.
            traffic = step.traffic if step is not None else self.plan.final_traffic
            after = replace(state, phase=Phase.PROMOTING, step=nxt if step else state.step,
                            traffic=traffic, pause_until=None, step_started_at=now,
                            router_failures=0, reason=f"promoting: {reason}")
            return Transition(state, after, "promote", reason, traffic=traffic,
                              gate=GateRequest(nxt, traffic.weight))
        if step.kind == "pause":
            until = now + step.pause if step.pause is not None else None
            why = (f"pause step until {until.isoformat()}" if until
                   else "pause step: waiting for `canary resume`")
            after = replace(state, phase=Phase.PAUSED, step=nxt, pause_until=until,
                            step_started_at=now, router_failures=0, reason=why)
            action = "start" if state.phase is Phase.PENDING else "promote"
            return Transition(state, after, action, f"{reason}; {why}")
        after = replace(state, phase=Phase.PROGRESSING, step=nxt, traffic=step.traffic,
                        pause_until=None, step_started_at=now, router_failures=0,
                        reason=f"step {nxt}: {step.describe()}")
        action = "start" if state.phase is Phase.PENDING else "promote"
        return Transition(state, after, action, reason, traffic=step.traffic, start_step=True,
                          gate=GateRequest(nxt, step.traffic.weight))


def _parse(s: str | None) -> datetime | None:
    return datetime.fromisoformat(s) if s else None
