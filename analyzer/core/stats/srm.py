"""Sample-ratio mismatch: does the canary receive the share of requests its weight promises?

The count likelihood again, on requests instead of errors: in each interval the "exposures" are
the weights (w, 100 - w) and the "events" are the requests each version served. Conditional on
the interval's total requests, the canary's requests are Binomial(n, pi(r)) with
pi(r) = w r / (w r + 100 - w); r = 1 when routing works. Two one-sided mixture e-values test
r <= 1 + tolerance (the canary gets too much) and r >= 1 / (1 + tolerance) (too little), each
at half the level. They are not tempered: routing has no bursts, and a mismatch only holds the
rollout. Intervals at weight 0 or 100 (mirroring, previews, full promotion) carry no
information. The analysis of a wrongly routed canary is not trusted, but a mismatch is no
proof that the canary is bad.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from analyzer.core.stats.counts import loglik

_OFFSETS = np.linspace(0.01, 3.0, 40)


class _OneSided:
    """prod_i LR_i(theta : boundary) mixed over theta beyond the boundary (half-normal prior)."""

    def __init__(self, boundary: float, direction: int, prior_scale: float) -> None:
        self.points = np.concatenate(([math.log(boundary)],
                                      math.log(boundary) + direction * _OFFSETS))
        w = np.exp(-0.5 * (_OFFSETS / prior_scale) ** 2)
        self.w = w / w.sum()
        self.llr = np.zeros(len(_OFFSETS))

    def update(self, n_c: float, x: float, n_s: float, y: float) -> None:
        ll = loglik(self.points, np.array([n_c]), np.array([x]), np.array([n_s]),
                    np.array([y]))[0]
        self.llr += ll[1:] - ll[0]

    def e_value(self) -> float:
        m = float(self.llr.max())
        return float(np.exp(self.llr - m) @ self.w) * math.exp(min(m, 700.0))


@dataclass(frozen=True)
class SrmResult:
    mismatch: bool
    observed_share: float | None  # canary's share of requests so far (percent)
    expected_share: float | None  # the weight (percent) of the latest informative interval
    e_value: float  # the larger of the two one-sided e-values (each tested at 2/alpha)
    threshold: float


class SampleRatioTest:
    """Sequential SRM test for one step; build a fresh one when the weight changes."""

    def __init__(self, alpha: float = 0.01, tolerance: float = 0.2) -> None:
        self.alpha = alpha
        self.tolerance = tolerance
        self.too_much = _OneSided(1 + tolerance, +1, 0.5)
        self.too_little = _OneSided(1 / (1 + tolerance), -1, math.log(1 + tolerance))
        self.canary_requests = 0
        self.total_requests = 0
        self.last_weight: float | None = None

    def update(self, canary_requests: int, stable_requests: int, weight: float | None) -> SrmResult:
        if weight is not None and 0 < weight < 100:
            for side in (self.too_much, self.too_little):
                side.update(weight, canary_requests, 100 - weight, stable_requests)
            self.canary_requests += canary_requests
            self.total_requests += canary_requests + stable_requests
            self.last_weight = weight
        return self.result()

    def result(self) -> SrmResult:
        thr = 2 / self.alpha
        if self.total_requests == 0:
            return SrmResult(False, None, self.last_weight, 1.0, thr)
        e = max(self.too_much.e_value(), self.too_little.e_value())
        return SrmResult(
            mismatch=e >= thr,
            observed_share=100 * self.canary_requests / self.total_requests,
            expected_share=self.last_weight,
            e_value=e,
            threshold=thr,
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "tolerance": self.tolerance,
            "llr": [side.llr.tolist()
                    for side in (self.too_much, self.too_little)],
            "canary_requests": self.canary_requests,
            "total_requests": self.total_requests,
            "last_weight": self.last_weight,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SampleRatioTest:
        t = cls(state["alpha"], state["tolerance"])
        t.too_much.llr = np.asarray(state["llr"][0], dtype=float)
        t.too_little.llr = np.asarray(state["llr"][1], dtype=float)
        t.canary_requests = state["canary_requests"]
        t.total_requests = state["total_requests"]
        t.last_weight = state["last_weight"]
        return t
