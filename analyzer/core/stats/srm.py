"""Sample-ratio mismatch: does the canary receive the share of requests its weight promises?

The count machinery again, on requests instead of errors: in each interval the "exposures" are
the weights (w, 100 - w) and the "events" are the requests each version served. Conditional on
the interval's total requests, the canary's requests are Binomial(n, pi(r)) with
pi(r) = w r / (w r + 100 - w); r = 1 when routing works. Two one-sided mixture e-values test
r <= 1 + tolerance (the canary gets too much) and r >= 1 / (1 + tolerance) (too little), each
at half the level. Intervals at weight 0 or 100 (mirroring, previews, full promotion) carry no
information. A mismatch only holds the rollout: analysis of a wrongly routed canary is not
trusted, but it is no proof that the canary is bad.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from analyzer.core.stats.counts import CountTest


@dataclass(frozen=True)
class SrmResult:
    mismatch: bool
    observed_share: float | None  # canary's share of requests so far (percent)
    expected_share: float | None  # the weight (percent) of the latest informative interval
    e_value: float  # the larger of the two one-sided e-values (each tested at 2/alpha)
    threshold: float
    ratio_estimate: float | None


class SampleRatioTest:
    """Sequential SRM test for one step; build a fresh one when the weight changes."""

    def __init__(self, alpha: float = 0.01, tolerance: float = 0.2) -> None:
        self.alpha = alpha
        self.tolerance = tolerance
        self.test = CountTest(tolerance, alpha, r_down=1 / (1 + tolerance))
        self.canary_requests = 0
        self.total_requests = 0
        self.last_weight: float | None = None

    def update(self, canary_requests: int, stable_requests: int, weight: float | None) -> SrmResult:
        if weight is not None and 0 < weight < 100:
            self.test.update(weight, canary_requests, 100 - weight, stable_requests)
            self.canary_requests += canary_requests
            self.total_requests += canary_requests + stable_requests
            self.last_weight = weight
        return self.result()

    def result(self) -> SrmResult:
        thr = 2 / self.alpha
        if self.total_requests == 0:
            return SrmResult(False, None, self.last_weight, 1.0, thr, None)
        r = self.test.result()
        e = max(r.e_regression, r.e_noninferiority)
        est = r.estimate if math.isfinite(r.estimate) else None
        return SrmResult(
            mismatch=e >= thr,
            observed_share=100 * self.canary_requests / self.total_requests,
            expected_share=self.last_weight,
            e_value=e,
            threshold=thr,
            ratio_estimate=est,
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "tolerance": self.tolerance,
            "test": self.test.to_state(),
            "canary_requests": self.canary_requests,
            "total_requests": self.total_requests,
            "last_weight": self.last_weight,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SampleRatioTest:
        t = cls(state["alpha"], state["tolerance"])
        t.test = CountTest.from_state(state["test"])
        t.canary_requests = state["canary_requests"]
        t.total_requests = state["total_requests"]
        t.last_weight = state["last_weight"]
        return t
