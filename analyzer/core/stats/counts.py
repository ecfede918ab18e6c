"""Anytime-valid sequential test of a canary/stable rate ratio for counts (bad events / events).

Model (Lindon & Malek 2022; DESIGN.md): per interval i the canary has exposure n_c,i (requests)
and x_i bad events, the stable n_s,i and y_i. With Poisson counts and rates p_c = r * p_s,
conditional on the interval's total t_i = x_i + y_i the canary's count is
Binomial(t_i, pi_i(r)), pi_i(r) = n_c,i r / (n_c,i r + n_s,i). The nuisance p_s (and any trend
both versions share) drops out and each interval's measured traffic share is used, so weight
steps need no special care. Intervals with no events or with one version at zero exposure
carry no information and leave every statistic unchanged.

Two one-sided mixture e-values are kept, each over a grid of log-ratios with a half-normal prior
scaled to the smallest effect that matters:

- regression, H0: r <= r_up; alternatives r > r_up; prior scale log(1 + tolerance);
- non-inferiority, H0: r >= r_down; alternatives r < r_down, prior scale log(r_down), so the
  healthy canary (r = 1) sits one prior standard deviation away.

Each grid point's likelihood ratio against the boundary is a test supermartingale under the
whole composite null (monotone likelihood ratio), so the mixture is one too and Ville's
inequality bounds P(sup_t E_t >= 1/alpha) <= alpha.

Robustness to bursts (overdispersion): each interval's log-likelihood ratio is multiplied by a
predictable factor 1/phi_i, phi_i >= 1 estimated from the Pearson statistic of past intervals
(quasi-likelihood tempering), and each grid point's per-interval positive contribution is capped
at `cap`. Both keep validity under Poisson data: for a in (0, 1], E[LR^a] <= E[LR]^a <= 1
(Jensen), and min(LR, C) <= LR. They cost some power on clean data and are switched off with
`robust=False` (then splitting an interval into two with the same shares leaves every
statistic unchanged).

Regression evidence is a weighted average over start times of e-processes started at step
boundaries (`new_start`): an average of test supermartingales is one, so evidence from earlier
steps carries over, while a regression that appears only at a higher weight is not drowned by
good evidence gathered at low weights.

Everything is vectorised over a leading "stream" axis so simulations run many streams at once;
the judge uses one stream. State is O(grid) per stream and start; no history is kept.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]

# log-ratio offsets from the null boundary for the one-sided mixtures
_OFFSETS = np.linspace(0.01, 3.0, 100)
# full grid of log-ratios for the estimate and the confidence sequence (ratios 1/50 .. 50)
_CS_GRID = np.linspace(math.log(1 / 50), math.log(50), 161)
_CS_PRIOR_SCALE = 0.5  # two-sided normal prior on log r around each null, for the CS


@functools.cache
def _cs_mixture_weights() -> Array:
    """Column j: the prior over alternatives for the point null _CS_GRID[j] (read-only; it
    depends on module constants only, so it is built once rather than on every tick)."""
    d = _CS_GRID[:, None] - _CS_GRID[None, :]
    w = np.exp(-0.5 * (d / _CS_PRIOR_SCALE) ** 2)
    np.fill_diagonal(w, 0.0)
    w /= w.sum(axis=0, keepdims=True)
    w.setflags(write=False)
    return w
_DISPERSION_PRIOR = 10.0  # pseudo-intervals at phi = 1 before the first Pearson statistics


def _half_normal_weights(offsets: Array, scale: float) -> Array:
    w = np.exp(-0.5 * (offsets / scale) ** 2)
    return w / w.sum()


def _loglik(log_r: Array, n_c: Array, x: Array, n_s: Array, y: Array) -> Array:
    """Conditional-binomial log-likelihood (without the binomial coefficient) per stream and
    grid point. Shapes: log_r (G,), counts (B,) -> (B, G). Streams without information give 0."""
    n_c = n_c[:, None]
    n_s = n_s[:, None]
    informative = (n_c > 0) & (n_s > 0)
    safe_c = np.where(informative, n_c, 1.0)
    safe_s = np.where(informative, n_s, 1.0)
    # log pi = log(n_c r) - log(n_c r + n_s) computed stably with logaddexp
    a = np.log(safe_c) + log_r[None, :]
    b = np.log(safe_s)
    denom = np.logaddexp(a, b)
    ll = x[:, None] * (a - denom) + y[:, None] * (b - denom)
    return np.where(informative, ll, 0.0)


@dataclass(frozen=True)
class CountTestResult:
    """Where the test stands after the latest update (per stream arrays for batches)."""

    e_regression: Any  # float or (B,) array: evidence against H0 r <= r_up
    e_noninferiority: Any  # evidence against H0 r >= r_down
    estimate: Any  # maximum (tempered) likelihood ratio on the grid; nan without events
    ci_low: Any  # anytime-valid confidence sequence at level alpha (grid resolution)
    ci_high: Any
    dispersion: Any  # current phi (>= 1)
    canary_events: Any  # cumulative counts since the first update
    stable_events: Any
    canary_exposure: Any
    stable_exposure: Any


class CountTest:
    """Sequential conditional-binomial rate-ratio test over `streams` independent streams.

    `tolerance`: the regression boundary is r_up = 1 + tolerance; the non-inferiority boundary
    r_down defaults to the same. `alpha` is the level of the confidence sequence (the judge
    compares the e-values with its own thresholds). `start_weights`: prior weights of the
    e-processes started at successive `new_start()` calls (the first one at construction);
    they must sum to at most 1.
    """

    def __init__(
        self,
        tolerance: float = 0.25,
        alpha: float = 0.01,
        *,
        r_down: float | None = None,
        streams: int = 1,
        robust: bool = True,
        cap: float | None = None,
        start_weights: ArrayLike = (1.0,),
        prior_scale_up: float | None = None,
        prior_scale_down: float | None = None,
        compute_cs: bool = True,
    ) -> None:
        if tolerance <= 0:
            raise ValueError("tolerance must be positive")
        self.r_up = 1.0 + tolerance
        self.r_down = self.r_up if r_down is None else float(r_down)
        self.alpha = alpha
        self.streams = streams
        self.robust = robust
        # a burst in one interval must not decide alone: at least about two intervals' worth
        self.cap = (math.log(1 / alpha) / 2 if cap is None else cap) if robust else math.inf
        self.start_weights = np.asarray(start_weights, dtype=float)
        if self.start_weights.sum() > 1 + 1e-9 or (self.start_weights < 0).any():
            raise ValueError("start weights must be non-negative and sum to at most 1")
        self.compute_cs = compute_cs
        scale_up = prior_scale_up or max(math.log(self.r_up), 0.5)
        scale_down = prior_scale_down or max(abs(math.log(self.r_down)), 0.1)
        self.log_alt_up = math.log(self.r_up) + _OFFSETS
        self.log_alt_down = math.log(self.r_down) - _OFFSETS
        self.w_up = _half_normal_weights(_OFFSETS, scale_up)
        self.w_down = _half_normal_weights(_OFFSETS, scale_down)
        b, s, g = streams, len(self.start_weights), len(_OFFSETS)
        # capped tempered log-LR sums per start (regression) and for non-inferiority
        self.llr_up = np.zeros((b, s, g))
        self.llr_down = np.zeros((b, g))
        self.started = np.zeros(s, dtype=bool)
        self.started[0] = True
        self.ll_cs = np.zeros((b, len(_CS_GRID)))  # tempered, uncapped log-likelihood
        self.pearson_sum = np.zeros(b)
        self.pearson_n = np.zeros(b)
        self.totals = np.zeros((b, 4))  # x, y, n_c, n_s
        # the same over informative intervals only (both versions had requests): the ratio's
        # estimate and the dispersion's plug-in must not see a version's errors from an
        # interval where the other version had no traffic (the first window after a weight
        # change often has no canary requests yet)
        self.info_totals = np.zeros((b, 4))

    # ------------------------------------------------------------------ updating

    def new_start(self) -> bool:
        """Begin the next e-process component (a new weight step). False when none is left."""
        idx = np.flatnonzero(~self.started)
        if idx.size == 0:
            return False
        self.started[idx[0]] = True
        return True

    def dispersion(self) -> Array:
        phi = (_DISPERSION_PRIOR + self.pearson_sum) / (_DISPERSION_PRIOR + self.pearson_n)
        return np.maximum(phi, 1.0) if self.robust else np.ones(self.streams)

    def update(
        self, n_c: ArrayLike, x: ArrayLike, n_s: ArrayLike, y: ArrayLike
    ) -> CountTestResult:
        """Add one interval: canary exposure and events, stable exposure and events."""
        n_c_a, x_a, n_s_a, y_a = (
            np.broadcast_to(np.asarray(v, dtype=float), (self.streams,)) for v in (n_c, x, n_s, y)
        )
        if (n_c_a < 0).any() or (n_s_a < 0).any() or (x_a < 0).any() or (y_a < 0).any():
            raise ValueError("counts must be non-negative")
        temper = 1.0 / self.dispersion()  # predictable: from intervals before this one
        l_up0 = math.log(self.r_up)
        l_dn0 = math.log(self.r_down)
        pts = np.concatenate(([l_up0, l_dn0], self.log_alt_up, self.log_alt_down))
        ll = _loglik(pts, n_c_a, x_a, n_s_a, y_a) * temper[:, None]
        g = len(_OFFSETS)
        inc_up = np.minimum(ll[:, 2 : 2 + g] - ll[:, :1], self.cap)
        inc_down = np.minimum(ll[:, 2 + g :] - ll[:, 1:2], self.cap)
        self.llr_up[:, self.started, :] += inc_up[:, None, :]
        self.llr_down += inc_down
        self.ll_cs += _loglik(_CS_GRID, n_c_a, x_a, n_s_a, y_a) * temper[:, None]
        if self.robust:
            self._update_dispersion(n_c_a, x_a, n_s_a, y_a)
        counts = np.stack([x_a, y_a, n_c_a, n_s_a], axis=1)
        self.totals += counts
        self.info_totals += np.where(((n_c_a > 0) & (n_s_a > 0))[:, None], counts, 0.0)
        return self.result()

    def _update_dispersion(self, n_c: Array, x: Array, n_s: Array, y: Array) -> None:
        t = x + y
        px, py, pnc, pns = self.info_totals.T
        past = px + py
        # no estimate before the first events: nothing to compare with yet
        ok = (n_c > 0) & (n_s > 0) & (t > 0) & (past > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            # predictable plug-in ratio from past informative intervals, half an event added
            # to each version: a version with no errors yet must not give pi = 0 (a boundary
            # estimate would make the next interval's statistic, and the dispersion, explode)
            lr = np.where(ok, np.log((px + 0.5) / pnc) - np.log((py + 0.5) / pns), 0.0)
            pi = n_c * np.exp(lr) / (n_c * np.exp(lr) + n_s)
            # predictive variance: binomial noise plus the plug-in estimate's own error
            var = t * pi * (1 - pi) * (1 + t / np.maximum(past, 1.0))
            stat = (x - t * pi) ** 2 / var
        ok &= var > 0
        self.pearson_sum += np.where(ok, stat, 0.0)
        self.pearson_n += ok

    # ------------------------------------------------------------------ reading

    def e_regression(self) -> Array:
        comp = np.exp(self.llr_up) @ self.w_up  # (B, S)
        # components not started yet count as 1 (an e-process that has not bet)
        comp = np.where(self.started[None, :], comp, 1.0)
        return comp @ self.start_weights + (1 - self.start_weights.sum())

    def e_noninferiority(self) -> Array:
        return np.exp(self.llr_down) @ self.w_down

    def _estimate_log(self) -> Array:
        has = (self.info_totals[:, 0] + self.info_totals[:, 1]) > 0
        est = _CS_GRID[np.argmax(self.ll_cs, axis=1)]
        return np.where(has, est, np.nan)

    def confidence_sequence(self) -> tuple[Array, Array]:
        """Grid values r whose point-null mixture e-value is below 1/alpha."""
        if not self.compute_cs:
            nan = np.full(self.streams, np.nan)
            return nan, nan
        w = _cs_mixture_weights()
        m = self.ll_cs.max(axis=1, keepdims=True)
        num = np.exp(self.ll_cs - m) @ w  # (B, G): sum_k w_kj L_k / exp(m)
        with np.errstate(divide="ignore"):
            log_e = np.log(num) + m - self.ll_cs
        keep = log_e < math.log(1 / self.alpha)
        g = len(_CS_GRID)
        anyk = keep.any(axis=1)
        first = np.argmax(keep, axis=1)
        last = g - 1 - np.argmax(keep[:, ::-1], axis=1)
        # widen to the neighbouring grid point: coverage holds between grid points too
        low = np.where(first == 0, 0.0, np.exp(_CS_GRID[np.maximum(first - 1, 0)]))
        high = np.where(last == g - 1, np.inf, np.exp(_CS_GRID[np.minimum(last + 1, g - 1)]))
        low = np.where(anyk, low, np.nan)
        high = np.where(anyk, high, np.nan)
        return low, high

    def result(self) -> CountTestResult:
        low, high = self.confidence_sequence()
        est = np.exp(self._estimate_log())
        out = CountTestResult(
            e_regression=self.e_regression(),
            e_noninferiority=self.e_noninferiority(),
            estimate=est,
            ci_low=low,
            ci_high=high,
            dispersion=self.dispersion(),
            canary_events=self.totals[:, 0].copy(),
            stable_events=self.totals[:, 1].copy(),
            canary_exposure=self.totals[:, 2].copy(),
            stable_exposure=self.totals[:, 3].copy(),
        )
        if self.streams == 1:
            return CountTestResult(**{k: float(np.asarray(v)[0]) for k, v in out.__dict__.items()})
        return out

    # ------------------------------------------------------------------ persistence

    def to_state(self) -> dict[str, Any]:
        if self.streams != 1:
            raise ValueError("only single-stream tests are persisted")
        return {
            "r_up": self.r_up,
            "r_down": self.r_down,
            "alpha": self.alpha,
            "robust": self.robust,
            "cap": None if math.isinf(self.cap) else self.cap,
            "start_weights": self.start_weights.tolist(),
            "started": self.started.tolist(),
            "llr_up": self.llr_up[0].tolist(),
            "llr_down": self.llr_down[0].tolist(),
            "ll_cs": self.ll_cs[0].tolist(),
            "pearson": [float(self.pearson_sum[0]), float(self.pearson_n[0])],
            "totals": self.totals[0].tolist(),
            "info_totals": self.info_totals[0].tolist(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], **kwargs: Any) -> CountTest:
        t = cls(
            tolerance=state["r_up"] - 1,
            alpha=state["alpha"],
            r_down=state["r_down"],
            robust=state["robust"],
            cap=state["cap"] if state["robust"] else None,
            start_weights=state["start_weights"],
            **kwargs,
        )
        t.started = np.asarray(state["started"], dtype=bool)
        t.llr_up = np.asarray(state["llr_up"], dtype=float)[None]
        t.llr_down = np.asarray(state["llr_down"], dtype=float)[None]
        t.ll_cs = np.asarray(state["ll_cs"], dtype=float)[None]
        t.pearson_sum = np.array([state["pearson"][0]])
        t.pearson_n = np.array([state["pearson"][1]])
        t.totals = np.asarray(state["totals"], dtype=float)[None]
        # states written before informative totals were kept: the totals are the best guess
        t.info_totals = np.asarray(state.get("info_totals", state["totals"]), dtype=float)[None]
        return t


# ---------------------------------------------------------------------- absolute rate bound


@dataclass(frozen=True)
class RateBoundResult:
    """Evidence that the canary's absolute event rate is below `rate`."""

    e_value: float
    upper_bound: float  # anytime-valid upper confidence bound on the rate at level alpha
    events: int
    exposure: int


