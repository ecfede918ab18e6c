"""Absolute SLO thresholds (Flagger-style) that know what the stable version does in the same
window, with a failure limit.

Each tick compares one number (the canary's error rate in percent, or an interpolated latency
quantile in seconds) with a maximum, and looks at the stable version's same number:

- canary <= max: a pass; the consecutive-failure count resets;
- canary > max and stable <= max (or unknown): a failure; `failure_limit` consecutive failures
  make a regression (rollback);
- canary > max and stable > max: a shared breach, "stable breaches the SLO too": the service
  itself is above its SLO, which is not the canary's fault. With `when_stable_breaches="hold"`
  (the default) it neither counts as a failure nor resets the count, and it is not a pass (the
  step cannot be promoted on this tick); with "rollback" it counts as a failure, for SLOs that
  must hold whatever the cause.

Not a statistical test: no error probability is claimed. A canary that is worse than stable is
the ratio tests' job.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class ThresholdOutcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SHARED_BREACH = "shared-breach"
    NO_DATA = "no-data"


@dataclass(frozen=True)
class ThresholdResult:
    value: float | None  # the canary's value; None: nothing to measure this tick
    stable_value: float | None
    maximum: float
    outcome: ThresholdOutcome
    consecutive_failures: int
    failure_limit: int

    @property
    def failed(self) -> bool:
        """The failure limit is reached: a regression."""
        return self.consecutive_failures >= self.failure_limit


class ThresholdTracker:
    """Counts consecutive ticks where the canary alone exceeds `maximum`."""

    def __init__(self, maximum: float, failure_limit: int = 3,
                 when_stable_breaches: str = "hold") -> None:
        if when_stable_breaches not in ("hold", "rollback"):
            raise ValueError("when_stable_breaches must be 'hold' or 'rollback'")
        self.maximum = maximum
        self.failure_limit = failure_limit
        self.when_stable_breaches = when_stable_breaches
        self.failures = 0

    def update(self, value: float | None, stable_value: float | None = None) -> ThresholdResult:
        if value is None:
            outcome = ThresholdOutcome.NO_DATA
        elif value <= self.maximum:
            outcome = ThresholdOutcome.PASS
            self.failures = 0
        elif (stable_value is not None and stable_value > self.maximum
              and self.when_stable_breaches == "hold"):
            outcome = ThresholdOutcome.SHARED_BREACH
        else:
            outcome = ThresholdOutcome.FAIL
            self.failures += 1
        return ThresholdResult(value, stable_value, self.maximum, outcome, self.failures,
                               self.failure_limit)

    def to_state(self) -> dict[str, Any]:
        return {"failures": self.failures}

    def load_state(self, state: dict[str, Any]) -> None:
        self.failures = int(state["failures"])
