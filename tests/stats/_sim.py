"""Vectorised stream simulations for the statistical tests (numpy, fixed seeds)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analyzer.core.stats.counts import CountTest


@dataclass(frozen=True)
class SimResult:
    rejected: np.ndarray  # per stream: did the regression e-value reach 1/alpha
    tick: np.ndarray  # first tick at the threshold (inf when never)
    ok: np.ndarray  # the promotion evidence (E_ok) reached 1/beta at some tick
    severe: np.ndarray  # the severe-regression exclusion reached 1/beta at some tick


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
    beta: float = 0.05,
    tolerance: float = 0.25,
    burst_cv: float = 0.0,
    bursts_in_baseline: bool = True,
    baseline_intervals: int = 20,
    temper: bool = True,
    restarts: bool = True,
    ratio_from_weight: float = 0.0,
    negligible_rate: float = 0.0,
    trend: float = 0.0,
    seed: int = 0,
) -> SimResult:
    """Streams of canary-vs-stable error counts, looked at every tick.

    Before the rollout, `baseline_intervals` stable-only intervals at the full rate (the
    engine's baseline). `burst_cv`: each version's rate in each interval (and in the baseline,
    unless `bursts_in_baseline` is False) is multiplied by an independent mean-1 Gamma factor
    with this coefficient of variation. `ratio` applies at weights >= `ratio_from_weight`.
    `trend`: traffic swings +-trend (a shared diurnal-like trend).
    """
    rng = np.random.default_rng(seed)
    total_rps = np.broadcast_to(np.asarray(total_rps, dtype=float), (streams,))
    base_rate = np.broadcast_to(np.asarray(base_rate, dtype=float), (streams,))
    k = 1 / burst_cv**2 if burst_cv > 0 else None

    def mult(shape: tuple[int, ...], on: bool = True) -> np.ndarray | float:
        return rng.gamma(k, 1 / k, shape) if (k is not None and on) else 1.0

    test = CountTest(tolerance, alpha, streams=streams, compute_cs=False, temper=temper,
                     n_starts=len(weights) if restarts else 1, negligible_rate=negligible_rate)
    if baseline_intervals:
        n = rng.poisson(total_rps[:, None] * interval, (streams, baseline_intervals))
        y = rng.poisson(n * base_rate[:, None] * mult(n.shape, bursts_in_baseline))
        test.set_baseline(n.astype(float), y.astype(float), weights[0] / 100)
    rejected = np.zeros(streams, dtype=bool)
    ok = np.zeros(streams, dtype=bool)
    severe = np.zeros(streams, dtype=bool)
    first = np.full(streams, np.inf)
    tick = 0
    for s, w in enumerate(weights):
        if s > 0 and restarts:
            test.start_step()
        r = ratio if w >= ratio_from_weight else 1.0
        for _ in range(ticks_per_step):
            tick += 1
            f = 1 + trend * np.sin(tick / 9)
            n = rng.poisson(total_rps * f * interval)
            n_c = rng.binomial(n, w / 100)
            n_s = n - n_c
            x = rng.poisson(n_c * base_rate * r * mult((streams,)))
            y = rng.poisson(n_s * base_rate * mult((streams,)))
            res = test.update(n_c, x, n_s, y)
            new = (res.e_regression >= 1 / alpha) & ~rejected
            first[new] = tick
            rejected |= new
            ok |= res.e_ok >= 1 / beta
            severe |= res.e_severe >= 1 / beta
    return SimResult(rejected, first, ok, severe)
