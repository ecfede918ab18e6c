"""Latency from Prometheus histograms: bound selection, quantile estimates, and the
whole-distribution sequential test.

Interpolated quantiles are off by up to a bucket width, but the empirical CDF at the bucket
bounds `le` is exact. So the gating latency tests are tail-exceedance count tests at a bound b
("requests slower than b" are the bad events, run through `CountTest`), with b chosen per
watched quantile from the stable version's histogram of a pre-analysis window, or given as an
SLO bound. Interpolated quantiles are reported for humans and labelled as estimates.

The whole-distribution test (`DistributionTest`) compares the canary's and the stable's bucket
counts. Per interval, the 2 x K table (version x bucket) is read as a chain of 2 x 2 tables:
"finished in bucket k" versus "slower than bucket k", among requests slower than bucket k-1.
Under H0 (both versions draw latencies from the same distribution) each table's canary count
is hypergeometric given its margins, and the chain's product is the exact conditional
likelihood. The alternative is Fisher's noncentral hypergeometric with odds omega_k <= 1 (the
canary less likely to finish in bucket k: slower), omega_k estimated from previous intervals
only. The product of these likelihood ratios is a test martingale under H0: anytime-valid,
one-sided (it detects a slower canary anywhere in the distribution), and exact at any counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special, stats

from analyzer.core.types import Histogram


def add_histograms(a: Histogram | None, b: Histogram | None) -> Histogram | None:
    """Sum of two histograms with the same bounds (None when either side is None and the
    other is too, or when the bounds differ)."""
    if a is None:
        return b
    if b is None:
        return a
    if a.le != b.le:
        return None
    return Histogram(le=a.le, counts=tuple(x + y for x, y in zip(a.counts, b.counts, strict=True)))


def interpolate_quantile(hist: Histogram, q: float) -> float | None:
    """Linear interpolation within the bucket, as PromQL's histogram_quantile does.

    An estimate: the true quantile can be anywhere in the bucket. A quantile in the +Inf
    bucket returns the largest finite bound. None for an empty histogram."""
    total = hist.total
    if total <= 0:
        return None
    rank = q * total
    prev_count, prev_bound = 0, 0.0
    for bound, count in zip(hist.le, hist.counts, strict=True):
        if count >= rank and count > prev_count:
            if math.isinf(bound):
                finite = [b for b in hist.le if not math.isinf(b)]
                return finite[-1] if finite else None
            lower = prev_bound if prev_bound < bound else 0.0
            return lower + (bound - lower) * (rank - prev_count) / (count - prev_count)
        prev_count, prev_bound = count, (bound if not math.isinf(bound) else prev_bound)
    return None


def choose_bound(baseline: Histogram, q: float) -> float | None:
    """The smallest finite bound whose baseline CDF reaches q: at most a share 1 - q of stable
    requests are slower. The largest finite bound when q lies in the +Inf bucket."""
    if baseline.total <= 0:
        return None
    pairs = zip(baseline.le, baseline.counts, strict=True)
    finite = [(b, c) for b, c in pairs if not math.isinf(b)]
    if not finite:
        return None
    for b, c in finite:
        if c / baseline.total >= q:
            return b
    return finite[-1][0]


def bound_for_slo(le: tuple[float, ...], slo_seconds: float) -> float | None:
    """The smallest finite bucket bound at or above the SLO bound (requests slower than it are
    certainly slower than the SLO), or the largest finite bound."""
    finite = [b for b in le if not math.isinf(b)]
    if not finite:
        return None
    for b in finite:
        if b >= slo_seconds - 1e-12:
            return b
    return finite[-1]


def slow_count(hist: Histogram, bound: float) -> int | None:
    """Requests slower than `bound`; None when the histogram lacks that bound."""
    try:
        return hist.count_above(bound)
    except ValueError:
        return None


# --------------------------------------------------------------------------- whole distribution


def _log_fnch_norm(total: int, ncan: int, nrow: int, log_omega: float) -> tuple[float, float]:
    """log E_H0[omega^X] for X ~ Hypergeom(total, ncan, nrow), and the support's length."""
    lo = max(0, nrow - (total - ncan))
    hi = min(ncan, nrow)
    mean = nrow * ncan / total
    var = nrow * (ncan / total) * (1 - ncan / total) * (total - nrow) / max(total - 1, 1)
    # beyond 40 sd plus the tilt's shift the weights vanish in double precision
    width = 40 * math.sqrt(var) + abs(log_omega) * var * 2 + 10
    a = max(lo, math.floor(mean - width))
    b = min(hi, math.ceil(mean + width))
    xs = np.arange(a, b + 1)
    logp = stats.hypergeom.logpmf(xs, total, ncan, nrow)
    return float(special.logsumexp(logp + xs * log_omega)), float(len(xs))


