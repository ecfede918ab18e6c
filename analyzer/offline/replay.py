"""A policy's checks and judge over recorded intervals, tick by tick: what `canary replay` and
`canary backtest` run. Pure: no I/O, no clock (each interval carries its own times).

A promote decision advances the policy's step (reaching the last step, normally 100%, is a full
promotion); the data's `canary_weight` is what the canary really received. Pause steps are
skipped (nobody is there to resume them). The rollout ends at a rollback, a pause
(onInconclusive or onDataFailure set to pause: "inconclusive"), a full promotion, or the end of
the data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from analyzer.core.judge import Judge
from analyzer.core.types import Action, Decision
from analyzer.policy import Policy
from analyzer.sources.replay import ReplayLine
from analyzer.util.times import iso


def _clean(x: Any) -> Any:
    """Strict JSON: non-finite numbers become null (an unbounded interval end)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


@dataclass
class ReplayResult:
    """One file's run. Ticks are numbered as the engine numbered them (`canary history`'s
    TICK: each line's `tick`, which `canary export` writes), else by position in the file.
    `decisive_tick` is the tick of the rollback, of the full promotion or of the judge's pause
    (the last promotion's when the data ended first; None when nothing was decided)."""

    file: str
    ticks: list[dict[str, Any]] = field(default_factory=list)
    outcome: str = "inconclusive"
    decisive_tick: int | None = None
    reason: str = ""
    paused: bool = False  # the judge paused (onInconclusive / onDataFailure: pause)

    def final(self) -> dict[str, Any]:
        """The summary line of `canary replay --json` (strict JSON)."""
        return _clean({
            "file": self.file,
            "final": True,
            "outcome": self.outcome,
            "ticks": self.decisive_tick,
            "total_ticks": len(self.ticks),
            "reason": self.reason,
        })

    def summary(self) -> str:
        """The outcome in words, e.g. "rolled_back at tick 32" (the tools print this)."""
        return outcome_text(self.outcome, self.decisive_tick, [t["tick"] for t in self.ticks],
                            paused=self.paused)


def outcome_text(outcome: str, decisive_tick: int | None, ticks: list[int], *,
                 paused: bool = False) -> str:
    """A run's outcome with the engine's tick numbers: "rolled_back at tick 32 (analysed ticks
    2-32)", "inconclusive: no rollback or full promotion in 34 analysed tick(s) (2-40)"."""
    if not ticks:
        return f"{outcome}: nothing analysed"
    numbers = str(ticks[0]) if len(ticks) == 1 else f"{ticks[0]}-{ticks[-1]}"
    analysed = f"analysed tick{'s' if len(ticks) > 1 else ''} {numbers}"
    if outcome in ("rolled_back", "promoted") and decisive_tick is not None:
        return f"{outcome} at tick {decisive_tick} ({analysed})"
    if paused and decisive_tick is not None:
        return f"{outcome}: paused at tick {decisive_tick} ({analysed})"
    last = f"; last promotion at tick {decisive_tick}" if decisive_tick is not None else ""
    return (f"{outcome}: no rollback or full promotion in {len(ticks)} analysed tick(s) "
            f"({numbers}){last}")


def replay_rollout(policy: Policy, lines: list[ReplayLine], file: str, *,
                   latency_bounds: Mapping[str, float | None] | None = None) -> ReplayResult:
    """Run one recorded rollout through a fresh Judge (pure: no I/O).

    Baseline lines (the stable's traffic before the rollout) go to the judge's baseline, as in
    the engine: its burst estimates, and the latency bounds. Without them the latency bounds
    are picked on the first window's stable traffic (which the latency tests then leave out).
    `latency_bounds`, when it has one for every latency test, wins: a backtest of a recorded
    rollout passes the engine's.

    Each tick's `step` is the policy's step as the engine numbers it (1-based, pause steps
    counted: the dashboard's "step 3 of 5"), `tick` the line's tick number or its position
    among the analysed lines."""
    plan = policy.spec.strategy.weight_steps()
    positions = [i for i, s in enumerate(plan) if isinstance(s, int)]
    steps = [s for s in plan if isinstance(s, int)]
    judge = Judge(policy)
    baseline = [ln.samples.stable for ln in lines if ln.baseline and ln.samples.stable]
    lines = [ln for ln in lines if not ln.baseline]
    if latency_bounds:
        judge.use_latency_bounds(latency_bounds)
    judge.set_baseline(None, baseline)
    idx = 0
    judge.start_step(lines[0].samples.t0, steps[0], step=positions[0])
    out = ReplayResult(file)
    for position, ln in enumerate(lines, start=1):
        tick = ln.tick if ln.tick is not None else position
        s = ln.samples
        d: Decision = judge.evaluate(s, s.t1)
        out.ticks.append(
            _clean({
                "file": file,
                "tick": tick,
                "line": ln.line,
                "t": iso(s.t1),
                "decision": str(d.action),
                "step": positions[idx] + 1,
                "weight": steps[idx],
                "canary_weight": s.canary_weight,
                "reason": d.reason,
                "time_needed_seconds": d.time_needed_seconds,
                "checks": [
                    {k: v.to_json()[k] for k in ("name", "outcome", "estimate", "ci", "evidence",
                                                  "evidence_kind", "threshold", "reason")}
                    for v in d.verdicts
                ],
            })
        )
        if d.action == Action.ROLLBACK:
            out.outcome, out.decisive_tick, out.reason = "rolled_back", tick, d.reason
            return out
        if d.action == Action.PAUSE:
            out.outcome, out.decisive_tick, out.reason = "inconclusive", tick, d.reason
            out.paused = True
            return out
        if d.action == Action.PROMOTE:
            out.decisive_tick = tick
            idx += 1
            if (idx >= len(steps) - 1 and steps[-1] == 100) or idx >= len(steps):
                out.outcome, out.reason = "promoted", d.reason
                return out
            judge.start_step(s.t1, steps[idx], step=positions[idx])
    out.reason = out.reason or "the data ended before a decision"
    return out
