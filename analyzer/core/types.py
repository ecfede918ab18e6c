"""Core data types shared by every layer: samples in, verdicts and decisions out.

All are frozen dataclasses. Result objects follow the `scipy.stats` convention: named
attributes, never bare tuples. Nothing here does I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class Histogram:
    """A latency histogram as Prometheus reports it: cumulative counts per upper bound `le`.

    `le` is strictly increasing and ends with `math.inf`; `counts` is non-decreasing and
    `counts[-1]` is the total number of observations. Units are seconds.
    """

    le: tuple[float, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.le) != len(self.counts):
            raise ValueError(
                f"histogram has {len(self.le)} bounds but {len(self.counts)} counts"
            )
        if not self.le or not math.isinf(self.le[-1]) or self.le[-1] < 0:
            raise ValueError("histogram bounds must end with +Inf")
        if not all(math.isfinite(b) for b in self.le[:-1]):
            raise ValueError(f"histogram bounds must be finite numbers before the last (+Inf): "
                             f"{list(self.le)}")
        if any(b >= a for a, b in zip(self.le[1:], self.le[:-1], strict=False)):
            raise ValueError(f"histogram bounds must increase strictly: {list(self.le)}")
        if any(c < 0 for c in self.counts):
            raise ValueError("histogram counts must be non-negative")
        if any(b < a for a, b in zip(self.counts[:-1], self.counts[1:], strict=False)):
            raise ValueError(
                f"histogram counts must be cumulative (non-decreasing): {list(self.counts)}"
            )

    @property
    def total(self) -> int:
        return self.counts[-1]

    def count_above(self, bound: float) -> int:
        """Observations strictly slower than `bound` (`bound` must be one of `le`)."""
        idx = self.le.index(bound)
        return self.total - self.counts[idx]

    def to_json(self) -> dict[str, Any]:
        return {
            "le": ["+Inf" if math.isinf(b) else b for b in self.le],
            "counts": list(self.counts),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Histogram:
        le = tuple(math.inf if str(b) in ("+Inf", "Inf", "inf") else float(b) for b in data["le"])
        return cls(le=le, counts=tuple(int(c) for c in data["counts"]))


@dataclass(frozen=True)
class VersionSample:
    """One version's traffic in one interval: exact integer counts for that interval only."""

    requests: int
    errors: int
    latency: Histogram | None = None

    def __post_init__(self) -> None:
        if self.requests < 0 or self.errors < 0:
            raise ValueError("request and error counts must be non-negative")
        if self.errors > self.requests:
            raise ValueError(f"errors ({self.errors}) exceed requests ({self.requests})")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"requests": self.requests, "errors": self.errors}
        if self.latency is not None:
            out["latency"] = self.latency.to_json()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VersionSample:
        lat = data.get("latency")
        return cls(
            requests=int(data["requests"]),
            errors=int(data["errors"]),
            latency=Histogram.from_json(lat) if lat else None,
        )


@dataclass(frozen=True)
class Samples:
    """What a metric source returns for one window [t0, t1).

    `stable`/`canary` are None when that version had no series at all. When the source could
    not get trustworthy data, `no_data_reason` says why (and `queries` what was asked): the
    judge then holds and never promotes. A source never invents zeros.
    """

    t0: datetime
    t1: datetime
    stable: VersionSample | None
    canary: VersionSample | None
    canary_weight: float | None = None
    no_data_reason: str | None = None
    queries: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.no_data_reason is None

    def to_json(self) -> dict[str, Any]:
        return {
            "t": self.t1.isoformat().replace("+00:00", "Z"),
            "t0": self.t0.isoformat().replace("+00:00", "Z"),
            "canary_weight": self.canary_weight,
            "stable": self.stable.to_json() if self.stable else None,
            "canary": self.canary.to_json() if self.canary else None,
            "no_data_reason": self.no_data_reason,
            "queries": list(self.queries),
        }


class Outcome(StrEnum):
    """A check's verdict at one tick."""

    REGRESSION = "regression"
    OK = "ok"  # non-inferior: the canary is shown to be no worse than the tolerance
    INCONCLUSIVE = "inconclusive"
    NO_DATA = "no-data"


@dataclass(frozen=True)
class ConfidenceInterval:
    low: float
    high: float


@dataclass(frozen=True)
class Verdict:
    """One check at one tick.

    `estimate` is the effect (e.g. canary/stable error-rate ratio), `confidence_interval` its
    interval (anytime-valid for sequential checks), `evidence` the e-value or p-value and
    `evidence_kind` which ("e-value", "p-value", "failures"), `reason` one human sentence.
    """

    check: str
    outcome: Outcome
    reason: str
    estimate: float | None = None
    confidence_interval: ConfidenceInterval | None = None
    evidence: float | None = None
    evidence_kind: str | None = None
    threshold: float | None = None
    sample_sizes: dict[str, int] = field(default_factory=dict)
    gating: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        ci = self.confidence_interval
        return {
            "name": self.check,
            "outcome": str(self.outcome),
            "estimate": _finite_or_none(self.estimate),
            "ci": [_finite_or_none(ci.low), _finite_or_none(ci.high)] if ci else None,
            "evidence": _finite_or_none(self.evidence),
            "evidence_kind": self.evidence_kind,
            "threshold": _finite_or_none(self.threshold),
            "sample_sizes": dict(self.sample_sizes),
            "gating": self.gating,
            "reason": self.reason,
            "details": self.details,
        }


class Action(StrEnum):
    """What the judge asks the rollout to do."""

    PROMOTE = "promote"
    HOLD = "hold"
    ROLLBACK = "rollback"
    PAUSE = "pause"  # needs a human


@dataclass(frozen=True)
class Decision:
    """The judge's answer for one tick, with the verdicts behind it and a readable sentence."""

    action: Action
    reason: str
    verdicts: tuple[Verdict, ...] = ()
    time_needed_seconds: float | None = None  # power estimate shown with `hold`

    def to_json(self) -> dict[str, Any]:
        return {
            "decision": str(self.action),
            "reason": self.reason,
            "checks": [v.to_json() for v in self.verdicts],
            "time_needed_seconds": self.time_needed_seconds,
        }


def _finite_or_none(x: float | None) -> float | None:
    if x is None:
        return None
    if math.isnan(x):
        return None
    if math.isinf(x):
        return x  # json.dumps writes Infinity; callers that need strict JSON convert
    return float(x)
