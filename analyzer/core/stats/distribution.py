"""The whole-distribution latency test: is the canary's latency distribution slower than the
stable's, anywhere in it? One-sided, anytime-valid, rollback only (docs/statistics.md, 3.1).

Per interval the version-by-bucket table is read as a chain of 2x2 tables: at level k, among the
requests still unfinished (rem_c canary, rem_s stable), m_k finish in bucket k, x_k of them from
the canary. Under H0 (within the interval, canary and stable labels are exchangeable given the
margins: both versions draw from one distribution, which may change between intervals) x_k is
Hypergeometric(rem_c + rem_s, rem_c, m_k), sequentially over k. Per level the factor is
omega_k^x_k / B_k, log omega_k <= 0 predictable (the canary less likely to finish: slower,
estimated from past intervals, shrunk toward 0), and B_k an exact upper bound of the
hypergeometric moment E[omega^X] (`hypergeom_log_mgf_bound`): each factor has mean <= 1, the
product is a test supermartingale. Closed form, O(buckets) per interval.

Per-interval latency noise (each version's distribution shifted by its own random factor per
interval) breaks H0's exchangeability: the chain's score is overdispersed by a factor that grows
with traffic. The product is tempered, LR_i^a_i with a_i = 1 / (1 + 3 lam V_i), lam the moment
estimate of the excess variance of the log-rank score S = sum_k (m_k pi_k - x_k),
Var(S) ~ V + lam V^2, from pre-rollout stable histograms in consecutive pairs and from the
rollout's own centred scores (predictable); V_i = n_eff,i x (V / n_eff on past data),
n_eff = n_c n_s / (n_c + n_s). a_i is predictable, so Jensen keeps the guarantee exact under H0.

Vectorised over a leading stream axis (`update_counts`); the judge uses one stream through
`update(canary_histogram, stable_histogram)`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from analyzer.core.types import Histogram

Array = NDArray[np.float64]

MAX_LOG_ODDS = 1.5  # the plug-in never bets on more than e^1.5 odds per bucket
SHRINK = 50.0  # pseudo-requests at "no difference" in the plug-in
NOISE_MULT = 3.0  # safety factor on the latency-noise estimate
NOISE_Z = 0.5  # standard errors added to it
STATE_VERSION = 2


def hypergeom_log_mgf_bound(n: Array, k: Array, m: Array, lw: Array) -> Array:
    """Upper bound on log E[omega^X], X ~ Hypergeometric(N = n, K = k successes, m draws),
    log omega = lw (elementwise).

    The hypergeometric is below Binomial(m, K/N) in the convex order (Hoeffding 1963), and by
    the symmetry HG(N, K, m) = HG(N, m, K) below Binomial(K, m/N); K - X ~ HG(N, K, N - m) is
    below Binomial(N - m, K/N). omega^x and omega^-u are convex, so each binomial moment bounds
    the hypergeometric one; the smallest is returned (its sampling fraction is
    min(m, K, N - m) / N: tight when the canary's share is small)."""
    pos = n > 0
    nn = np.where(pos, n, 1.0)
    pi = np.where(pos, k / nn, 0.0)
    f = np.where(pos, m / nn, 0.0)
    b1 = m * np.log1p(pi * np.expm1(lw))
    b2 = k * np.log1p(f * np.expm1(lw))
    b3 = k * lw + (n - m) * np.log1p(pi * np.expm1(-lw))
    return np.minimum(np.minimum(b1, b2), b3)


def _chain(cc: Array, sc: Array) -> tuple[Array, Array, Array, Array, Array]:
    """Per level k (all but the last bucket), from non-cumulative counts (B, K): canary count x,
    level total m, canary share pi of the unfinished requests, and those unfinished counts."""
    zero = np.zeros((cc.shape[0], 1))
    rem_c = cc.sum(axis=1, keepdims=True) - np.concatenate([zero, np.cumsum(cc, 1)[:, :-1]], 1)
    rem_s = sc.sum(axis=1, keepdims=True) - np.concatenate([zero, np.cumsum(sc, 1)[:, :-1]], 1)
    tot = rem_c + rem_s
    pi = np.where(tot > 0, rem_c / np.maximum(tot, 1.0), 0.0)
    return cc[:, :-1], (cc + sc)[:, :-1], pi[:, :-1], rem_c[:, :-1], rem_s[:, :-1]


def _logrank(cc: Array, sc: Array) -> tuple[Array, Array]:
    """Log-rank score sum_k (m_k pi_k - x_k) and its hypergeometric variance sum_k m pi (1-pi)."""
    x, m, pi, _, _ = _chain(cc, sc)
    return (m * pi - x).sum(axis=1), (m * pi * (1 - pi)).sum(axis=1)


def _n_eff(cc: Array, sc: Array) -> Array:
    n_c, n_s = cc.sum(axis=1), sc.sum(axis=1)
    return n_c * n_s / np.maximum(n_c + n_s, 1.0)


@dataclass(frozen=True)
class DistributionResult:
    e_value: float
    intervals: int
    tempering: float  # a of the latest interval (1: not tempered)
    log_odds: tuple[float, ...]  # current plug-in log odds per bucket (<= 0: canary slower)


class DistributionTest:
    """One-sided sequential test that the canary's latency distribution is not slower."""

    def __init__(self, le: tuple[float, ...] | None = None, streams: int = 1,
                 temper: bool = True) -> None:
        self.le = le
        self.streams = streams
        self.temper = temper
        self.log_e = np.zeros(streams)
        self.intervals = np.zeros(streams)
        self.last_a = np.ones(streams)
        self.past: Array | None = None  # (B, K-1, 4): canary in, beyond; stable in, beyond
        # noise moments: sum(S^2 - V), sum(V^2), sum(2 V^2), sum V, sum n_eff
        self.noise = np.zeros((streams, 5))
        self.centre = np.zeros((streams, 2))  # running sums of S and V (the rollout's shift)

    # ------------------------------------------------------------------ before the rollout

    def set_baseline(self, histograms: Sequence[Histogram]) -> None:
        """Pre-rollout stable histograms, one per interval, oldest first: consecutive pairs
        estimate the latency noise before the first tick."""
        usable = [h for h in histograms if h is not None]
        if self.le is None and usable:
            self.le = usable[0].le
        hs = [_buckets(h) for h in usable if h.le == self.le]
        if len(hs) < 2:
            return
        arr = np.broadcast_to(np.array(hs, dtype=float)[None], (self.streams, len(hs),
                                                                 len(hs[0])))
        self.set_baseline_counts(arr)

    def set_baseline_counts(self, h: Array) -> None:
        """(streams, intervals, buckets) non-cumulative pre-rollout stable counts."""
        for j in range(h.shape[1] - 1):
            s, v = _logrank(h[:, j], h[:, j + 1])
            self._add_noise(s * s, v, _n_eff(h[:, j], h[:, j + 1]), v > 0)

    # ------------------------------------------------------------------ per tick

    def update(self, canary: Histogram | None, stable: Histogram | None) -> DistributionResult:
        """One interval from the two versions' histograms (skipped when either is missing or
        the bounds differ)."""
        if canary is None or stable is None or canary.le != stable.le:
            return self.result()
        if self.le is None:
            self.le = canary.le
        if canary.le != self.le:
            return self.result()
        self.update_counts(np.array([_buckets(canary)], dtype=float),
                           np.array([_buckets(stable)], dtype=float))
        return self.result()

    def update_counts(self, cc: Array, sc: Array, active: Array | None = None) -> None:
        """(streams, buckets) non-cumulative canary and stable counts of one interval."""
        act = np.ones(self.streams, dtype=bool) if active is None else active
        cc = np.where(act[:, None], cc, 0.0)
        sc = np.where(act[:, None], sc, 0.0)
        if self.past is None:
            self.past = np.zeros((self.streams, cc.shape[1] - 1, 4))
        lw = self._plug_in()
        x, m, pi, rem_c, rem_s = _chain(cc, sc)
        inc = (x * lw - hypergeom_log_mgf_bound(rem_c + rem_s, rem_c, m, lw)).sum(axis=1)
        ne = _n_eff(cc, sc)
        if self.temper:
            nz = self.noise
            v_per_n = np.where(nz[:, 4] > 0, nz[:, 3] / np.maximum(nz[:, 4], 1e-9), 0.5)
            a = 1.0 / (1.0 + self.noise_level() * ne * v_per_n)
        else:
            a = np.ones(self.streams)
        self.last_a = np.where(act, a, self.last_a)
        self.log_e += a * inc
        # this interval's centred log-rank score, for the tempering of the next ones
        s = (m * pi - x).sum(axis=1)
        v = (m * pi * (1 - pi)).sum(axis=1)
        cs, cv = self.centre[:, 0], self.centre[:, 1]
        mu = np.where(cv > 0, cs / np.maximum(cv, 1e-9), 0.0)
        self._add_noise((s - mu * v) ** 2, v * (1 + v / np.maximum(cv, 1.0)), ne,
                        act & (v > 0) & (cv > 0))
        self.centre += np.where(act[:, None], np.stack([s, v], axis=1), 0.0)
        y = sc[:, :-1]
        self.past += np.stack([x, rem_c - x, y, rem_s - y], axis=2)
        self.intervals += act

    def _add_noise(self, e2: Array, v: Array, n_eff: Array, ok: Array) -> None:
        terms = np.stack([e2 - v, v * v, 2 * v * v, v, n_eff], axis=1)
        self.noise += np.where(ok[:, None], terms, 0.0)

    def noise_level(self) -> Array:
        """NOISE_MULT x the excess-variance estimate + NOISE_Z standard errors (0 without data)."""
        s, w, q = self.noise[:, 0], self.noise[:, 1], self.noise[:, 2]
        pos = w > 0
        ww = np.where(pos, w, 1.0)
        est = np.where(pos, s / ww, 0.0)
        se = np.where(pos, np.sqrt(q) / ww, 0.0)
        return NOISE_MULT * np.maximum(est, 0.0) + NOISE_Z * se

    def _plug_in(self) -> Array:
        assert self.past is not None
        a, b, c, d = (self.past[..., i] + 0.5 for i in range(4))
        lor = np.log(a * d / (b * c))
        n = self.past.sum(axis=2)
        return np.clip(lor * n / (n + SHRINK), -MAX_LOG_ODDS, 0.0)

    # ------------------------------------------------------------------ reading

    def e_value(self) -> Array:
        return np.exp(np.minimum(self.log_e, 700.0))

    def result(self) -> DistributionResult:
        lo = tuple(float(v) for v in self._plug_in()[0]) if self.past is not None else ()
        return DistributionResult(float(self.e_value()[0]), int(self.intervals[0]),
                                  float(self.last_a[0]), lo)

    def to_state(self) -> dict[str, Any]:
        if self.streams != 1:
            raise ValueError("only single-stream tests are persisted")
        return {
            "v": STATE_VERSION,
            "le": None if self.le is None else ["+Inf" if math.isinf(b) else b for b in self.le],
            "temper": self.temper,
            "log_e": float(self.log_e[0]),
            "intervals": int(self.intervals[0]),
            "last_a": float(self.last_a[0]),
            "past": None if self.past is None else self.past[0].tolist(),
            "noise": self.noise[0].tolist(),
            "centre": self.centre[0].tolist(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> DistributionTest:
        if state.get("v") != STATE_VERSION:
            raise ValueError(f"distribution-test state version {state.get('v')!r} is not "
                             f"{STATE_VERSION}")
        le = state["le"]
        t = cls(None if le is None else tuple(math.inf if b == "+Inf" else float(b) for b in le),
                temper=state["temper"])
        t.log_e = np.array([state["log_e"]], dtype=float)
        t.intervals = np.array([state["intervals"]], dtype=float)
        t.last_a = np.array([state["last_a"]], dtype=float)
        t.past = None if state["past"] is None else np.asarray(state["past"], dtype=float)[None]
        t.noise = np.asarray(state["noise"], dtype=float)[None]
        t.centre = np.asarray(state["centre"], dtype=float)[None]
        return t


def _buckets(h: Histogram) -> list[int]:
    """Non-cumulative bucket counts of a cumulative histogram."""
    c = h.counts
    return [c[0], *(b - a for a, b in itertools.pairwise(c))]
