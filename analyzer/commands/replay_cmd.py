"""`canary replay POLICY DATA.jsonl [MORE ...] [--json]`: run a policy's checks and judge over
recorded intervals, with no Prometheus and no router.

Each file is one rollout. A promote decision advances the policy's step (reaching the last
step, normally 100%, is a full promotion); the data's `canary_weight` is what the canary really
received and is what the sample-ratio check compares against. Pause steps are skipped (nobody
is there to resume them). The rollout ends at a rollback, a pause (onInconclusive or
onDataFailure set to pause: "inconclusive"), a full promotion, or the end of the data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from analyzer.cli import app
from analyzer.commands import load_policy_or_exit
from analyzer.judge import Judge
from analyzer.metrics.replay import ReplayError, ReplayLine, read_replay
from analyzer.policy import Policy
from analyzer.types import Action, Decision


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
    file: str
    ticks: list[dict[str, Any]] = field(default_factory=list)
    outcome: str = "inconclusive"
    decisive_tick: int = 0
    reason: str = ""

    def final(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "final": True,
            "outcome": self.outcome,
            "ticks": self.decisive_tick,
            "total_ticks": len(self.ticks),
            "reason": self.reason,
        }


def replay_rollout(policy: Policy, lines: list[ReplayLine], file: str, *,
                   latency_bounds: Mapping[str, float | None] | None = None) -> ReplayResult:
    """Run one recorded rollout through a fresh Judge (pure: no I/O).

    Latency bounds are picked on the first window's stable traffic (which the latency tests
    then leave out), unless `latency_bounds` gives one for every latency test: a backtest of a
    recorded rollout passes the engine's, picked on its pre-rollout baseline."""
    steps = [s for s in policy.spec.strategy.weight_steps() if isinstance(s, int)]
    judge = Judge(policy)
    if not (latency_bounds and judge.use_latency_bounds(latency_bounds)):
        judge.set_baseline(None)
    idx = 0
    judge.start_step(lines[0].samples.t0, steps[0])
    out = ReplayResult(file)
    for tick, ln in enumerate(lines, start=1):
        s = ln.samples
        d: Decision = judge.evaluate(s, s.t1)
        out.ticks.append(
            _clean({
                "file": file,
                "tick": tick,
                "line": ln.line,
                "t": s.t1.isoformat().replace("+00:00", "Z"),
                "decision": str(d.action),
                "step": idx + 1,
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
            out.outcome, out.reason = "inconclusive", d.reason
            return out
        if d.action == Action.PROMOTE:
            out.decisive_tick = tick
            idx += 1
            if (idx >= len(steps) - 1 and steps[-1] == 100) or idx >= len(steps):
                out.outcome, out.reason = "promoted", d.reason
                return out
            judge.start_step(s.t1, steps[idx])
    out.reason = out.reason or "the data ended before a decision"
    return out


def _table(console: Console, res: ReplayResult) -> None:
    table = Table(title=f"{res.file}", show_lines=True, expand=True)
    for col in ("tick", "time", "step", "weight", "data %", "decision"):
        table.add_column(col, no_wrap=True)
    table.add_column("reason", overflow="fold", ratio=1)
    colors = {"rollback": "red", "promote": "green", "pause": "yellow", "hold": "white"}
    for t in res.ticks:
        c = colors.get(t["decision"], "white")
        table.add_row(
            str(t["tick"]), t["t"][11:19], str(t["step"]), f"{t['weight']}%",
            "" if t["canary_weight"] is None else f"{t['canary_weight']:g}%",
            f"[{c}]{t['decision']}[/{c}]", t["reason"],
        )
    console.print(table)
    console.print(f"outcome: [bold]{res.outcome}[/bold] (tick {res.decisive_tick} of "
                  f"{len(res.ticks)})")


@app.command()
def replay(
    policy_file: Path = typer.Argument(..., metavar="POLICY", help="the rollout policy (YAML)"),
    data: list[Path] = typer.Argument(
        ..., metavar="DATA.jsonl...", help="recorded intervals, one JSON object per line"
    ),
    as_json: bool = typer.Option(
        False, "--json", help="one JSON object per tick, then a final object per file"
    ),
) -> None:
    """Run a policy's checks and judge over recorded intervals (no Prometheus, no router)."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    policy = load_policy_or_exit(policy_file)
    loaded = []
    for f in data:
        try:
            loaded.append((f, read_replay(f)))
        except ReplayError as e:
            err.print(f"[red]error[/red] {e}")
            err.print("expected one JSON object per line: "
                      '{"t": ..., "canary_weight": ..., "stable": {"requests": ..., '
                      '"errors": ...}, "canary": {...}} (see docs/statistics.md)')
            raise typer.Exit(1) from None
    console = Console(highlight=False)
    for f, lines in loaded:
        res = replay_rollout(policy, lines, str(f))
        if as_json:
            for t in res.ticks:
                typer.echo(json.dumps(t))
            typer.echo(json.dumps(_clean(res.final())))
        else:
            _table(console, res)
