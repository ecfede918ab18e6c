"""Absolute SLO thresholds on the canary alone (Flagger-style), with a failure limit.

Each tick compares one number (the canary's error rate in percent, or an interpolated latency
quantile in seconds) with a maximum. `failure_limit` consecutive failures make a regression;
a passing tick resets the count. Fixed thresholds ignore what the stable version does in the
same window, which is why they complement, not replace, the sequential comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ThresholdResult:
    value: float | None  # None: nothing to measure this tick
    maximum: float
    passed: bool | None
    consecutive_failures: int
    failure_limit: int

    @property
    def failed(self) -> bool:
        """The failure limit is reached: a regression."""
        return self.consecutive_failures >= self.failure_limit


class ThresholdTracker:
    """Counts consecutive ticks where the value exceeds `maximum`."""

    def __init__(self, maximum: float, failure_limit: int = 3) -> None:
        self.maximum = maximum
        self.failure_limit = failure_limit
        self.failures = 0

    def update(self, value: float | None) -> ThresholdResult:
        passed: bool | None = None
        if value is not None:
            passed = value <= self.maximum
            self.failures = 0 if passed else self.failures + 1
        return ThresholdResult(value, self.maximum, passed, self.failures, self.failure_limit)

    def to_state(self) -> dict[str, Any]:
        return {"failures": self.failures}

    def load_state(self, state: dict[str, Any]) -> None:
        self.failures = int(state["failures"])
