"""A rollout's ticks as plottable series: weight, each version's error rate and latency
quantiles, each check's estimate with its confidence sequence and its evidence against the
threshold, and the decisions to mark.

One implementation for the two places that draw them: the HTML report (offline/report.py,
matplotlib) and the dashboard (api/ serves `RolloutSeries.to_json()`, the browser draws SVG).
Times are the ends of the analysed windows; a value that a tick did not have is NaN (`null` in
JSON).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from analyzer.core.stats.latency import interpolate_quantile
from analyzer.core.types import Histogram
from analyzer.daemon.store import TickRow
from analyzer.util.fmt import fmt_tolerance
from analyzer.util.times import iso

#: the decisions a chart marks (a manual command's action counts as its decision)
MARKED_DECISIONS = ("promote", "rollback", "pause")
#: latency quantiles estimated per version and tick
QUANTILES = (0.5, 0.9, 0.99)
VERSIONS = ("stable", "canary")
#: the judge's sample-ratio check: its estimate is the canary's share of requests in percent
SAMPLE_RATIO = "sample-ratio"


def histogram_quantile(hist: dict[str, Any] | None, q: float) -> float | None:
    """Quantile `q` of a histogram as stored with a tick (`{"le": [...], "counts": [...]}`),
    interpolated inside its bucket (an estimate); None when empty."""
    if not hist:
        return None
    return interpolate_quantile(Histogram.from_json(hist), q)


@dataclass
class CheckSeries:
    """One check over time: estimate and confidence sequence, evidence and its threshold."""

    name: str
    kind: str | None = None  # evidence kind: e-value, p-value, failures
    t: list[datetime] = field(default_factory=list)
    est: list[float] = field(default_factory=list)
    lo: list[float] = field(default_factory=list)
    hi: list[float] = field(default_factory=list)
    evidence: list[float] = field(default_factory=list)
    e_ok: list[float] = field(default_factory=list)  # non-inferiority e-value, when reported
    threshold: float | None = None
    tolerance_ratio: float | None = None
    #: what the estimate should be: the router's weight at each tick (sample-ratio check)
    expected: list[float] = field(default_factory=list)

    @property
    def estimate_label(self) -> str:
        """The estimate's axis label."""
        if self.name == SAMPLE_RATIO:
            return "canary share of requests (%)"
        if self.kind == "e-value" and self.tolerance_ratio is not None:
            return "canary / stable"
        if self.kind == "failures":
            return "canary value"
        return "estimate"

    @property
    def tolerance_label(self) -> str | None:
        """The tolerance line's label as the policy writes it: "1 + tolerance 1 = 2"."""
        if self.tolerance_ratio is None:
            return None
        return fmt_tolerance(self.tolerance_ratio - 1)

    @property
    def evidence_label(self) -> str:
        """The evidence series' legend."""
        if self.name == SAMPLE_RATIO:
            return "sample-ratio mismatch e-value"
        return {"e-value": "regression e-value", "p-value": "p-value (fixed horizon)",
                "failures": "consecutive failures"}.get(self.kind or "", "evidence")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "t": [iso(t) for t in self.t],
            "estimate": _json_floats(self.est), "low": _json_floats(self.lo),
            "high": _json_floats(self.hi), "evidence": _json_floats(self.evidence),
            "e_ok": _json_floats(self.e_ok), "threshold": _json_float(self.threshold),
            "tolerance_ratio": _json_float(self.tolerance_ratio),
            "expected": _json_floats(self.expected), "estimate_label": self.estimate_label,
            "evidence_label": self.evidence_label, "tolerance_label": self.tolerance_label,
        }


@dataclass
class RolloutSeries:
    """A rollout's ticks as plottable series (times are the ends of the analysed windows)."""

    t: list[datetime] = field(default_factory=list)
    seq: list[int] = field(default_factory=list)
    weight: list[int] = field(default_factory=list)
    err: dict[str, list[float]] = field(default_factory=lambda: {v: [] for v in VERSIONS})
    #: latency in ms per quantile (0.5, 0.9, 0.99), then per version
    latency: dict[float, dict[str, list[float]]] = field(
        default_factory=lambda: {q: {v: [] for v in VERSIONS} for q in QUANTILES})
    checks: dict[str, CheckSeries] = field(default_factory=dict)
    decisions: list[tuple[datetime, str]] = field(default_factory=list)

    @property
    def p50(self) -> dict[str, list[float]]:
        return self.latency[0.5]

    @property
    def p99(self) -> dict[str, list[float]]:
        return self.latency[0.99]

    def to_json(self) -> dict[str, Any]:
        return {
            "t": [iso(t) for t in self.t],
            "seq": list(self.seq),
            "weight": list(self.weight),
            "error_rate_percent": {v: _json_floats(xs) for v, xs in self.err.items()},
            "latency_ms": {f"p{round(q * 100)}": {v: _json_floats(xs) for v, xs in by.items()}
                           for q, by in self.latency.items()},
            "checks": [c.to_json() for c in self.checks.values()],
            "decisions": [{"t": iso(t), "decision": d} for t, d in self.decisions],
        }


def rollout_series(ticks: list[TickRow]) -> RolloutSeries:
    """Series for the plots from a rollout's ticks (`store.ticks(rollout_id)`)."""
    out = RolloutSeries()
    for tick in ticks:
        t = tick.t1 or tick.scheduled_at
        out.t.append(t)
        out.seq.append(tick.seq)
        out.weight.append(tick.weight_after)
        samples = tick.samples or {}
        for version in VERSIONS:
            v = samples.get(version) or {}
            req, err = v.get("requests"), v.get("errors")
            out.err[version].append(100 * err / req if req else math.nan)
            for q, by_version in out.latency.items():
                est = histogram_quantile(v.get("latency"), q)
                by_version[version].append(1000 * est if est is not None else math.nan)
        for verdict in tick.verdicts or []:
            c = out.checks.setdefault(verdict["name"], CheckSeries(verdict["name"]))
            ci = verdict.get("ci") or [None, None]
            details = verdict.get("details") or {}
            c.kind = verdict.get("evidence_kind") or c.kind
            c.t.append(t)
            c.est.append(_num(verdict.get("estimate")))
            c.lo.append(_num(ci[0]))
            c.hi.append(_num(ci[1]))
            c.evidence.append(_num(details.get("e_regression", verdict.get("evidence"))
                                   if c.kind == "e-value" else verdict.get("evidence")))
            c.e_ok.append(_num(details.get("e_ok", details.get("e_noninferiority"))))
            if c.name == SAMPLE_RATIO:
                weight = samples.get("canary_weight")
                c.expected.append(_num(weight if weight is not None else tick.weight_before))
            if verdict.get("threshold") is not None:
                c.threshold = _num(verdict["threshold"])
            if details.get("tolerance_ratio") is not None:
                c.tolerance_ratio = _num(details["tolerance_ratio"])
        decision = tick.decision or (tick.command and tick.action)
        if decision in MARKED_DECISIONS:
            out.decisions.append((t, str(decision)))
    return out


def _num(x: Any) -> float:
    try:
        return float(x) if x is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _json_float(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _json_floats(xs: list[float]) -> list[float | None]:
    return [_json_float(x) for x in xs]


__all__ = ["CheckSeries", "RolloutSeries", "histogram_quantile", "rollout_series"]
