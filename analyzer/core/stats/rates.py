"""The negligible-rate route of the error-rate check (docs/statistics.md, 2.4): the alternatives
of the canary's own-rate e-value, the weight of the ratio route fixed before the rollout, and
the anytime-valid upper bound on the canary's rate that the reason text quotes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

#: Alternatives f q of the e-value against "the canary's rate >= q".
RATE_FRACTIONS = np.array([0.0, 0.25, 0.5, 0.75])


def negligible_route_weight(stable_rate: Array, q: float, r0: float, canary_share: float) -> Array:
    """Weight w of the ratio route in w E_ratio + (1 - w) E_rate, fixed before the rollout:
    compare the expected log-growth per canary request of the two routes for a canary like the
    stable (ratio: rate / share x KL(share || pi(r0)); rate: KL_Poisson(rate || q) when rate < q)
    and favour the faster one (0.95 / 0.05), 0.5 when neither is twice as fast."""
    p1 = canary_share
    p0 = p1 * r0 / (p1 * r0 + 1 - p1)
    kl = p1 * math.log(p1 / p0) + (1 - p1) * math.log((1 - p1) / (1 - p0))
    g_ratio = stable_rate / p1 * kl
    safe = np.maximum(stable_rate, 1e-300)
    g_rate = np.where(stable_rate < q, stable_rate * np.log(safe / q) - stable_rate + q, 0.0)
    return np.where(g_rate > 2 * g_ratio, 0.05, np.where(2 * g_rate < g_ratio, 0.95, 0.5))


@dataclass(frozen=True)
class RateBoundResult:
    """Evidence that the canary's absolute event rate is below `rate` (untempered, on the
    cumulative counts: for the reason text; the decision uses `CountTest.e_rate`)."""

    e_value: float
    upper_bound: float  # anytime-valid upper confidence bound on the rate at level alpha
    events: int
    exposure: int


_LOG_FRACTIONS = tuple(math.log(f) if f > 0 else -math.inf for f in RATE_FRACTIONS)
_LOG_N_FRACTIONS = math.log(len(RATE_FRACTIONS))


def _log_e_rate_below(q: float, events: float, exposure: float) -> float:
    """log of the mixture e-value against H0: p >= q for Poisson(events | exposure * p)."""
    if q <= 0:
        return 0.0
    # scalar math, not numpy: `rate_below` bisects on this
    logs = [events * _LOG_FRACTIONS[i] + (1 - float(f)) * q * exposure
            for i, f in enumerate(RATE_FRACTIONS) if f > 0]
    if events == 0:
        logs.append(q * exposure)  # the f = 0 component; -inf (left out) once an event is seen
    top = max(logs)
    return top + math.log(sum(math.exp(v - top) for v in logs)) - _LOG_N_FRACTIONS


def rate_below(rate: float, events: int, exposure: int, alpha: float) -> RateBoundResult:
    """Anytime-valid test that an event rate is below `rate`, and the rate's upper bound."""
    log_e = _log_e_rate_below(rate, events, exposure)
    thr = math.log(1 / alpha)
    lo, hi = 0.0, 1.0
    if _log_e_rate_below(hi, events, exposure) < thr:
        ub = 1.0
    else:
        for _ in range(40):
            mid = (lo + hi) / 2
            if _log_e_rate_below(mid, events, exposure) >= thr:
                hi = mid
            else:
                lo = mid
        ub = hi
    return RateBoundResult(e_value=math.exp(min(log_e, 700.0)), upper_bound=ub, events=events,
                           exposure=exposure)
