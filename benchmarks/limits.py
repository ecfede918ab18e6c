"""What no judge can do: the two impossibility results of docs/statistics.md (section 3.4), as
printed tables (benchmarks/results/limits.md).

L1  Distribution-free bursts. A per-interval factor that is an e-value under EVERY joint law of
    the two versions' per-interval rates with E q_c <= r0 E q_s (any bursts, as long as both
    versions' multipliers share a mean; the betting e-process prod(1 + lambda_i D_i) is one)
    grows by at most log(1 + delta / r0) per interval in expectation, delta the difference of
    per-request rates, whatever the traffic. Table: the fewest intervals to reach 1/alpha_j.
L2  Bursts not seen before the first tick. (a) If the null admits any mean-1 burst law with CV
    <= kappa, it admits the two-point law with mass w at the alternative itself, so every
    level-alpha_j test has first-tick power <= alpha_j / w. (b) Even for Gamma bursts in the
    canary only, the Neyman-Pearson test (the best there is, knowing everything) has the
    tabled power after 1, 2, 3 ticks (10 canary req/s at 5 %, 30 s ticks, 1 % errors, 5x).

Run: `.venv/bin/python benchmarks/limits.py` (about a minute).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
R0 = 1.25


def l1_min_intervals(p_s: float, ratio: float, r0: float, alpha: float,
                     beta: float = 0.05) -> float:
    """Wald-type lower bound on the expected intervals before a distribution-free regression
    e-process reaches 1/alpha (with probability 1 - beta) at a true ratio `ratio`."""
    growth = math.log1p((ratio - r0) * p_s / r0)
    return (1 - beta) * math.log(1 / alpha) / growth if growth > 0 else math.inf


def l1_min_intervals_promotion(p_s: float, ratio: float, r0: float, beta: float) -> float:
    """The mirror bound for non-inferiority (the factor is <= 1 + c (r0 q_s - q_c), c <= 1)."""
    growth = math.log1p((r0 - ratio) * p_s)
    return math.log(1 / beta) / growth if growth > 0 else math.inf


def l2_point_mass_weight(ratio: float, kappa: float) -> float:
    """The largest w for which a mean-1 law with CV <= kappa puts mass w at `ratio` (the rest
    at one point): the null then contains the alternative with probability w."""
    lo, hi = 0.0, 1.0 / ratio
    for _ in range(100):
        w = (lo + hi) / 2
        rest = (1 - ratio * w) / (1 - w)
        if w * ratio**2 + (1 - w) * rest**2 - 1 <= kappa**2:
            lo = w
        else:
            hi = w
    return lo


def l2_canary_only_power(n_c: float, p_s: float, r0: float, ratio: float, kappa: float,
                         alpha: float, ticks: int, sims: int = 100_000, seed: int = 2) -> float:
    """Power of the Neyman-Pearson test of 'canary at r0 with Gamma bursts of CV kappa' against
    'canary at `ratio`, Poisson' on `ticks` intervals (the stable's rate known: only the
    canary's counts matter), by simulation of the exact per-interval log-likelihood ratio."""
    rng = np.random.default_rng(seed)
    mu0, mu1 = n_c * r0 * p_s, n_c * ratio * p_s
    hi = int(mu1 * 6 + 60 + mu0 * 40)
    k = 1 / kappa**2
    xs = np.arange(hi + 1)
    null = stats.nbinom.pmf(xs, k, k / (k + mu0))
    alt = stats.poisson.pmf(xs, mu1)
    with np.errstate(divide="ignore"):
        llr = np.nan_to_num(np.log(alt) - np.log(null), neginf=-1e9)
    x0 = rng.choice(hi + 1, size=(sims, ticks), p=null / null.sum())
    x1 = rng.choice(hi + 1, size=(sims, ticks), p=alt / alt.sum())
    l0, l1 = llr[x0].sum(axis=1), llr[x1].sum(axis=1)
    return float((l1 > np.quantile(l0, 1 - alpha)).mean())


def tables() -> str:
    out = ["## L1: distribution-free bursts (the betting e-process and any other)", "",
           "Fewest expected 30 s intervals to roll back (1 - beta of the time), stable error "
           "rate 1 %, r0 1.25:", "",
           "| ratio | alpha_j 0.005 | alpha_j 0.025 |", "|---|---|---|"]
    for r in (1.5, 2.0, 5.0):
        out.append(f"| {r:g}x | {l1_min_intervals(0.01, r, R0, 0.005):.0f} | "
                   f"{l1_min_intervals(0.01, r, R0, 0.025):.0f} |")
    out += ["", f"Promotion of a healthy canary (r = 1) at beta 0.05: at least "
            f"{l1_min_intervals_promotion(0.01, 1.0, R0, 0.05):.0f} intervals.", "",
            "## L2a: any burst law with CV <= kappa, a 5x regression (4 r0)", "",
            "| CV | mass w at the alternative | first-tick power <= (alpha_j 0.005) | "
            "(alpha_j 0.025) |", "|---|---|---|---|"]
    for kappa in (0.3, 0.5, 0.7, 1.0, 1.5):
        w = l2_point_mass_weight(5 / R0, kappa)
        out.append(f"| {kappa:g} | {w:.3f} | {min(1.0, 0.005 / w):.3f} | "
                   f"{min(1.0, 0.025 / w):.3f} |")
    out += ["", "## L2b: Gamma bursts in the canary only: the Neyman-Pearson test's power", "",
            "5x errors, 10 canary req/s (300 requests per 30 s tick), 1 % base rate:", "",
            "| CV | alpha_j | power after 1 / 2 / 3 ticks |", "|---|---|---|"]
    for alpha in (0.005, 0.025):
        for kappa in (0.5, 0.7, 1.0, 1.5):
            pw = [l2_canary_only_power(300, 0.01, R0, 5.0, kappa, alpha, t) for t in (1, 2, 3)]
            out.append(f"| {kappa:g} | {alpha:g} | " + " / ".join(f"{p:.2f}" for p in pw) + " |")
    return "\n".join(out) + "\n"


def main() -> int:
    text = "# Limits (benchmarks/limits.py)\n\n" + tables()
    print(text)
    path = ROOT / "benchmarks" / "results" / "limits.md"
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
