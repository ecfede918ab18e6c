"""Backtests: what a policy would have decided, tick by tick, on data that already happened,
beside what was decided then.

Two kinds of history:
- a rollout recorded in the store (`backtest_rollout`): its analysed intervals, and the
  decisions the engine recorded for them;
- a time range in Prometheus (`backtest_prometheus`): windows of `analysis.interval` from
  `start` to `end`, fetched with the policy's own Prometheus source (preset or queries). With a
  recorded rollout as well, its windows, router weights and decisions are used instead.

Either way the policy runs through `canary replay`'s machinery (`replay_rollout`: a fresh
Judge, a promote advances the policy's step, the run ends at a rollback, a judge pause or the
full promotion), so a backtest of some data and `canary replay` of the same data exported as
JSONL give the same decisions. What this cannot know: once the policy's decision differs from
the recorded one, the data that follows was produced at the weights actually applied, not at
the ones this policy would have set; the first difference is the point to look at. Latency
bounds: on a recorded rollout, the ones the engine picked on its pre-rollout baseline (when the
policy has the same latency tests); otherwise from the first window's stable histogram, which
the latency tests then leave out (as in replay).

When Prometheus alone is the history, the router's weight is not in it: each interval's
`canary_weight` is then the observed share of canary requests, which makes the sample-ratio
check vacuous (give the recorded rollout too to check it).

Tick numbers are the engine's (`canary history`'s TICK) whenever a recorded rollout is there;
the manual commands it applied (promote, abort, pause, resume) are rows of their own, always a
difference: the policy alone would not have done them. Prometheus alone has no engine ticks:
its windows are numbered 1, 2, ... from `start`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from analyzer.core.judge import baseline_windows
from analyzer.core.types import Samples
from analyzer.daemon.store import Store, TickRow
from analyzer.offline.export import baseline_samples, recorded_intervals
from analyzer.offline.replay import outcome_text, replay_rollout
from analyzer.policy import Policy, PrometheusSource
from analyzer.sources.replay import ReplayLine
from analyzer.util.times import iso


class BacktestError(Exception):
    """The backtest cannot run (wrong source, empty range, nothing recorded); says what to do."""


@dataclass(frozen=True)
class BacktestTick:
    """One interval: the data's counts, what the policy would have decided and what was
    decided then (None where unknown, or after the policy's own run had ended)."""

    tick: int
    t0: datetime
    t1: datetime
    canary_weight: float | None
    counts: dict[str, int | None]
    decision: str | None
    reason: str
    step: int | None
    weight: int | None
    then_decision: str | None = None
    then_reason: str | None = None
    then_weight: int | None = None
    checks: tuple[dict[str, Any], ...] = ()
    command: str | None = None  # a manual command the engine applied at this tick (no data)

    @property
    def differs(self) -> bool:
        if self.command is not None:
            return True  # a human did what the policy alone would not have done
        return (self.decision is not None and self.then_decision is not None
                and self.decision != self.then_decision)

    def to_json(self) -> dict[str, Any]:
        return {
            "tick": self.tick, "t0": iso(self.t0), "t": iso(self.t1),
            "canary_weight": self.canary_weight, **self.counts,
            "decision": self.decision, "reason": self.reason, "step": self.step,
            "weight": self.weight, "then_decision": self.then_decision,
            "then_reason": self.then_reason, "then_weight": self.then_weight,
            "command": self.command, "differs": self.differs, "checks": list(self.checks),
        }


@dataclass(frozen=True)
class BacktestResult:
    """A policy's run over history. `outcome` in {rolled_back, promoted, inconclusive} and
    `decisive_tick` as in `canary replay`; `then_outcome` the recorded rollout's end (if any)."""

    policy: str
    source: str
    ticks: tuple[BacktestTick, ...]
    outcome: str
    decisive_tick: int | None
    reason: str
    then_outcome: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    paused: bool = False  # the policy's judge paused (its run ended there)

    def summary(self) -> str:
        """The policy's outcome in words, with tick numbers (as `canary replay` says it)."""
        analysed = [t.tick for t in self.ticks if t.decision is not None]
        return outcome_text(self.outcome, self.decisive_tick, analysed, paused=self.paused)

    @property
    def differences(self) -> list[BacktestTick]:
        return [t for t in self.ticks if t.differs]

    @property
    def first_difference(self) -> BacktestTick | None:
        diffs = self.differences
        return diffs[0] if diffs else None

    def decisions(self) -> list[str | None]:
        return [t.decision for t in self.ticks]

    def to_json(self) -> dict[str, Any]:
        first = self.first_difference
        return {
            "final": True, "policy": self.policy, "source": self.source,
            "outcome": self.outcome, "ticks": self.decisive_tick,
            "total_ticks": len(self.ticks), "summary": self.summary(), "reason": self.reason,
            "then_outcome": self.then_outcome,
            "differences": len(self.differences),
            "first_difference": first.tick if first else None, "notes": list(self.notes),
        }


def backtest_samples(
    policy: Policy,
    intervals: Sequence[Samples],
    *,
    recorded: Sequence[TickRow] | None = None,
    manual: Sequence[TickRow] = (),
    then_outcome: str | None = None,
    source: str = "samples",
    notes: Sequence[str] = (),
    latency_bounds: Mapping[str, float | None] | None = None,
    baseline: Sequence[Samples] = (),
) -> BacktestResult:
    """Run `policy` over `intervals` (oldest first) as `canary replay` would; `recorded[i]`
    is the engine's tick for `intervals[i]` when known (its number names the row), `manual`
    the recorded ticks where the engine applied a manual command (rows of their own),
    `latency_bounds` the bounds its judge used and `baseline` the stable's pre-rollout
    intervals it started from (see `replay_rollout`)."""
    if not intervals:
        raise BacktestError(f"{source}: no intervals to backtest")
    if recorded is not None and len(recorded) != len(intervals):
        raise ValueError("recorded must have one tick per interval")
    numbers = ([r.seq for r in recorded] if recorded is not None
               else list(range(1, len(intervals) + 1)))
    lines = [ReplayLine(0, s, baseline=True) for s in baseline]
    lines += [ReplayLine(n, s, tick=n) for n, s in zip(numbers, intervals, strict=True)]
    res = replay_rollout(policy, lines, source, latency_bounds=latency_bounds)
    would = {t["tick"]: t for t in res.ticks}
    ended = f"(the policy's run ended at tick {res.decisive_tick})"
    out = []
    for i, (n, s) in enumerate(zip(numbers, intervals, strict=True)):
        w = would.get(n)
        rec = recorded[i] if recorded is not None else None
        out.append(BacktestTick(
            tick=n, t0=s.t0, t1=s.t1, canary_weight=s.canary_weight, counts=_counts(s),
            decision=w["decision"] if w else None,
            reason=w["reason"] if w else ended,
            step=w["step"] if w else None, weight=w["weight"] if w else None,
            then_decision=(rec.decision or rec.action) if rec else None,
            then_reason=rec.reason if rec else None,
            then_weight=rec.weight_after if rec else None,
            checks=tuple(
                {k: c.get(k) for k in ("name", "outcome", "estimate", "ci", "evidence")}
                for c in (w["checks"] if w else [])
            ),
        ))
    for m in manual:
        at = m.t1 or m.scheduled_at
        out.append(BacktestTick(
            tick=m.seq, t0=m.t0 or at, t1=at, canary_weight=None, counts=_counts(None),
            decision=None, reason=f"(no data: {m.command} by hand, not a decision of the "
            "policy)", step=None, weight=None, then_decision=m.action, then_reason=m.reason,
            then_weight=m.weight_after, command=m.command,
        ))
    out.sort(key=lambda t: t.tick)
    return BacktestResult(policy.name, source, tuple(out), res.outcome, res.decisive_tick,
                          res.reason, then_outcome, tuple(notes), paused=res.paused)


def manual_commands(ticks: Sequence[TickRow]) -> list[TickRow]:
    """The recorded ticks where the engine applied a manual command (an ignored one, e.g. a
    resume of a running rollout, changed nothing and is left out)."""
    return [t for t in ticks if t.command and t.action != "ignored"]


def backtest_rollout(store: Store, rollout_id: int, policy: Policy | None = None) -> BacktestResult:
    """`policy` (default: the rollout's own) over a rollout recorded in the store."""
    rec = store.get(rollout_id)
    intervals = recorded_intervals(store, rollout_id)
    if not intervals:
        raise BacktestError(f"rollout {rec.name}#{rec.generation} (id {rollout_id}) has no "
                            "analysed ticks: nothing to backtest")
    policy = policy or rec.load_policy()
    # The engine's judge started from the stable's pre-rollout intervals (recorded with the
    # tick that created it) and picked its latency bounds on them; reuse both so the same
    # policy reproduces the record tick for tick.
    bounds = next((r.tick.judge_state.get("latency_bounds") for r in intervals
                   if r.tick.judge_state), None)
    return backtest_samples(
        policy, [r.samples for r in intervals], recorded=[r.tick for r in intervals],
        manual=manual_commands(store.ticks(rollout_id)),
        then_outcome=str(rec.phase), source=f"rollout {rec.name}#{rec.generation} (id {rec.id})",
        latency_bounds=bounds, baseline=baseline_samples(store, rollout_id),
    )


def with_address(policy: Policy, address: str) -> Policy:
    """The policy with its Prometheus source pointed at `address`."""
    spec = policy.spec.metrics
    if not isinstance(spec, PrometheusSource):
        raise BacktestError(
            f"policy {policy.name}: spec.metrics.source is {spec.source!r}; a Prometheus "
            "backtest needs `source: prometheus` with a preset or queries (the address can "
            "come from --prometheus)")
    doc = policy.model_dump(mode="json")
    doc["spec"]["metrics"]["address"] = address
    return Policy.model_validate(doc)


def tick_windows(policy: Policy, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The engine's windows from `start` to `end`: one tick per `analysis.interval`, windows
    tiling time (or the explicit `analysis.window` before each tick)."""
    a = policy.spec.analysis
    step = a.interval
    if end <= start:
        raise BacktestError(f"--end {iso(end)} is not after --start {iso(start)}")
    n = int((end - start) / step)
    if n < 1:
        raise BacktestError(f"the range {iso(start)}..{iso(end)} is shorter than one "
                            f"analysis interval ({step})")
    out = []
    for k in range(1, n + 1):
        t1 = start + k * step
        t0 = t1 - a.window if a.window is not None else t1 - step
        out.append((max(t0, start) if a.window is None else t0, t1))
    return out


def prometheus_intervals(
    policy: Policy,
    windows: Sequence[tuple[datetime, datetime]],
    weights: Sequence[float | None] | None = None,
) -> list[Samples]:
    """Fetch each window with the policy's Prometheus source. Unknown weights become the
    observed canary share of requests (percent, 0.1 resolution)."""
    from analyzer.sources.prometheus.source import PrometheusMetricSource, QueryCoalescer

    source = PrometheusMetricSource(policy, coalescer=QueryCoalescer())
    try:
        out = []
        for i, (t0, t1) in enumerate(windows):
            w = weights[i] if weights is not None else None
            s = source.fetch(t0, t1, canary_weight=w)
            if w is None and s.stable is not None and s.canary is not None:
                total = s.stable.requests + s.canary.requests
                if total > 0:
                    s = replace(s, canary_weight=round(100 * s.canary.requests / total, 1))
            out.append(s)
        return out
    finally:
        source.close()


def backtest_prometheus(
    policy: Policy,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    address: str | None = None,
    store: Store | None = None,
    rollout_id: int | None = None,
) -> BacktestResult:
    """`policy` over Prometheus history: the range `start`..`end`, or the windows of the
    recorded rollout `rollout_id` in `store` (then its weights and decisions are shown too)."""
    if address is not None:
        policy = with_address(policy, address)
    elif not isinstance(policy.spec.metrics, PrometheusSource):
        with_address(policy, "")  # raises the explanation
    addr = str(policy.spec.metrics.address)  # type: ignore[union-attr]
    if store is not None and rollout_id is not None:
        rec = store.get(rollout_id)
        recorded = recorded_intervals(store, rollout_id)
        if start is not None or end is not None:
            recorded = [r for r in recorded
                        if (start is None or r.samples.t0 >= start)
                        and (end is None or r.samples.t1 <= end)]
        if not recorded:
            raise BacktestError(f"rollout {rec.name}#{rec.generation} has no analysed ticks "
                                "in that range")
        intervals = prometheus_intervals(
            policy, [(r.samples.t0, r.samples.t1) for r in recorded],
            [r.samples.canary_weight for r in recorded])
        first, last = recorded[0].tick.seq, recorded[-1].tick.seq
        manual = [t for t in manual_commands(store.ticks(rollout_id)) if first < t.seq < last]
        base = baseline_samples(store, rollout_id)
        base = prometheus_intervals(policy, [(b.t0, b.t1) for b in base], [0.0] * len(base)) \
            if base else []
        return backtest_samples(
            policy, intervals, recorded=[r.tick for r in recorded], manual=manual,
            then_outcome=str(rec.phase),
            source=f"{addr} for rollout {rec.name}#{rec.generation} (id {rec.id})",
            baseline=[b for b in base if b.stable is not None],
        )
    if start is None or end is None:
        raise BacktestError("give --start and --end (or --db and --rollout)")
    intervals = prometheus_intervals(policy, tick_windows(policy, start, end))
    # the stable's traffic before the range, as the engine reads it before a rollout
    windows = baseline_windows(policy, start)
    base = prometheus_intervals(policy, windows, [0.0] * len(windows))
    return backtest_samples(
        policy, intervals, source=f"{addr} {iso(start)}..{iso(end)}",
        baseline=[b for b in base if b.stable is not None],
        notes=("router weights are not in Prometheus: canary_weight is the observed share of "
               "requests, so the sample-ratio check cannot fail",),
    )


def _counts(s: Samples | None) -> dict[str, int | None]:
    return {
        "stable_requests": s.stable.requests if s and s.stable else None,
        "stable_errors": s.stable.errors if s and s.stable else None,
        "canary_requests": s.canary.requests if s and s.canary else None,
        "canary_errors": s.canary.errors if s and s.canary else None,
    }


__all__ = [
    "BacktestError", "BacktestResult", "BacktestTick", "backtest_prometheus",
    "backtest_rollout", "backtest_samples", "manual_commands", "prometheus_intervals",
    "tick_windows", "with_address",
]