@dataclass(frozen=True)
class DistributionResult:
    e_value: float
    intervals: int
    log_odds: tuple[float, ...]  # current plug-in log odds per bucket (<= 0: canary slower)


class DistributionTest:
    """One-sided sequential test that the canary's latency distribution is not slower."""

    def __init__(self, le: tuple[float, ...] | None = None, max_log_odds: float = 1.5) -> None:
        self.le = le
        self.max_log_odds = max_log_odds
        self.log_e = 0.0
        self.intervals = 0
        # per level: canary in bucket, canary beyond, stable in bucket, stable beyond
        self.past: np.ndarray | None = None

    def _plug_in(self) -> np.ndarray:
        assert self.past is not None
        a, b, c, d = (self.past[:, i] + 0.5 for i in range(4))
        lor = np.log(a * d / (b * c))
        # shrink early estimates toward 0 (no bet) and bet only on "canary slower"
        n = self.past.sum(axis=1)
        lor = lor * n / (n + 50.0)
        return np.clip(lor, -self.max_log_odds, 0.0)

    def update(self, canary: Histogram | None, stable: Histogram | None) -> DistributionResult:
        if canary is None or stable is None or canary.le != stable.le:
            return self.result()
        if self.le is None:
            self.le = canary.le
        if canary.le != self.le:
            return self.result()
        k = len(self.le) - 1  # the +Inf bucket closes the chain
        if self.past is None:
            self.past = np.zeros((k, 4))
        cc = np.diff(np.concatenate(([0], canary.counts)))
        sc = np.diff(np.concatenate(([0], stable.counts)))
        omega = self._plug_in()
        rem_c, rem_s = int(canary.total), int(stable.total)
        for j in range(k):
            x, y = int(cc[j]), int(sc[j])
            total, row = rem_c + rem_s, x + y
            if rem_c > 0 and rem_s > 0 and 0 < row < total and omega[j] < 0:
                log_norm, _ = _log_fnch_norm(total, rem_c, row, float(omega[j]))
                self.log_e += x * float(omega[j]) - log_norm
            self.past[j] += (x, rem_c - x, y, rem_s - y)
            rem_c -= x
            rem_s -= y
        self.intervals += 1
        return self.result()

    def result(self) -> DistributionResult:
        lo = tuple(float(v) for v in self._plug_in()) if self.past is not None else ()
        return DistributionResult(math.exp(min(self.log_e, 700.0)), self.intervals, lo)

    def to_state(self) -> dict[str, Any]:
        return {
            "le": None if self.le is None else ["+Inf" if math.isinf(b) else b for b in self.le],
            "log_e": self.log_e,
            "intervals": self.intervals,
            "past": None if self.past is None else self.past.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> DistributionTest:
        le = state["le"]
        t = cls(None if le is None else tuple(math.inf if b == "+Inf" else float(b) for b in le))
        t.log_e = state["log_e"]
        t.intervals = state["intervals"]
        t.past = None if state["past"] is None else np.asarray(state["past"], dtype=float)
        return t
