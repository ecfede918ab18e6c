"""The `simulate` metric source: seeded synthetic per-version traffic, no Prometheus needed.

Owns the traffic model used by the embedded default (simulate source + dry-run router), the
engine tests and the demo. For a window [t0, t1) it draws, per version:

- requests: total live traffic ~ Poisson(rps * seconds), split between the versions by the
  canary's share of traffic under the policy's strategy (see `canary_share`);
- errors: Binomial(requests, errorRate), with a Gamma(1/b, b) multiplier per version and
  window when `burstiness` b > 0 (overdispersion: bursts such as a pod restart);
- latency: a histogram over fixed bucket bounds of a lognormal fitted to the version's
  latencyMedian and latencyP99 (median = exp(mu), p99 = exp(mu + 2.326 sigma)).

`regressionAboveWeight`: the canary's own figures apply only while its share of traffic is
above that weight; below, it behaves like stable (a regression that only shows under load).

Determinism: the random stream is seeded from (seed, t0, t1) only, so a replay or a restarted
engine asking for the same window gets the same numbers, and the same window at another weight
uses the same random draws (common random numbers).
"""

from __future__ import annotations

import math
import zlib
from datetime import datetime

import numpy as np
from scipy.stats import binom, norm

from analyzer.core.types import Histogram, Samples, VersionSample
from analyzer.policy import Policy, SimulatedVersion, SimulateSource

#: Histogram bounds in seconds (+Inf last): Prometheus' defaults, finer between 50 ms and 1 s
#: where service latencies live so that tail-exceedance tests have bounds to choose from.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5,
    2.0, 2.5, 5.0, 10.0, math.inf,
)

#: Share of live requests that match an A/B header or cookie route (simulated audience).
AB_MATCH_SHARE = 0.10
#: Synthetic test traffic a blue-green preview gets (as a share of rps) when nothing is mirrored.
PREVIEW_TEST_SHARE = 0.10

_Z99 = float(norm.ppf(0.99))


def lognormal_params(median_s: float, p99_s: float) -> tuple[float, float]:
    """(mu, sigma) of the lognormal with this median and 99th percentile (seconds)."""
    median_s = max(median_s, 1e-6)
    p99_s = max(p99_s, median_s * 1.000001)
    mu = math.log(median_s)
    return mu, (math.log(p99_s) - mu) / _Z99


def bucket_probabilities(version: SimulatedVersion, bounds: tuple[float, ...]) -> np.ndarray:
    """Probability mass of each bucket (non-cumulative) for a version's latency lognormal."""
    mu, sigma = lognormal_params(
        version.latencyMedian.total_seconds(), version.latencyP99.total_seconds()
    )
    finite = np.array([b for b in bounds if math.isfinite(b)])
    cdf = norm.cdf((np.log(finite) - mu) / sigma)
    cdf = np.concatenate([cdf, [1.0]])
    return np.diff(np.concatenate([[0.0], cdf])).clip(min=0.0)


