"""What is possible at all: Wald's bound on the events a sequential test needs, the "time
needed" a hold decision reports, and the time a healthy canary needs to be promoted.

Any sequential test with error rates alpha (false alarm) and beta (miss) needs on average
E[N] >= d(1 - beta || alpha) / KL observations (Wald 1945), d(x||y) the binary relative entropy.
For the conditional count test the observation is one event and KL = d(theta1 || theta0) with
theta(r) = rho r / (rho r + 1 - rho), rho the canary's traffic share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def binary_kl(x: float, y: float) -> float:
    """d(x || y) = x log(x/y) + (1-x) log((1-x)/(1-y)), with 0 log 0 = 0."""
    out = 0.0
    if x > 0:
        out += x * math.log(x / y)
    if x < 1:
        out += (1 - x) * math.log((1 - x) / (1 - y))
    return out


def canary_event_share(rho: float, ratio: float) -> float:
    """Probability that an event comes from the canary when its traffic share is rho."""
    return rho * ratio / (rho * ratio + 1 - rho)


def wald_events_needed(
    rho: float, ratio: float, r0: float, alpha: float, beta: float = 0.05
) -> float:
    """Expected events (both versions) needed to reject r <= r0 when the truth is `ratio`."""
    if not 0 < rho < 1:
        return math.inf
    if ratio <= r0:
        return math.inf
    kl = binary_kl(canary_event_share(rho, ratio), canary_event_share(rho, r0))
    return binary_kl(1 - beta, alpha) / kl if kl > 0 else math.inf


@dataclass(frozen=True)
class PowerEstimate:
    """How much more traffic until a regression of `ratio` would be detected (Wald's bound)."""

    ratio: float
    events_needed: float  # events in all (both versions) from the start of the evidence
    more_events: float
    more_canary_requests: float
    seconds: float


def time_to_detect(
    *,
    canary_rps: float,
    stable_rps: float,
    base_rate: float,
    r0: float,
    alpha: float,
    events_so_far: float = 0.0,
    ratio: float | None = None,
    beta: float = 0.05,
) -> PowerEstimate | None:
    """At the current traffic (requests per second of each version and the stable event rate),
    the lower bound on the time and canary requests until a `ratio`x regression is detected
    (default: 2x, or 1.5 r0 when the tolerance allows 2x). None when the traffic gives no
    information (one version without traffic, no events) or `ratio` is within r0."""
    total = canary_rps + stable_rps
    if canary_rps <= 0 or stable_rps <= 0 or base_rate <= 0:
        return None
    if ratio is None:
        ratio = max(2.0, 1.5 * r0)  # a 2x regression is no regression under a tolerance >= 1
    rho = canary_rps / total
    needed = wald_events_needed(rho, ratio, r0, alpha, beta)
    if not math.isfinite(needed):
        return None
    more = max(needed - events_so_far, 0.0)
    events_per_s = base_rate * (canary_rps * ratio + stable_rps)
    seconds = more / events_per_s
    return PowerEstimate(
        ratio=ratio,
        events_needed=needed,
        more_events=more,
        more_canary_requests=seconds * canary_rps,
        seconds=seconds,
    )


def time_to_promote(
    *,
    canary_rps: float,
    stable_rps: float,
    base_rate: float,
    r0: float,
    beta: float,
    log_evidence_so_far: float = 0.0,
) -> float | None:
    """At the current traffic, Wald's approximation of the seconds until the non-inferiority
    evidence of a healthy canary (r = 1) reaches 1/beta: log(1/beta) minus the evidence so far,
    over the expected log-likelihood ratio of LR(1 : r0) per second. None when the traffic gives
    no information."""
    if canary_rps <= 0 or stable_rps <= 0 or base_rate <= 0:
        return None
    rho = canary_rps / (canary_rps + stable_rps)
    kl = binary_kl(rho, canary_event_share(rho, r0))  # per event, at r = 1
    events_per_s = base_rate * (canary_rps + stable_rps)
    need = max(math.log(1 / beta) - log_evidence_so_far, 0.0)
    return need / (kl * events_per_s) if kl > 0 else None
