"""Vectorised stream simulations for the statistical tests (numpy, fixed seeds)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analyzer.core.ratio_check import start_weights
from analyzer.core.stats.counts import CountTest


@dataclass(frozen=True)
class SimResult:
    rejected: np.ndarray  # per stream: did the regression e-value reach the threshold
    tick: np.ndarray  # first tick at the threshold (inf when never)
    ok: np.ndarray  # non-inferiority reached at some tick


def simulate(
    *,
    streams: int,
    total_rps: float | np.ndarray,
    base_rate: float | np.ndarray,
    ratio: float = 1.0,
    weights: tuple[float, ...] = (5, 10, 25, 50, 100),
    ticks_per_step: int = 10,
    interval: float = 30.0,
    alpha: float = 0.05,
    tolerance: float = 0.25,
    burstiness: float = 0.0,
    robust: bool = True,
    restarts: bool = True,
    ratio_from_weight: float = 0.0,
    seed: int = 0,
) -> SimResult:
    """Streams of canary-vs-stable error counts looked at every tick.

    burstiness b: each version's rate in each interval is multiplied by an independent
    Gamma(1/b, b) factor (mean 1, variance b): overdispersed, negative-binomial counts.
    ratio applies only at weights >= ratio_from_weight (a regression that appears later).
    """
    rng = np.random.default_rng(seed)
    total_rps = np.broadcast_to(np.asarray(total_rps, dtype=float), (streams,))
    base_rate = np.broadcast_to(np.asarray(base_rate, dtype=float), (streams,))
    n_steps = len(weights)
    test = CountTest(
        tolerance, alpha, streams=streams, robust=robust, compute_cs=False,
        start_weights=start_weights(n_steps) if restarts else (1.0,),
    )
    thr = 1 / alpha
    rejected = np.zeros(streams, dtype=bool)
    ok = np.zeros(streams, dtype=bool)
    first = np.full(streams, np.inf)
    tick = 0
    for s, w in enumerate(weights):
        if s > 0 and restarts:
            test.new_start()
        r = ratio if w >= ratio_from_weight else 1.0
        for _ in range(ticks_per_step):
            tick += 1
            n = rng.poisson(total_rps * interval)
            n_c = rng.binomial(n, w / 100)
            n_s = n - n_c
            mult_c = mult_s = np.ones(streams)
            if burstiness > 0:
                k = 1 / burstiness
                mult_c = rng.gamma(k, burstiness, streams)
                mult_s = rng.gamma(k, burstiness, streams)
            x = rng.poisson(n_c * base_rate * r * mult_c)
            y = rng.poisson(n_s * base_rate * mult_s)
            res = test.update(n_c, x, n_s, y)
            e = res.e_regression
            new = (e >= thr) & ~rejected
            first[new] = tick
            rejected |= new
            ok |= res.e_noninferiority >= thr
    return SimResult(rejected, first, ok)


def repeated_z_first_crossing(
    *, streams: int, canary_rps: float, stable_rps: float, base_rate: float, ratio: float,
    ticks: int, interval: float = 30.0, seed: int = 0,
) -> np.ndarray:
    """Running max over ticks of a fixed-horizon one-sided z statistic (conditional binomial,
    H0 r = 1) recomputed on the cumulative counts at every tick: the peeking practice.
    Returns the (streams, ticks) matrix of z statistics."""
    rng = np.random.default_rng(seed)
    n_c = rng.poisson(canary_rps * interval, (ticks, streams)).cumsum(axis=0)
    n_s = rng.poisson(stable_rps * interval, (ticks, streams)).cumsum(axis=0)
    x = rng.poisson(np.diff(n_c, axis=0, prepend=0) * base_rate * ratio).cumsum(axis=0)
    y = rng.poisson(np.diff(n_s, axis=0, prepend=0) * base_rate).cumsum(axis=0)
    t = x + y
    pi = n_c / (n_c + n_s)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (x - t * pi) / np.sqrt(t * pi * (1 - pi))
    return np.nan_to_num(z, nan=0.0).T