class SimulatedMetricSource:
    """A MetricSource drawing synthetic traffic from the policy's `simulate` metrics block.

    `canary_weight` passed to `fetch` is the live weight the router was told. For the
    canary strategy it sets the canary's share; for ab, blue-green and mirror the share
    follows the strategy (header audience, preview traffic, mirrored copies) while the
    weight is below 100.
    """

    def __init__(self, policy: Policy, seed: int | None = None) -> None:
        spec = policy.spec.metrics
        if not isinstance(spec, SimulateSource):
            raise ValueError(
                f"policy {policy.name}: spec.metrics.source is {spec.source!r}, "
                "the simulated source needs source: simulate"
            )
        self.policy = policy
        self.spec = spec
        if seed is None:
            seed = spec.seed
        if seed is None:
            # No seed given: derive one from the policy name so runs stay reproducible.
            seed = zlib.crc32(policy.name.encode())
        self.seed = int(seed)
        self.bounds = LATENCY_BUCKETS
        self._probs = {
            "stable": bucket_probabilities(spec.stable, self.bounds),
            "canary": bucket_probabilities(spec.canary, self.bounds),
        }

    # -- the traffic model -------------------------------------------------------------

    def canary_share(self, canary_weight: float | None) -> tuple[float, float]:
        """(share of live traffic sent to the canary, share copied to it on top).

        The first moves requests away from stable; the second (mirroring, preview test
        traffic) adds canary requests without taking any from stable.
        """
        strategy = self.policy.spec.strategy
        w = 0.0 if canary_weight is None else float(canary_weight)
        if strategy.type == "canary" or w >= 100:
            return min(max(w, 0.0), 100.0) / 100.0, 0.0
        if strategy.type == "ab":
            return AB_MATCH_SHARE, 0.0
        if strategy.type == "mirror" or strategy.mirrorPercent is not None:
            return 0.0, (strategy.mirrorPercent or 0.0) / 100.0
        return 0.0, PREVIEW_TEST_SHARE  # blue-green preview without mirroring

    def fetch(self, t0: datetime, t1: datetime, canary_weight: float | None = None) -> Samples:
        seconds = (t1 - t0).total_seconds()
        query = (
            f"simulate(seed={self.seed}, rps={self.spec.rps:g}, "
            f"strategy={self.policy.spec.strategy.type})"
        )
        if seconds <= 0:
            return Samples(t0, t1, None, None, canary_weight,
                           no_data_reason=f"empty window {t0.isoformat()}..{t1.isoformat()}",
                           queries=(query,))
        rng = np.random.default_rng(
            [self.seed & 0xFFFFFFFF, _ms(t0) & 0xFFFFFFFFFFFF, _ms(t1) & 0xFFFFFFFFFFFF]
        )
        live_share, copy_share = self.canary_share(canary_weight)
        # Always draw the same number of variates in the same order, whatever the weight,
        # so that windows stay comparable across weights (common random numbers).
        total = int(rng.poisson(self.spec.rps * seconds))
        u_split = rng.random()
        copies_lambda = self.spec.rps * seconds * copy_share
        copies_seed = rng.integers(0, 2**63 - 1)
        n_canary_live = int(_binom_from_uniform(total, live_share, u_split))
        n_stable = total - n_canary_live
        n_copies = int(np.random.default_rng(copies_seed).poisson(copies_lambda)) if (
            copies_lambda > 0) else 0
        n_canary = n_canary_live + n_copies

        effective_weight = 100.0 * (live_share + copy_share)
        above = self.spec.regressionAboveWeight
        canary_figures = self.spec.canary if (
            above is None or effective_weight > above
        ) else self.spec.stable
        canary_probs = self._probs["canary"] if canary_figures is self.spec.canary else (
            self._probs["stable"])

        stable = self._version(rng, n_stable, self.spec.stable, self._probs["stable"])
        canary = self._version(rng, n_canary, canary_figures, canary_probs)
        return Samples(
            t0=t0, t1=t1, stable=stable, canary=canary, canary_weight=canary_weight,
            queries=(query,),
        )

    def _version(
        self, rng: np.random.Generator, n: int, figures: SimulatedVersion, probs: np.ndarray
    ) -> VersionSample:
        # Draw the burst multiplier unconditionally to keep the stream aligned.
        b = self.spec.burstiness
        mult = float(rng.gamma(1.0 / b, b)) if b > 0 else 1.0
        p = min(1.0, figures.errorRate * mult)
        errors = int(rng.binomial(n, p)) if n > 0 else 0
        counts = rng.multinomial(n, probs) if n > 0 else np.zeros(len(probs), dtype=int)
        cumulative = tuple(int(c) for c in np.cumsum(counts))
        return VersionSample(
            requests=n, errors=errors, latency=Histogram(le=self.bounds, counts=cumulative)
        )


def _binom_from_uniform(n: int, p: float, u: float) -> int:
    """Binomial(n, p) by inversion of one uniform: monotone in p for a fixed `u`, so a
    higher weight never gives the canary fewer requests in the same window."""
    if n == 0 or p <= 0:
        return 0
    if p >= 1:
        return n
    return int(binom.ppf(u, n, p))


def _ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)