_RATE_FRACTIONS = (0.0, 0.25, 0.5, 0.75)
_LOG_FRACTIONS = tuple(math.log(f) if f > 0 else -math.inf for f in _RATE_FRACTIONS)
_LOG_N_FRACTIONS = math.log(len(_RATE_FRACTIONS))


def _log_e_rate_below(q: float, events: float, exposure: float) -> float:
    """log of the mixture e-value against H0: p >= q for Poisson(events | exposure * p).

    Each component p1 = f q < q gives LR = (p1/q)^events exp(-(p1 - q) exposure), a
    supermartingale for every p >= q; equal weights over f in {0, 1/4, 1/2, 3/4}."""
    if q <= 0:
        return 0.0
    # scalar math, not numpy: `rate_below` bisects on this, 60 calls per judge tick
    logs = [events * _LOG_FRACTIONS[i] + (1 - f) * q * exposure
            for i, f in enumerate(_RATE_FRACTIONS) if f > 0]
    if events == 0:
        logs.append(q * exposure)  # the f = 0 component; -inf (left out) once an event is seen
    top = max(logs)
    return top + math.log(sum(math.exp(v - top) for v in logs)) - _LOG_N_FRACTIONS


def rate_below(rate: float, events: int, exposure: int, alpha: float) -> RateBoundResult:
    """Anytime-valid test that an event rate is below `rate` (the zero-error path)."""
    log_e = _log_e_rate_below(rate, events, exposure)
    thr = math.log(1 / alpha)
    # upper bound: smallest q rejected (log e increases in q for fixed data); bisection
    lo, hi = 0.0, 1.0
    if _log_e_rate_below(hi, events, exposure) < thr:
        ub = 1.0
    else:
        for _ in range(60):
            mid = (lo + hi) / 2
            if _log_e_rate_below(mid, events, exposure) >= thr:
                hi = mid
            else:
                lo = mid
        ub = hi
    return RateBoundResult(e_value=math.exp(min(log_e, 700.0)), upper_bound=ub, events=events,
                           exposure=exposure)
