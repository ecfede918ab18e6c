"""Latency from Prometheus histograms: bound selection and quantile estimates (the
whole-distribution test is distribution.py).

Interpolated quantiles are off by up to a bucket width, but the empirical CDF at the bucket
bounds `le` is exact. So the gating latency tests are tail-exceedance count tests at a bound b
("requests slower than b" are the bad events, run through `CountTest`), with b chosen per
watched quantile from the stable version's histogram of a pre-analysis window, or given as an
SLO bound. Interpolated quantiles are reported for humans and labelled as estimates.
"""

from __future__ import annotations

import math

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
