"""Anytime-valid sequential tests of a canary/stable rate ratio for counts (bad events / events):
the error rate, and the share of requests slower than a latency bound.

Model (docs/statistics.md, section 1): per interval i the canary has n_c,i requests and x_i bad
events, the stable n_s,i and y_i. With Poisson counts and rates p_c = r_i p_s, conditional on the
interval's total t_i = x_i + y_i the canary's count is Binomial(t_i, pi_i(r_i)),
pi_i(r) = n_c,i r / (n_c,i r + n_s,i): the stable rate, any shared trend and the traffic drop out.
The binomial family has a monotone likelihood ratio in r, so every likelihood ratio
LR_i(theta : rho) = exp(l_i(theta) - l_i(rho)) is an e-value for every r_i on rho's side of the
boundary, even when r_i changes from interval to interval. `CountTest` keeps, with r0 = 1 +
tolerance:

- regression, H0 "r_i <= r0 for every i": a mixture over theta = r0 e^d (64 offsets d in
  [0.02, 3.5], prior 0.5 HN(0.3) + 0.5 HN(1.2) on d) of prod_i LR_i(theta : r0)^a_i, averaged over
  e-processes started at step boundaries (weight 0.9 on the one started with the rollout);
- non-inferiority, H0 "r_i >= r0 for every i": prod_i LR_i(1 : r0)^b_i (the healthy canary's
  likelihood against the boundary: Wald's SPRT statistic, no mixture);
- severe exclusion (risk-budgeted ramp), H0 "r_i >= r_sev": prod_i LR_i(1 : r_sev)^b_i;
- negligible rate, H0 "the canary's own rate >= q": a per-interval Poisson mixture over
  alternatives f q, f in {0, 1/4, 1/2, 3/4}; combined with the non-inferiority e-value as
  w E_ratio + (1 - w) E_rate, w fixed before the rollout from the baseline (`set_baseline`).

Tempering (bursts, docs/statistics.md section 2): a_i = 1 / (1 + tau2_i v_i) with v_i the
interval's expected Poisson variance at the boundary share and tau2_i the burst variance from
`BurstEstimator` (regression side), b_i the same with the promotion side's estimate. Both are
computed before the interval's counts are seen (predictable), so E[LR^a] <= E[LR]^a <= 1
(Jensen): under Poisson data every guarantee is exact, at any stopping time. With
`warmup_ticks` the regression increments of the first ticks are also capped at half the
rollback threshold (min(LR, C) <= LR).

The estimate and the confidence sequence (for the reason text) come from a two-sided grid of
161 log-ratios with the same tempering. Everything is vectorised over a leading stream axis
(simulations); the judge uses one stream. State is O(grid); no history is kept.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from analyzer.core.stats.bursts import BurstEstimator
from analyzer.core.stats.rates import RATE_FRACTIONS, negligible_route_weight

Array = NDArray[np.float64]

#: Regression alternatives: log(theta / r0) offsets and their prior (half-normal mixture).
REGRESSION_OFFSETS = np.linspace(0.02, 3.5, 64)
PRIOR_SCALES = (0.3, 1.2)
PRIOR_MIX = (0.5, 0.5)
#: Prior weight of the regression e-process started with the rollout; the rest is spread over
#: those started at later steps.
FIRST_START_WEIGHT = 0.9
#: Confidence-sequence grid (ratios 1/50 .. 50) and the normal prior sd of its point mixtures.
CS_GRID = np.linspace(math.log(1 / 50), math.log(50), 161)
CS_PRIOR_SCALE = 0.5
#: During `warmup_ticks`, a regression increment is at most this share of log(1 / alpha).
WARMUP_FRACTION = 0.5
STATE_VERSION = 2


def share(log_r: Array | float, n_c: Array, n_s: Array) -> Array:
    """pi(r) = n_c r / (n_c r + n_s) per stream; 0 where a version had no requests."""
    info = (n_c > 0) & (n_s > 0)
    z = np.log(np.where(info, n_c, 1.0)) + log_r - np.log(np.where(info, n_s, 1.0))
    return np.where(info, 1.0 / (1.0 + np.exp(-z)), 0.0)


def loglik(log_r: Array, n_c: Array, x: Array, n_s: Array, y: Array) -> Array:
    """Conditional-binomial log-likelihood (without the binomial coefficient) at log-ratios
    `log_r` (G,) for counts (B,) -> (B, G); 0 for streams without information."""
    info = ((n_c > 0) & (n_s > 0))[:, None]
    a = np.log(np.where(info, n_c[:, None], 1.0)) + log_r[None, :]
    b = np.log(np.where(info, n_s[:, None], 1.0))
    den = np.logaddexp(a, b)
    return np.where(info, x[:, None] * (a - den) + y[:, None] * (b - den), 0.0)


@functools.cache
def _regression_prior() -> Array:
    """The prior over REGRESSION_OFFSETS (read-only; built once per process)."""
    w = np.zeros_like(REGRESSION_OFFSETS)
    for scale, mix in zip(PRIOR_SCALES, PRIOR_MIX, strict=True):
        w += mix * np.exp(-0.5 * (REGRESSION_OFFSETS / scale) ** 2) / scale
    w /= w.sum()
    w.setflags(write=False)
    return w


@functools.cache
def _cs_mixture_weights() -> Array:
    """Column j: the prior over alternatives for the point null CS_GRID[j] (read-only)."""
    d = CS_GRID[:, None] - CS_GRID[None, :]
    w = np.exp(-0.5 * (d / CS_PRIOR_SCALE) ** 2)
    np.fill_diagonal(w, 0.0)
    w /= w.sum(axis=0, keepdims=True)
    w.setflags(write=False)
    return w


def start_weights(n_starts: int) -> Array:
    """Prior weights of the regression e-processes started at successive steps."""
    if n_starts <= 1:
        return np.array([1.0])
    rest = (1 - FIRST_START_WEIGHT) / (n_starts - 1)
    return np.array([FIRST_START_WEIGHT] + [rest] * (n_starts - 1))


@dataclass(frozen=True)
class CountTestResult:
    """Where the test stands after the latest update (floats for one stream, else arrays)."""

    e_regression: Any  # against H0 r <= r0 (rollback at >= 1/alpha_j)
    e_noninferiority: Any  # the ratio route: against H0 r >= r0
    e_rate: Any  # the negligible-rate route: against H0 canary rate >= q (1 when off)
    e_ok: Any  # what promotion uses: the ratio route, or w E_ratio + (1 - w) E_rate
    e_severe: Any  # against H0 r >= severe ratio (risk-budgeted ramp), same combination
    ratio_weight: Any  # w of the ratio route in e_ok
    estimate: Any  # maximum (tempered) likelihood ratio on the CS grid; nan without events
    ci_low: Any  # anytime-valid confidence sequence at level alpha (grid resolution)
    ci_high: Any
    tempering: Any  # a of the latest interval (1: not tempered)
    burst_tau2: Any  # the burst variance used for the latest interval (regression side)
    canary_events: Any  # cumulative counts since the first update
    stable_events: Any
    canary_exposure: Any
    stable_exposure: Any


class CountTest:
    """Sequential conditional-binomial rate-ratio test (module docstring) over `streams`.

    `alpha`: the regression level of this check (the judge's alpha_j; also the confidence
    sequence's level and the warm-up cap's scale). `n_starts`: regression e-processes, one per
    analysed step. `severe_ratio`: the ramp's r_sev (default 2, never below r0).
    `negligible_rate`: q of the zero-error route (0: off). `temper=False` switches the burst
    tempering off (then splitting an interval into two with the same shares changes nothing).
    """

    def __init__(
        self,
        tolerance: float = 0.25,
        alpha: float = 0.01,
        *,
        streams: int = 1,
        n_starts: int = 1,
        severe_ratio: float | None = None,
        negligible_rate: float = 0.0,
        warmup_ticks: int = 0,
        evidence_per_step: bool = False,
        temper: bool = True,
        compute_cs: bool = True,
    ) -> None:
        if tolerance <= 0:
            raise ValueError("tolerance must be positive")
        self.tolerance = tolerance
        self.r0 = 1.0 + tolerance
        self.alpha = alpha
        self.streams = streams
        self.r_sev = max(severe_ratio if severe_ratio is not None else 2.0, self.r0)
        self.negligible_rate = negligible_rate
        self.warmup_ticks = warmup_ticks
        self.evidence_per_step = evidence_per_step
        self.temper = temper
        self.compute_cs = compute_cs
        lr0 = math.log(self.r0)
        self._lr0 = lr0
        # every log-ratio the likelihood is needed at, in one call per update
        self._points = np.concatenate(([lr0, 0.0, math.log(self.r_sev)],
                                       lr0 + REGRESSION_OFFSETS, CS_GRID))
        self._g = len(REGRESSION_OFFSETS)
        self.w_up = _regression_prior()
        self.start_weights = start_weights(n_starts)
        b, s = streams, len(self.start_weights)
        self.llr_up = np.zeros((b, s, self._g))
        self.started = np.zeros((b, s), dtype=bool)
        self.started[:, 0] = True
        self.llr_ni = np.zeros(b)
        self.llr_sev = np.zeros(b)
        self.llr_rate = np.zeros((b, len(RATE_FRACTIONS)))
        self.ll_cs = np.zeros((b, len(CS_GRID)))
        self.totals = np.zeros((b, 4))  # x, y, n_c, n_s over every update
        self.info_totals = np.zeros((b, 4))  # the same over intervals where both had requests
        self.step_totals = np.zeros((b, 4))  # informative intervals of the current step
        self.base = np.zeros((b, 2))  # pre-rollout stable events and requests
        self.last_stable = np.zeros((b, 2))  # the stable's latest interval (n, y)
        self.ratio_weight = np.full(b, 1.0 if negligible_rate <= 0 else 0.5)
        self.ticks = np.zeros(b)
        self.last_a = np.ones(b)
        self.last_tau2 = np.zeros(b)
        self.bursts = BurstEstimator(b)
        self._result: CountTestResult | None = None  # cached until the next change

    # ------------------------------------------------------------------ before the rollout

    def set_baseline(self, n: ArrayLike, y: ArrayLike, canary_share: float) -> None:
        """Pre-rollout stable intervals (requests, events), oldest first: shape (intervals,) or
        (streams, intervals). Sets the burst estimate's baseline and the negligible-rate
        route's weight (fixed here, before any rollout data). `canary_share`: the canary's
        traffic share at the first analysed step."""
        n_a = np.broadcast_to(np.asarray(n, dtype=float), (self.streams, np.shape(n)[-1]))
        y_a = np.broadcast_to(np.asarray(y, dtype=float), n_a.shape)
        if n_a.shape[1] == 0:
            return
        self._result = None
        self.bursts.add_baseline(n_a, y_a)
        self.base = np.stack([y_a.sum(axis=1), n_a.sum(axis=1)], axis=1)
        self.last_stable = np.stack([n_a[:, -1], y_a[:, -1]], axis=1)
        q = self.negligible_rate
        if q > 0 and 0 < canary_share < 1:
            rate = (self.base[:, 0] + 0.5) / np.maximum(self.base[:, 1], 1.0)
            self.ratio_weight = negligible_route_weight(rate, q, self.r0, canary_share)

    # ------------------------------------------------------------------ per step / per tick

    def start_step(self, mask: ArrayLike | None = None) -> None:
        """A new weight step (for the streams in `mask`, default all): start the next regression
        e-process; with `evidence_per_step`, restart the promotion evidence too."""
        m = np.ones(self.streams, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        self._result = None
        self.step_totals = np.where(m[:, None], 0.0, self.step_totals)
        if self.evidence_per_step:
            self.llr_ni = np.where(m, 0.0, self.llr_ni)
            self.llr_sev = np.where(m, 0.0, self.llr_sev)
            self.llr_rate = np.where(m[:, None], 0.0, self.llr_rate)
        nxt = np.argmin(self.started, axis=1)  # the first not started (0 when all are)
        can = m & ~self.started.all(axis=1)
        self.started[np.flatnonzero(can), nxt[can]] = True

    def update(self, n_c: ArrayLike, x: ArrayLike, n_s: ArrayLike, y: ArrayLike,
               active: ArrayLike | None = None) -> CountTestResult:
        """Add one interval: canary requests and events, stable requests and events (streams
        not `active` are left unchanged)."""
        shape = (self.streams,)
        n_c_a, x_a, n_s_a, y_a = (np.broadcast_to(np.asarray(v, dtype=float), shape)
                                  for v in (n_c, x, n_s, y))
        if (n_c_a < 0).any() or (n_s_a < 0).any() or (x_a < 0).any() or (y_a < 0).any():
            raise ValueError("counts must be non-negative")
        if active is not None:
            act = np.broadcast_to(np.asarray(active, dtype=bool), shape)
            n_c_a, x_a, n_s_a, y_a = (np.where(act, v, 0.0) for v in (n_c_a, x_a, n_s_a, y_a))
        else:
            act = np.ones(shape, dtype=bool)
        self._update(n_c_a, x_a, n_s_a, y_a, act)
        return self.result()

    def _update(self, n_c: Array, x: Array, n_s: Array, y: Array, active: Array) -> None:
        self._result = None
        t = x + y
        info = (n_c > 0) & (n_s > 0)
        py, pns = self.info_totals[:, 1], self.info_totals[:, 3]
        # the interval's expected events (NOT the realised total: a tempering that depends on
        # t turns the t-weighted, burst-unbiased statistic into an average of shares, which
        # bursts bias upwards)
        rate_s = (py + self.base[:, 0] + 0.5) / np.maximum(pns + self.base[:, 1], 1.0)
        pi_0 = share(self._lr0, n_c, n_s)
        v_0 = rate_s * (n_c * self.r0 + n_s) * pi_0 * (1 - pi_0)
        if self.temper:
            tau2 = self.bursts.tau2_regression()
            a = 1.0 / (1.0 + tau2 * v_0)
            b = 1.0 / (1.0 + self.bursts.tau2_promotion() * v_0)
        else:
            tau2 = np.zeros(self.streams)
            a = b = np.ones(self.streams)
        self.last_a = np.where(active, a, self.last_a)
        self.last_tau2 = np.where(active, tau2, self.last_tau2)
        ll = loglik(self._points, n_c, x, n_s, y)
        g = self._g
        inc = a[:, None] * (ll[:, 3:3 + g] - ll[:, :1])
        if self.warmup_ticks > 0:
            cap = WARMUP_FRACTION * math.log(1 / self.alpha)
            inc = np.where((self.ticks < self.warmup_ticks)[:, None], np.minimum(inc, cap), inc)
        self.ticks += active
        self.llr_up += inc[:, None, :] * self.started[:, :, None]
        self.llr_ni += b * (ll[:, 1] - ll[:, 0])
        self.llr_sev += b * (ll[:, 1] - ll[:, 2])
        if self.compute_cs:
            self.ll_cs += a[:, None] * ll[:, 3 + g:]
        q = self.negligible_rate
        if q > 0:
            with np.errstate(divide="ignore", invalid="ignore"):
                log_f = np.log(RATE_FRACTIONS)
                terms = np.where(x[:, None] > 0, x[:, None] * log_f[None, :], 0.0)
            terms = terms + (1 - RATE_FRACTIONS)[None, :] * q * n_c[:, None]
            if self.temper:
                # the canary's own Poisson count under a log-normal burst of variance tau2
                c = 1.0 / (1.0 + q * n_c * np.expm1(0.5 * np.minimum(tau2, 50.0)))
                terms = c[:, None] * terms
            self.llr_rate += terms
        self._learn_bursts(n_c, x, n_s, y, t, info, rate_s)
        counts = np.where(info[:, None], np.stack([x, y, n_c, n_s], axis=1), 0.0)
        self.totals += np.stack([x, y, n_c, n_s], axis=1)
        self.info_totals += counts
        self.step_totals += counts

    def _learn_bursts(self, n_c: Array, x: Array, n_s: Array, y: Array, t: Array, info: Array,
                      rate_s: Array) -> None:
        """This interval's residuals, for the tempering of the intervals after it. The canary's
        residual is taken against the ratio of the current step's earlier intervals: a ratio
        that changes with the weight (a regression that appears only at a higher weight) is a
        level shift, not burstiness, and must not temper the evidence against it."""
        px, py, pnc, pns = self.step_totals.T
        past = px + py
        has_past = past > 0
        lr_hat = np.where(has_past, np.log((px + 0.5) / np.maximum(pnc, 1.0))
                          - np.log((py + 0.5) / np.maximum(pns, 1.0)), 0.0)
        pi_hat = share(lr_hat, n_c, n_s)
        t_exp = rate_s * (n_c * np.exp(lr_hat) + n_s)
        v = t_exp * pi_hat * (1 - pi_hat)
        ok = info & (t > 0) & has_past & (v > 0)
        self.bursts.add_online((x - t * pi_hat) ** 2, v, 1.0 + t_exp / np.maximum(past, 1.0), ok)
        self.bursts.add_stable_pair(self.last_stable[:, 0], self.last_stable[:, 1], n_s, y,
                                    rate_s, during=True)
        self.last_stable = np.where((n_s > 0)[:, None], np.stack([n_s, y], axis=1),
                                    self.last_stable)

    # ------------------------------------------------------------------ reading

    def e_regression(self) -> Array:
        m = self.llr_up.max(axis=2, keepdims=True)
        comp = (np.exp(self.llr_up - m) @ self.w_up) * np.exp(np.minimum(m[..., 0], 700.0))
        comp = np.where(self.started, comp, 1.0)  # an e-process that has not bet yet is 1
        return comp @ self.start_weights + (1 - self.start_weights.sum())

    def e_noninferiority(self) -> Array:
        return np.exp(np.minimum(self.llr_ni, 700.0))

    def e_rate(self) -> Array:
        if self.negligible_rate <= 0:
            return np.ones(self.streams)
        return np.exp(np.minimum(self.llr_rate, 700.0)).mean(axis=1)

    def _combine(self, e_ratio: Array) -> Array:
        if self.negligible_rate <= 0:
            return e_ratio
        return self.ratio_weight * e_ratio + (1 - self.ratio_weight) * self.e_rate()

    def e_ok(self) -> Array:
        return self._combine(self.e_noninferiority())

    def e_severe(self) -> Array:
        return self._combine(np.exp(np.minimum(self.llr_sev, 700.0)))

    def confidence_sequence(self) -> tuple[Array, Array]:
        """Grid ratios whose point-null mixture e-value is below 1/alpha, widened by one step."""
        if not self.compute_cs:
            nan = np.full(self.streams, np.nan)
            return nan, nan
        m = self.ll_cs.max(axis=1, keepdims=True)
        num = np.exp(self.ll_cs - m) @ _cs_mixture_weights()
        with np.errstate(divide="ignore"):
            log_e = np.log(num) + m - self.ll_cs
        keep = log_e < math.log(1 / self.alpha)
        g = len(CS_GRID)
        anyk = keep.any(axis=1)
        first = np.argmax(keep, axis=1)
        last = g - 1 - np.argmax(keep[:, ::-1], axis=1)
        low = np.where(first == 0, 0.0, np.exp(CS_GRID[np.maximum(first - 1, 0)]))
        high = np.where(last == g - 1, np.inf, np.exp(CS_GRID[np.minimum(last + 1, g - 1)]))
        return np.where(anyk, low, np.nan), np.where(anyk, high, np.nan)

    def result(self) -> CountTestResult:
        if self._result is None:
            self._result = self._compute_result()
        return self._result

    def _compute_result(self) -> CountTestResult:
        low, high = self.confidence_sequence()
        has = (self.info_totals[:, 0] + self.info_totals[:, 1]) > 0
        est = np.where(has & self.compute_cs, np.exp(CS_GRID[np.argmax(self.ll_cs, axis=1)]),
                       np.nan)
        e_ni = self.e_noninferiority()
        out = {
            "e_regression": self.e_regression(), "e_noninferiority": e_ni,
            "e_rate": self.e_rate(), "e_ok": self._combine(e_ni), "e_severe": self.e_severe(),
            "ratio_weight": self.ratio_weight, "estimate": est, "ci_low": low, "ci_high": high,
            "tempering": self.last_a, "burst_tau2": self.last_tau2,
            "canary_events": self.totals[:, 0], "stable_events": self.totals[:, 1],
            "canary_exposure": self.totals[:, 2], "stable_exposure": self.totals[:, 3],
        }
        if self.streams == 1:
            return CountTestResult(**{k: float(np.asarray(v)[0]) for k, v in out.items()})
        return CountTestResult(**{k: np.array(v, copy=True) for k, v in out.items()})

    # ------------------------------------------------------------------ persistence

    def to_state(self) -> dict[str, Any]:
        """Plain JSON (one stream): about 2 kB for the grids, the rest O(1)."""
        if self.streams != 1:
            raise ValueError("only single-stream tests are persisted")
        rate = [float(v) if math.isfinite(v) else None for v in self.llr_rate[0]]
        return {
            "v": STATE_VERSION,
            "tolerance": self.tolerance, "alpha": self.alpha,
            "n_starts": len(self.start_weights), "severe_ratio": self.r_sev,
            "negligible_rate": self.negligible_rate, "warmup_ticks": self.warmup_ticks,
            "evidence_per_step": self.evidence_per_step, "temper": self.temper,
            "compute_cs": self.compute_cs,
            "started": self.started[0].tolist(),
            # components not started yet are all zero: only the started ones are kept
            "llr_up": self.llr_up[0][self.started[0]].tolist(),
            "llr_ni": float(self.llr_ni[0]), "llr_sev": float(self.llr_sev[0]),
            "llr_rate": rate,
            "ll_cs": self.ll_cs[0].tolist(),
            "totals": self.totals[0].tolist(), "info_totals": self.info_totals[0].tolist(),
            "step_totals": self.step_totals[0].tolist(),
            "base": self.base[0].tolist(), "last_stable": self.last_stable[0].tolist(),
            "ratio_weight": float(self.ratio_weight[0]), "ticks": float(self.ticks[0]),
            "last": [float(self.last_a[0]), float(self.last_tau2[0])],
            "bursts": self.bursts.to_state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CountTest:
        if state.get("v") != STATE_VERSION:
            raise ValueError(f"count-test state version {state.get('v')!r} is not "
                             f"{STATE_VERSION}")
        t = cls(state["tolerance"], state["alpha"], n_starts=state["n_starts"],
                severe_ratio=state["severe_ratio"], negligible_rate=state["negligible_rate"],
                warmup_ticks=state["warmup_ticks"],
                evidence_per_step=state["evidence_per_step"], temper=state["temper"],
                compute_cs=state["compute_cs"])
        t.started = np.asarray(state["started"], dtype=bool)[None]
        t.llr_up[0][t.started[0]] = np.asarray(state["llr_up"], dtype=float).reshape(
            -1, len(REGRESSION_OFFSETS))
        t.llr_ni = np.array([state["llr_ni"]], dtype=float)
        t.llr_sev = np.array([state["llr_sev"]], dtype=float)
        t.llr_rate = np.array([[-math.inf if v is None else v for v in state["llr_rate"]]])
        t.ll_cs = np.asarray(state["ll_cs"], dtype=float)[None]
        for attr in ("totals", "info_totals", "step_totals", "base", "last_stable"):
            setattr(t, attr, np.asarray(state[attr], dtype=float)[None])
        t.ratio_weight = np.array([state["ratio_weight"]], dtype=float)
        t.ticks = np.array([state["ticks"]], dtype=float)
        t.last_a = np.array([state["last"][0]])
        t.last_tau2 = np.array([state["last"][1]])
        t.bursts = BurstEstimator.from_state(state["bursts"])
        return t
