"""What the demo shows: the live view of both rollouts (rich Live on a terminal, one line per
decision otherwise), the results, and the final summary table.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from analyzer.core.rollout import Phase
from analyzer.core.stats.latency import add_histograms, interpolate_quantile
from analyzer.core.types import Decision, Histogram, Samples, VersionSample
from analyzer.daemon.engine import TickOutcome
from analyzer.demo.loadgen import TargetStats
from analyzer.policy import Policy

# --------------------------------------------------------------------------- the view


@dataclass
class RolloutView:
    """What the terminal shows of one rollout (updated after every tick)."""

    policy: Policy
    expected: Phase
    rollout_id: int = 0
    phase: Phase = Phase.PENDING
    weight: int = 0
    step: int = 0
    decision: Decision | None = None
    action: str = "-"  # what the last tick did: start, hold, promote, rollback, ...
    reason: str = "waiting for the first tick"
    recent: deque[Samples] = field(default_factory=lambda: deque(maxlen=5))
    analysed: list[Samples] = field(default_factory=list)  # every analysed window
    started: float = 0.0
    finished: float | None = None

    def observe(self, out: TickOutcome) -> None:
        t = out.transition
        if t is not None:
            self.phase = t.after.phase
            self.weight = t.after.weight
            self.step = t.after.step
            self.reason = t.reason
            self.action = t.action
        if out.decision is not None:
            self.decision = out.decision
        if out.samples is not None and out.samples.ok:
            self.recent.append(out.samples)
            self.analysed.append(out.samples)

    def version_figures(self, role: str, whole: bool = False
                        ) -> tuple[float | None, float | None, float | None]:
        """(requests/s, error rate, p99 in seconds) over the last few windows, or over every
        window the rollout analysed (`whole`)."""
        return _figures(self.analysed if whole else self.recent, role)

    def seconds(self, whole: bool = False) -> float:
        """The time the figures cover: the last few windows, or every analysed window."""
        return sum((s.t1 - s.t0).total_seconds() for s in (self.analysed if whole
                                                            else self.recent))


def _figures(windows: Iterable[Samples], role: str
             ) -> tuple[float | None, float | None, float | None]:
    """(requests/s, error rate, p99 in seconds) of one version over `windows`."""
    n = errors = 0
    hist: Histogram | None = None
    seconds = 0.0
    for s in windows:
        v: VersionSample | None = getattr(s, role)
        seconds += (s.t1 - s.t0).total_seconds()
        if v is None:
            continue
        n += v.requests
        errors += v.errors
        hist = add_histograms(hist, v.latency)
    rate = n / seconds if seconds > 0 else None
    err = errors / n if n else None
    p99 = interpolate_quantile(hist, 0.99) if hist is not None and hist.total else None
    return rate, err, p99


def _fmt(x: float | None, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "inf"
    return format(x, spec)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{1000 * x:.0f} ms"


_PHASE_STYLE = {
    Phase.SUCCEEDED: "bold green", Phase.ROLLED_BACK: "bold red", Phase.FAILED: "bold red",
    Phase.PAUSED: "yellow", Phase.PROGRESSING: "cyan", Phase.PROMOTING: "green",
    Phase.PENDING: "dim",
}
_ACTION_STYLE = {"promote": "green", "succeed": "bold green", "rollback": "bold red",
                 "fail": "bold red", "hold": "yellow", "pause": "yellow", "start": "cyan"}


class DemoView:
    """The live terminal view: a header and one panel per rollout."""

    def __init__(self, rollouts: list[RolloutView], mode: str, clock: Callable[[], float]) -> None:
        self.rollouts = rollouts
        self.mode = mode
        self.clock = clock
        self.status = "starting"

    def __rich__(self) -> RenderableType:
        elapsed = self.clock()
        head = Text.assemble(("Canary Analyzer demo", "bold"), "  ", (self.mode, "magenta"),
                             f"  [{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] ",
                             (self.status, "dim"))
        return Group(head, *(self.panel(r) for r in self.rollouts))

    def panel(self, r: RolloutView) -> Panel:
        t = r.policy.spec.target
        steps = [s for s in r.policy.spec.strategy.weight_steps() if isinstance(s, int)]
        bar_len = 20
        filled = round(bar_len * r.weight / 100)
        top = Text.assemble(
            ("phase ", "dim"), (str(r.phase), _PHASE_STYLE.get(r.phase, "")),
            ("   weight ", "dim"), ("█" * filled, "cyan"), ("░" * (bar_len - filled), "dim"),
            f" {r.weight:3d}%", ("   steps ", "dim"), "→".join(str(w) for w in steps) + "%",
        )
        # The last few windows move with every tick; beside them, the whole rollout so far
        # (a canary's last window alone can look worse, or better, than it is).
        versions = Table(box=None, pad_edge=False, show_edge=False, expand=False)
        for col in ("version", "over", "req/s", "error rate", "p99"):
            versions.add_column(col, justify="right" if col in ("req/s", "error rate", "p99")
                                else "left", style="bold" if col == "version" else None)
        spans = ((False, f"last {r.seconds():.0f}s"),
                 (True, f"whole rollout ({r.seconds(whole=True):.0f}s)"))
        for role, name in (("stable", t.stable), ("canary", t.canary)):
            for k, (whole, label) in enumerate(spans):
                rate, err, p99 = r.version_figures(role, whole=whole)
                versions.add_row(f"{name} ({role})" if k == 0 else "", label,
                                 _fmt(rate, ".0f"), _pct(err), _ms(p99))
        checks = Table(box=None, pad_edge=False, show_edge=False)
        for col in ("check", "outcome", "estimate [CI]", "evidence"):
            checks.add_column(col)
        if r.decision is not None:
            for v in r.decision.verdicts:
                ci = v.confidence_interval
                est = _fmt(v.estimate)
                if ci is not None:
                    est += f" [{_fmt(ci.low)}, {_fmt(ci.high)}]"
                ev = _evidence(v.details, v.evidence, v.evidence_kind, v.threshold)
                style = {"regression": "red", "ok": "green"}.get(str(v.outcome), "yellow")
                checks.add_row(v.check, Text(str(v.outcome), style=style), est, ev)
        sentence = Text.assemble(("decision ", "dim"),
                                 (r.action.upper(), _ACTION_STYLE.get(r.action, "")), ": ",
                                 r.reason)
        title = (f"[bold]{r.policy.name}[/]  {t.service} {t.stable} → {t.canary}  "
                 f"[dim](expected: {'promote' if r.expected is Phase.SUCCEEDED else 'roll back'})"
                 "[/]")
        return Panel(Group(top, versions, checks, sentence), title=title, title_align="left",
                     border_style=_PHASE_STYLE.get(r.phase, "white").replace("bold ", ""))


def _evidence(details: dict[str, Any], evidence: float | None, kind: str | None,
              threshold: float | None) -> str:
    if "e_regression" in details:
        need = f", need {_fmt(threshold)}" if threshold else ""
        ok = details.get("e_ok", details.get("e_noninferiority"))
        return f"regression e={_fmt(details['e_regression'], '.2g')}, ok e={_fmt(ok, '.2g')}{need}"
    if evidence is None:
        return "-"
    return f"{kind or 'evidence'} {_fmt(evidence)}"


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class RolloutResult:
    name: str
    rollout_id: int
    phase: Phase
    expected: Phase
    weight: int
    seconds: float  # from the first tick to the end (simulated seconds in simulated mode)
    ticks: int
    reason: str
    report: Path | None
    report_error: str | None

    @property
    def as_expected(self) -> bool:
        return self.phase is self.expected


@dataclass(frozen=True)
class DemoResult:
    mode: str  # "real" or "simulated"
    mode_reason: str | None  # why simulated
    rollouts: tuple[RolloutResult, ...]
    seconds: float  # wall clock, set-up to tear-down
    out_dir: Path
    db_url: str
    load: dict[str, TargetStats]
    interrupted: bool = False
    dashboard_url: str | None = None  # served while the demo ran

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(r.as_expected for r in self.rollouts)


SUMMARY_COLUMNS = ("rollout", "outcome", "expected", "weight", "took", "ticks")


def summary_title(result: DemoResult) -> str:
    return f"canary demo ({result.mode}) finished in {result.seconds:.0f}s"


def summary_rows(result: DemoResult) -> list[list[str | Text]]:
    """The end-of-demo table's rows (SUMMARY_COLUMNS): outcome per rollout against the
    expected one, time, ticks."""
    return [[r.name, Text(str(r.phase), style="green" if r.as_expected else "red"),
             str(r.expected), f"{r.weight}%", f"{r.seconds:.0f}s", str(r.ticks)]
            for r in result.rollouts]
