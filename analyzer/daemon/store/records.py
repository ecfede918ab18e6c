"""What the store returns and takes: frozen records of rollouts, ticks, commands, weight changes
and events, and their conversion from table rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from analyzer.core.rollout import Command, Phase, RolloutState
from analyzer.daemon.store.codec import loads
from analyzer.policy import Policy
from analyzer.util.times import as_utc, iso

# --------------------------------------------------------------------------- records


class _RunEnd:
    """Where a run is in its life, for the records that carry its state, `tick_seq` and
    `settled_seq`."""

    state: RolloutState
    tick_seq: int
    settled_seq: int | None

    @property
    def active(self) -> bool:
        return not self.state.phase.terminal

    @property
    def unsettled(self) -> bool:
        """Finished, and its router not yet checked against the final state by an owner."""
        return self.state.phase.terminal and (self.settled_seq is None
                                              or self.settled_seq < self.tick_seq)


@dataclass(frozen=True)
class RolloutRecord(_RunEnd):
    id: int
    name: str
    generation: int
    canary_version: str
    stable_version: str
    policy: dict[str, Any]
    state: RolloutState
    judge_state: dict[str, Any] | None
    tick_seq: int
    last_t1: datetime | None
    owner: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    fence_epoch: int = 0  # the epoch of the replica that owns the run now
    settled_seq: int | None = None  # finished runs: router checked at this tick
    policy_rev: int = 0  # bumped by every change of `policy`

    @property
    def phase(self) -> Phase:
        return self.state.phase

    def load_policy(self) -> Policy:
        return Policy.model_validate(self.policy)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "generation": self.generation,
            "canary_version": self.canary_version,
            "stable_version": self.stable_version,
            "phase": str(self.state.phase),
            "step": self.state.step,
            "weight": self.state.weight,
            "traffic": self.state.traffic.to_json(),
            "reason": self.state.reason,
            "rollback_pending": self.state.rollback_pending,
            "pause_until": iso(self.state.pause_until),
            "tick_seq": self.tick_seq,
            "owner": self.owner,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "finished_at": iso(self.finished_at),
        }


@dataclass(frozen=True)
class TickRecord:
    """One evaluation to commit (built by the engine from a Transition)."""

    rollout_id: int
    seq: int
    scheduled_at: datetime
    state_before: RolloutState
    state_after: RolloutState
    action: str
    reason: str
    t0: datetime | None = None
    t1: datetime | None = None
    decision: dict[str, Any] | None = None  # Decision.to_json()
    samples: dict[str, Any] | None = None
    judge_state: dict[str, Any] | None = None  # after the tick (None: unchanged)
    gate: list[dict[str, Any]] | None = None
    command_id: int | None = None
    command: str | None = None
    replica: str | None = None
    duration_ms: int | None = None
    weight_cause: str | None = None  # set when traffic changed
    events: tuple[tuple[str, str], ...] = ()  # (kind, message)
    epoch: int | None = None  # commit only while the run's fence epoch is this (None: any)


@dataclass(frozen=True)
class TickView(_RunEnd):
    """What a tick reads, in one transaction: the run's state and its oldest pending command.
    The judge state stays encoded until asked for (a live judge in memory usually makes it
    unnecessary); the policy is not read at all (the engine keeps it per run)."""

    id: int
    name: str
    state: RolloutState
    tick_seq: int
    last_t1: datetime | None
    fence_epoch: int
    settled_seq: int | None
    judge_state_text: str | None
    command: CommandRecord | None
    policy_rev: int = 0

    @property
    def judge_state(self) -> dict[str, Any] | None:
        value: dict[str, Any] | None = loads(self.judge_state_text)
        return value


@dataclass(frozen=True)
class RolloutBrief:
    """A run as the scheduler's sync pass sees it (no policy, no judge state decoded)."""

    id: int
    name: str
    phase: Phase
    tick_seq: int
    settled_seq: int | None

    @property
    def active(self) -> bool:
        return not self.phase.terminal

    @property
    def unsettled(self) -> bool:
        return self.phase.terminal and (self.settled_seq is None
                                        or self.settled_seq < self.tick_seq)


