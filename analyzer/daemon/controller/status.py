"""A RolloutPolicy's status and Events from the engine's store (pure: no I/O, time passed in).

`policy_status(...)` says where the policy stands: its newest run (phase, weight, step, the
last decision's sentence), the versions, and the five conditions, each with a reason and a
`lastTransitionTime` that moves only when the condition's status changes (the previous status
is passed in). `tick_events(...)` turns the decision log's ticks that changed something into
one Event each, attached to the RolloutPolicy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from analyzer.core.rollout import Phase, RolloutPlan
from analyzer.daemon.store import RolloutRecord, TickRow
from analyzer.policy import API_VERSION, KIND, Policy
from analyzer.policy.status import CONDITION_TYPES, PolicyStatus
from analyzer.util.times import iso

#: store phase -> status phase
PHASES = {
    Phase.PENDING: "Pending", Phase.PROGRESSING: "Progressing", Phase.PAUSED: "Paused",
    Phase.PROMOTING: "Promoting", Phase.SUCCEEDED: "Succeeded",
    Phase.ROLLED_BACK: "RolledBack", Phase.FAILED: "Failed",
}
#: how many steps of the decision log become Events in one pass (the rest in the next ones)
MAX_EVENTS_PER_PASS = 20


@dataclass(frozen=True)
class PolicyView:
    """What the controller knows about one RolloutPolicy when it writes its status."""

    generation: int
    run: RolloutRecord | None  # the newest run of this policy in the store
    canary: str | None  # version identities (not metric labels)
    stable: str | None
    last_decision: tuple[str, datetime] | None  # sentence, time
    problem: str | None = None  # the spec is invalid, or the canaryRef unreadable
    problem_reason: str = "InvalidSpec"
    deleting: bool = False
    queued: str | None = None
    reported_tick: int | None = None
    last_command: dict[str, str] | None = None
    replica: str | None = None
    waiting_for: str | None = None  # why no rollout runs (no new version yet)
    steps: int = 0  # the run's plan length (plan_length)


def policy_status(view: PolicyView, previous: dict[str, Any] | None,
                  now: datetime) -> dict[str, Any]:
    """The status to write (JSON, validated by the PolicyStatus model)."""
    run = view.run
    phase: str
    if view.deleting:
        phase = "Deleting"
    elif view.problem is not None:
        phase = "Invalid" if view.problem_reason == "InvalidSpec" else (
            PHASES[run.phase] if run is not None else "Waiting")
    elif run is None:
        phase = "Waiting"
    else:
        phase = PHASES[run.phase]
    weight = run.state.weight if run is not None else None
    step = (f"{max(run.state.step + 1, 0)}/{view.steps}" if run is not None
            and not run.phase.terminal else None)
    message = _message(view, phase)
    conditions = _conditions(view, phase, message, previous, now)
    status = PolicyStatus(
        observedGeneration=view.generation, phase=phase,  # type: ignore[arg-type]
        canary=view.canary, stable=view.stable, weight=weight, step=step,
        lastDecision=view.last_decision[0][:4096] if view.last_decision else None,
        lastDecisionTime=iso(view.last_decision[1]) if view.last_decision else None,
        message=message[:4096], run=run.generation if run is not None else None,
        queuedVersion=view.queued, reportedTick=view.reported_tick,
        lastCommand=view.last_command,  # type: ignore[arg-type]
        controller=view.replica, conditions=conditions,  # type: ignore[arg-type]
    )
    return status.model_dump(mode="json", exclude_none=True)


def plan_length(run: RolloutRecord) -> int:
    """How many steps the run's plan has (the m of "step n/m")."""
    return len(RolloutPlan.from_policy(run.load_policy()).steps)


def _message(view: PolicyView, phase: str) -> str:
    run = view.run
    if view.problem is not None:
        return view.problem
    if view.deleting:
        return ("deleting: the active rollout is being aborted (traffic back to stable)"
                if run is not None and not run.phase.terminal else "deleting")
    if run is None:
        return view.waiting_for or "waiting for a new version"
    versions = f"{view.stable} -> {view.canary}"
    if run.phase is Phase.SUCCEEDED:
        return (f"{view.canary} promoted: {view.canary} is now the stable version; the next "
                "version is rolled out against it")
    if run.phase.terminal:
        return f"{versions} {phase}: {run.state.reason}"
    return f"{versions} {phase}: {run.state.reason}"


def _conditions(view: PolicyView, phase: str, message: str, previous: dict[str, Any] | None,
                now: datetime) -> list[dict[str, Any]]:
    run = view.run
    p = run.phase if run is not None else None
    wanted: dict[str, tuple[bool, str]] = {
        "Ready": (view.problem is None and not view.deleting,  # message: the problem
                  "Deleting" if view.deleting else (view.problem_reason if view.problem
                                                    else "Ready")),
        "Progressing": (p in (Phase.PENDING, Phase.PROGRESSING, Phase.PROMOTING),
                        phase if run is not None else "NoRollout"),
        "Promoted": (p is Phase.SUCCEEDED, phase if run is not None else "NoRollout"),
        "RolledBack": (p in (Phase.ROLLED_BACK, Phase.FAILED),
                       phase if run is not None else "NoRollout"),
        "Paused": (p is Phase.PAUSED, phase if run is not None else "NoRollout"),
    }
    before = {c.get("type"): c for c in (previous or {}).get("conditions") or []}
    out = []
    for ctype in CONDITION_TYPES:
        ok, reason = wanted[ctype]
        status = "True" if ok else "False"
        old = before.get(ctype)
        since = old.get("lastTransitionTime") if old and old.get("status") == status else None
        out.append({"type": ctype, "status": status, "reason": reason,
                    "message": message[:32768] if ok or ctype == "Ready" else "",
                    "lastTransitionTime": since or iso(now),
                    "observedGeneration": view.generation})
    return out


# --------------------------------------------------------------------------- events


def _kind(t: TickRow) -> str:
    after = t.phase_after
    if after == Phase.SUCCEEDED:
        return "succeeded"
    if after == Phase.FAILED:
        return "failed"
    if after == Phase.ROLLED_BACK:
        return "rollback"
    if after == Phase.PAUSED and t.phase_before != Phase.PAUSED:
        return "pause"
    if t.action == "promote":
        return "promote"
    return "step"


def changed(t: TickRow) -> bool:
    return (t.phase_before, t.step_before, t.weight_before) != (
        t.phase_after, t.step_after, t.weight_after)


def tick_events(obj: dict[str, Any], run: RolloutRecord, ticks: list[TickRow],
                policy: Policy | None = None) -> list[dict[str, Any]]:
    """One Event per tick that moved phase, step or weight, on the RolloutPolicy `obj`."""
    meta = obj["metadata"]
    out = []
    for t in ticks:
        if not changed(t):
            continue
        kind = _kind(t)
        stamp = iso(t.scheduled_at)
        command = f" ({t.command} by command)" if t.command else ""
        out.append({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"],
                         "labels": {"app.kubernetes.io/managed-by": "canary-analyzer"}},
            "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta.get("uid"),
                               "resourceVersion": meta.get("resourceVersion")},
            "reason": f"Canary{kind.capitalize()}",
            "message": (f"run {run.generation} tick {t.seq}: {run.stable_version} -> "
                        f"{run.canary_version}, weight {t.weight_before}% -> {t.weight_after}%, "
                        f"{t.phase_before} -> {t.phase_after}{command}: {t.reason}")[:1024],
            "type": "Warning" if kind in ("rollback", "failed", "pause") else "Normal",
            "source": {"component": "canary-analyzer"},
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        })
    return out
