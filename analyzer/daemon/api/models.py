"""The API's JSON shapes as pydantic models: the OpenAPI document (/openapi.json) is generated
from them, and every answer is validated against them on the way out."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Phase = Literal["pending", "progressing", "paused", "promoting", "succeeded", "rolled_back",
                "failed"]
CommandName = Literal["promote", "abort", "pause", "resume"]

#: a rollout name as the policy model allows it (a Kubernetes name)
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
#: tick numbers are 32-bit in the store (SQLite and PostgreSQL alike)
MAX_SEQ = 2**31 - 1
MAX_TICKS_PER_PAGE = 10000


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(Model):
    """Every refusal: `error` is the HTTP phrase, `message` says what to do."""

    error: str = Field(examples=["Bad Request"])
    message: str = Field(examples=["query parameter `limit`: must be at least 1 (got -1)"])
    field: str | None = Field(None, description="the request field at fault (400 only)")


class Traffic(Model):
    weight: int
    header_route: dict[str, Any] | None = None
    mirror_percent: float | None = None


class LastDecisionOut(Model):
    tick: int
    at: str | None
    decision: str
    reason: str


class Rollout(Model):
    """One run of a policy, as the rollouts table shows it."""

    id: int
    name: str
    generation: int
    namespace: str
    service: str
    canary_version: str
    stable_version: str
    phase: Phase
    step: int = Field(description="index of the current step (-1 before the first)")
    steps: list[str] = Field(description="the steps the rollout walks: weights ('25%') and "
                                         "pauses ('pause', 'pause 10m')")
    weight: int
    traffic: Traffic
    reason: str = Field(description="why the rollout is where it is (its last transition)")
    last_decision: LastDecisionOut | None = Field(description="the judge's latest decision "
                                                              "and its sentence")
    rollback_pending: bool
    pause_until: str | None
    tick_seq: int
    owner: str | None
    created_at: str | None
    updated_at: str | None
    finished_at: str | None


class RolloutList(Model):
    rollouts: list[Rollout]


class PendingCommand(Model):
    id: int
    command: CommandName
    actor: str
    requested_at: str


class WeightChangeOut(Model):
    tick: int | None
    at: str
    from_: int = Field(alias="from")
    to: int
    cause: str

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class EventOut(Model):
    tick: int | None
    at: str
    kind: str
    message: str


class Link(Model):
    label: str
    url: str


class Power(Model):
    """How long a regression would still take to detect at current traffic (the judge's
    power estimate of its latest hold)."""

    seconds: float
    tick: int


class RolloutDetail(Rollout):
    pending_commands: list[PendingCommand]
    weight_changes: list[WeightChangeOut]
    events: list[EventOut] = Field(description="the last 50 events")
    policy: dict[str, Any] = Field(description="the policy this run uses, secrets redacted")
    links: list[Link] = Field(description="links out (canary run --link), filled in for "
                                          "this rollout")
    power: Power | None
    runs: list[int] = Field(description="generations of this policy, newest first")


class Tick(Model):
    seq: int
    scheduled_at: str | None
    t0: str | None
    t1: str | None
    phase_before: str
    phase_after: str
    step_before: int
    step_after: int
    weight_before: int
    weight_after: int
    action: str
    decision: str | None
    reason: str
    checks: list[dict[str, Any]]
    command: str | None
    replica: str | None
    duration_ms: int | None
    time_needed_seconds: float | None = None
    samples: dict[str, Any] | None = None
    judge_state: dict[str, Any] | None = None
    gate: list[dict[str, Any]] | None = None


class TickList(Model):
    rollout: str
    rollout_id: int
    ticks: list[Tick]


class CheckSeriesOut(Model):
    name: str
    kind: str | None
    t: list[str | None]
    estimate: list[float | None]
    low: list[float | None]
    high: list[float | None]
    evidence: list[float | None] = Field(description="regression evidence (e-value), or the "
                                                     "check's p-value or failure count")
    e_ok: list[float | None] = Field(description="non-inferiority e-value")
    threshold: float | None
    tolerance_ratio: float | None
    expected: list[float | None] = Field(description="what the estimate should be at each "
                                                     "tick: the router's canary weight "
                                                     "(sample-ratio check; empty otherwise)")
    estimate_label: str = Field(description="what the estimate is, e.g. 'canary / stable'")
    evidence_label: str = Field(description="what the evidence is, e.g. 'regression e-value'")
    tolerance_label: str | None = Field(description="the tolerance as the policy writes it, "
                                                    "e.g. '1 + tolerance 0.25 = 1.25'")


class DecisionMark(Model):
    t: str | None
    decision: str


class Series(Model):
    """A run's ticks as chart series (one value per tick; null where a tick had none)."""

    rollout: str
    rollout_id: int
    t: list[str | None]
    seq: list[int]
    weight: list[int]
    error_rate_percent: dict[str, list[float | None]]
    latency_ms: dict[str, dict[str, list[float | None]]] = Field(
        description="p50, p90, p99 per version, interpolated from histogram buckets")
    checks: list[CheckSeriesOut]
    decisions: list[DecisionMark]


class CommandAccepted(Model):
    rollout: str
    rollout_id: int
    command: CommandName
    command_id: int
    status: Literal["queued"]
    applies: Literal["now", "at the next tick"]


class Status(Model):
    status: str


class StartRollout(Model):
    """`POST /rollouts`: a new run of a policy the engine knows (a policy file of `canary run
    --policies`, a RolloutPolicy, or any policy that has run here), by name."""

    name: str = Field(pattern=NAME_PATTERN, max_length=253,
                      description="the policy (a RolloutPolicy's is NAMESPACE.NAME)")
    canaryVersion: str | None = Field(None, min_length=1, max_length=256,
                                      description="the version to roll out (default: the "
                                                  "policy's target.canary)")