@dataclass(frozen=True)
class Claim:
    """A replica's ownership of a run, as the store handed it out (`Store.claim`)."""

    rollout_id: int
    epoch: int
    store_id: str


@dataclass(frozen=True)
class TickRow:
    """A committed tick as read back."""

    rollout_id: int
    seq: int
    scheduled_at: datetime
    t0: datetime | None
    t1: datetime | None
    phase_before: str
    phase_after: str
    step_before: int
    step_after: int
    weight_before: int
    weight_after: int
    action: str
    decision: str | None
    reason: str
    samples: dict[str, Any] | None
    verdicts: list[dict[str, Any]]
    decision_detail: dict[str, Any] | None
    judge_state: dict[str, Any] | None
    gate: list[dict[str, Any]] | None
    command: str | None
    replica: str | None
    duration_ms: int | None
    fence_epoch: int | None = None  # the owner's epoch it was committed under

    def to_json(self, *, full: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seq": self.seq,
            "scheduled_at": iso(self.scheduled_at),
            "t0": iso(self.t0),
            "t1": iso(self.t1),
            "phase_before": self.phase_before,
            "phase_after": self.phase_after,
            "step_before": self.step_before,
            "step_after": self.step_after,
            "weight_before": self.weight_before,
            "weight_after": self.weight_after,
            "action": self.action,
            "decision": self.decision,
            "reason": self.reason,
            "checks": self.verdicts,
            "command": self.command,
            "replica": self.replica,
            "duration_ms": self.duration_ms,
        }
        if self.decision_detail is not None:
            out["time_needed_seconds"] = self.decision_detail.get("time_needed_seconds")
        if full:
            out["samples"] = self.samples
            out["judge_state"] = self.judge_state
            out["gate"] = self.gate
        return out


@dataclass(frozen=True)
class CommandRecord:
    id: int
    rollout_id: int
    command: Command
    actor: str
    requested_at: datetime


@dataclass(frozen=True)
class WeightChange:
    tick_seq: int | None
    at: datetime
    weight_before: int
    weight_after: int
    traffic: dict[str, Any]
    cause: str


@dataclass(frozen=True)
class LastDecision:
    """A rollout's latest tick that asked the judge: its decision and sentence."""

    rollout_id: int
    seq: int
    at: datetime
    decision: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"tick": self.seq, "at": iso(self.at), "decision": self.decision,
                "reason": self.reason}


@dataclass(frozen=True)
class EventRow:
    tick_seq: int | None
    at: datetime
    kind: str
    message: str


def rollout_from_row(row: Any) -> RolloutRecord:
    return RolloutRecord(
        id=row.id, name=row.name, generation=row.generation,
        canary_version=row.canary_version, stable_version=row.stable_version,
        policy=loads(row.policy), state=RolloutState.from_json(loads(row.state)),
        judge_state=loads(row.judge_state), tick_seq=row.tick_seq,
        last_t1=as_utc(row.last_t1), owner=row.owner,
        created_at=as_utc(row.created_at),  # type: ignore[arg-type]
        updated_at=as_utc(row.updated_at),  # type: ignore[arg-type]
        finished_at=as_utc(row.finished_at),
        fence_epoch=row.fence_epoch, settled_seq=row.settled_seq, policy_rev=row.policy_rev,
    )


def tick_from_row(r: Any) -> TickRow:
    return TickRow(
        rollout_id=r.rollout_id, seq=r.seq, scheduled_at=as_utc(r.scheduled_at),  # type: ignore[arg-type]
        t0=as_utc(r.t0), t1=as_utc(r.t1), phase_before=r.phase_before, phase_after=r.phase_after,
        step_before=r.step_before, step_after=r.step_after, weight_before=r.weight_before,
        weight_after=r.weight_after, action=r.action, decision=r.decision, reason=r.reason,
        samples=loads(r.samples), verdicts=loads(r.verdicts) or [],
        decision_detail=loads(r.decision_detail), judge_state=loads(r.judge_state),
        gate=loads(r.gate), command=r.command, replica=r.replica, duration_ms=r.duration_ms,
        fence_epoch=r.fence_epoch,
    )
