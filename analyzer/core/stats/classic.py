"""Classic fixed-horizon tests, for comparison with the peers and for data without counts:
Mann-Whitney U with Kayenta's classification, Welch's t, Fisher's exact test.

These are valid for ONE look at a sample size fixed in advance, and they test "no difference",
not "within the tolerance". Repeating them every tick while the data grows inflates false
rollbacks (gating at its alpha share, a repeated Fisher test rolled back 14 % of healthy
canaries and 95 % of canaries 1.1x inside a 1.25 tolerance: docs/statistics.md), so in the judge
they are advisory only: reported beside the sequential checks, never deciding (a policy with
`advisory: false` is refused).

Written on numpy and scipy's distributions; the tests check them against scipy.stats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import special
from scipy import stats as sps

FIXED_HORIZON_NOTE = "fixed-horizon: repeated looks inflate false rollbacks"


# --------------------------------------------------------------------------- Mann-Whitney


@dataclass(frozen=True)
class MannWhitneyResult:
    statistic: float  # U of the first sample (canary)
    pvalue: float  # two-sided, normal approximation with tie and continuity corrections
    estimate: float  # Hodges-Lehmann shift: median of all pairwise differences x_i - y_j
    confidence_interval: tuple[float, float]
    confidence_level: float


def mann_whitney(x: ArrayLike, y: ArrayLike, confidence: float = 0.98) -> MannWhitneyResult:
    """Mann-Whitney U test of x against y with a distribution-free CI for the shift."""
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    m, n = len(xa), len(ya)
    if m == 0 or n == 0:
        raise ValueError("both samples need at least one value")
    ranks = sps.rankdata(np.concatenate([xa, ya]))
    u = float(ranks[:m].sum() - m * (m + 1) / 2)
    mu = m * n / 2
    _, counts = np.unique(np.concatenate([xa, ya]), return_counts=True)
    big_n = m + n
    tie = float((counts**3 - counts).sum())
    var = m * n / 12 * ((big_n + 1) - tie / (big_n * (big_n - 1)))
    if var <= 0:
        p = 1.0
    else:
        z = (abs(u - mu) - 0.5) / math.sqrt(var)
        p = float(min(1.0, 2 * sps.norm.sf(max(z, 0.0))))
    diffs = np.sort((xa[:, None] - ya[None, :]).ravel())
    est = float(np.median(diffs))
    zc = sps.norm.ppf(0.5 + confidence / 2)
    # the k-th smallest and largest pairwise differences bound the shift (normal approximation)
    k = math.floor(mu - zc * math.sqrt(m * n * (big_n + 1) / 12))
    k = min(max(k, 1), len(diffs))
    ci = (float(diffs[k - 1]), float(diffs[len(diffs) - k]))
    return MannWhitneyResult(u, p, est, ci, confidence)


@dataclass(frozen=True)
class KayentaClassification:
    classification: str  # "High", "Low", "Pass", "NoData"
    direction: str  # "increase", "decrease", "none"
    effect_size: float | None  # mean ratio canary / stable
    estimate: float | None
    confidence_interval: tuple[float, float] | None
    confidence_level: float
    reason: str


def kayenta_classify(
    canary: ArrayLike,
    stable: ArrayLike,
    *,
    tolerance: float = 0.25,
    confidence: float = 0.98,
    allowed_increase: float = 1.0,
    allowed_decrease: float = 1.0,
) -> KayentaClassification:
    """Kayenta's Mann-Whitney classifier: High when the CI's lower end exceeds
    tolerance * |Hodges-Lehmann estimate| and the mean ratio exceeds allowed_increase; Low in
    the mirror case; Pass otherwise."""
    c = np.asarray(canary, dtype=float)
    s = np.asarray(stable, dtype=float)
    if len(c) == 0 or len(s) == 0:
        return KayentaClassification("NoData", "none", None, None, None, confidence,
                                     "no data for the canary or the stable version")
    ms = float(s.mean())
    ratio = float(c.mean() / ms) if ms != 0 else (1.0 if c.mean() == 0 else math.inf)
    if len(c) == len(s) and np.array_equal(c, s):
        return KayentaClassification("Pass", "none", ratio, 0.0, (0.0, 0.0), confidence,
                                     "identical data")
    mw = mann_whitney(c, s, confidence)
    crit = tolerance * abs(mw.estimate)
    lo, hi = mw.confidence_interval
    if lo > crit and ratio > allowed_increase:
        cls, d = "High", "increase"
    elif hi < -crit and ratio < allowed_decrease:
        cls, d = "Low", "decrease"
    else:
        cls, d = "Pass", "none"
    reason = (
        f"Mann-Whitney shift {mw.estimate:.4g} CI{int(confidence * 100)} [{lo:.4g}, {hi:.4g}], "
        f"mean ratio {ratio:.3g}: {cls}"
    )
    return KayentaClassification(cls, d, ratio, mw.estimate, (lo, hi), confidence, reason)


# --------------------------------------------------------------------------- Welch


@dataclass(frozen=True)
class WelchResult:
    statistic: float
    pvalue: float  # two-sided
    df: float
    estimate: float  # mean(x) - mean(y)
    confidence_interval: tuple[float, float]


def welch_t(x: ArrayLike, y: ArrayLike, confidence: float = 0.95) -> WelchResult:
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    if len(xa) < 2 or len(ya) < 2:
        raise ValueError("Welch's t needs at least two values per sample")
    vx = xa.var(ddof=1) / len(xa)
    vy = ya.var(ddof=1) / len(ya)
    diff = float(xa.mean() - ya.mean())
    se = math.sqrt(vx + vy)
    if se == 0:
        return WelchResult(math.nan, math.nan, math.nan, diff, (diff, diff))
    df = (vx + vy) ** 2 / (vx**2 / (len(xa) - 1) + vy**2 / (len(ya) - 1))
    t = diff / se
    p = float(2 * sps.t.sf(abs(t), df))
    q = sps.t.ppf(0.5 + confidence / 2, df)
    return WelchResult(t, p, df, diff, (diff - q * se, diff + q * se))


# --------------------------------------------------------------------------- Fisher


@dataclass(frozen=True)
class FisherResult:
    statistic: float  # sample odds ratio (a d) / (b c)
    pvalue: float


def fisher_exact(table: ArrayLike, alternative: str = "two-sided") -> FisherResult:
    """Fisher's exact test on [[a, b], [c, d]]; alternative 'two-sided', 'greater' or 'less'
    (greater: the odds of the first row are higher)."""
    t = np.asarray(table, dtype=np.int64)
    if t.shape != (2, 2) or (t < 0).any():
        raise ValueError("Fisher's exact test needs a 2x2 table of non-negative counts")
    a, b = int(t[0, 0]), int(t[0, 1])
    c, d = int(t[1, 0]), int(t[1, 1])
    odds = (a * d / (b * c)) if b * c else (math.inf if a * d else math.nan)
    row1, col1, total = a + b, a + c, a + b + c + d
    if row1 == 0 or col1 == 0 or row1 == total or col1 == total:
        return FisherResult(odds, 1.0)
    lo, hi = max(0, col1 - (total - row1)), min(row1, col1)
    xs = np.arange(lo, hi + 1)
    logp = (
        special.gammaln(row1 + 1) - special.gammaln(xs + 1) - special.gammaln(row1 - xs + 1)
        + special.gammaln(total - row1 + 1) - special.gammaln(col1 - xs + 1)
        - special.gammaln(total - row1 - col1 + xs + 1)
        - (special.gammaln(total + 1) - special.gammaln(col1 + 1)
           - special.gammaln(total - col1 + 1))
    )
    pmf = np.exp(logp - special.logsumexp(logp))
    obs = pmf[a - lo]
    if alternative == "greater":
        p = pmf[xs >= a].sum()
    elif alternative == "less":
        p = pmf[xs <= a].sum()
    elif alternative == "two-sided":
        p = pmf[pmf <= obs * (1 + 1e-7)].sum()
    else:
        raise ValueError(f"unknown alternative {alternative!r}")
    return FisherResult(odds, float(min(1.0, p)))


# --------------------------------------------------------------------------- judge adapter


class ClassicCollector:
    """Collects per-interval values of one step and runs a classic test on them every tick, for
    the verdict's details (advisory: the repeated practice the note warns about never decides)."""

    def __init__(self, check: Any) -> None:
        self.check = check
        self.reset()

    def reset(self) -> None:
        self.canary: list[float] = []
        self.stable: list[float] = []
        self.counts = [0, 0, 0, 0]  # canary errors, canary requests, stable errors, requests

    def _values(self, samples: Any) -> tuple[float | None, float | None]:
        from analyzer.core.stats.latency import interpolate_quantile

        out: list[float | None] = []
        for v in (samples.canary, samples.stable):
            if self.check.metric == "error-rate":
                out.append(v.errors / v.requests if v.requests else None)
            else:
                out.append(interpolate_quantile(v.latency, 0.99) if v.latency else None)
        return out[0], out[1]

    def update(self, samples: Any, name: str) -> Any:
        from analyzer.core.types import Outcome, Verdict

        c = self.check
        cv, sv = self._values(samples)
        if cv is not None and sv is not None:
            self.canary.append(cv)
            self.stable.append(sv)
        ca, st = samples.canary, samples.stable
        self.counts = [self.counts[0] + ca.errors, self.counts[1] + ca.requests,
                       self.counts[2] + st.errors, self.counts[3] + st.requests]
        outcome, reason, est, evidence, kind = Outcome.NO_DATA, "no data yet", None, None, None
        if c.test == "mann-whitney" and self.canary:
            k = kayenta_classify(self.canary, self.stable, tolerance=c.tolerance,
                                 confidence=c.confidence)
            outcome = {"High": Outcome.REGRESSION, "NoData": Outcome.NO_DATA}.get(
                k.classification, Outcome.OK)
            reason, est, kind = k.reason, k.effect_size, "classification"
        elif c.test == "welch" and len(self.canary) >= 2:
            w = welch_t(self.canary, self.stable, c.confidence)
            worse = w.estimate > 0 and w.pvalue < 1 - c.confidence
            outcome = Outcome.REGRESSION if worse else Outcome.OK
            reason = (f"Welch's t={w.statistic:.3g}, p={w.pvalue:.3g}, difference "
                      f"{w.estimate:.4g} [{w.confidence_interval[0]:.4g}, "
                      f"{w.confidence_interval[1]:.4g}]")
            est, evidence, kind = w.estimate, w.pvalue, "p-value"
        elif c.test == "fisher":
            if c.metric != "error-rate":
                reason = "Fisher's exact test applies to error counts only"
            elif self.counts[1] and self.counts[3]:
                e1, n1, e2, n2 = self.counts
                f = fisher_exact([[e1, n1 - e1], [e2, n2 - e2]], alternative="greater")
                worse = f.pvalue < 1 - c.confidence
                outcome = Outcome.REGRESSION if worse else Outcome.OK
                reason = f"Fisher's exact odds ratio {f.statistic:.3g}, one-sided p={f.pvalue:.3g}"
                est, evidence, kind = f.statistic, f.pvalue, "p-value"
        if outcome == Outcome.REGRESSION:
            reason += " (advisory: not used to decide)"
        return Verdict(
            check=name, outcome=outcome, reason=f"{reason} [{FIXED_HORIZON_NOTE}]",
            estimate=est if est is None or math.isfinite(est) else None,
            evidence=evidence, evidence_kind=kind, threshold=1 - c.confidence,
            sample_sizes={"intervals": len(self.canary)}, gating=False,
            details={"fixed_horizon": True, "level": 1 - c.confidence},
        )

    def to_state(self) -> dict[str, Any]:
        return {"canary": self.canary, "stable": self.stable, "counts": self.counts}

    def load_state(self, state: dict[str, Any]) -> None:
        self.canary = list(state["canary"])
        self.stable = list(state["stable"])
        self.counts = list(state["counts"])
