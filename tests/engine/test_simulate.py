"""The simulate metric source: deterministic, shares follow the weight, regressions injectable."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from analyzer.policy import parse_policy
from analyzer.sources.factory import build_metric_source
from analyzer.sources.simulate import SimulatedMetricSource, lognormal_params

from .conftest import T0, make_policy, policy_yaml

W = timedelta(seconds=30)


def test_same_seed_and_window_same_data():
    p = make_policy()
    a, b = SimulatedMetricSource(p), build_metric_source(p)
    for k in range(5):
        t0 = T0 + k * W
        assert a.fetch(t0, t0 + W, 20) == b.fetch(t0, t0 + W, 20)
    other = SimulatedMetricSource(p, seed=99)
    assert other.fetch(T0, T0 + W, 20) != a.fetch(T0, T0 + W, 20)


def test_canary_share_follows_weight():
    src = SimulatedMetricSource(make_policy(rps=1000))
    for w in (5, 25, 50):
        s = src.fetch(T0, T0 + timedelta(minutes=10), w)
        total = s.stable.requests + s.canary.requests
        share = s.canary.requests / total
        assert abs(share - w / 100) < 4 * np.sqrt(w / 100 * (1 - w / 100) / total)
    zero = src.fetch(T0, T0 + W, 0)
    assert zero.canary.requests == 0


def test_error_rate_latency_and_regression_above_weight():
    text = policy_yaml(canary_error=0.05, rps=1000).replace(
        "    canary: {errorRate: 0.05}",
        "    canary: {errorRate: 0.05, latencyMedian: 200ms, latencyP99: 1s}\n"
        "    regressionAboveWeight: 30")
    src = SimulatedMetricSource(parse_policy(text))
    low = src.fetch(T0, T0 + timedelta(minutes=30), 20)
    high = src.fetch(T0, T0 + timedelta(minutes=30), 50)
    assert abs(low.canary.errors / low.canary.requests - 0.01) < 0.004
    assert abs(high.canary.errors / high.canary.requests - 0.05) < 0.006
    # median of the histogram: half the requests are at or below the bucket holding 200ms
    h = high.canary.latency
    idx = h.le.index(0.2)
    assert h.counts[idx - 1] < h.total / 2 <= h.counts[idx + 1]


def test_lognormal_fit():
    mu, sigma = lognormal_params(0.05, 0.25)
    assert np.isclose(np.exp(mu), 0.05)
    assert np.isclose(np.exp(mu + 2.3263478740408408 * sigma), 0.25)


def test_mirror_copies_without_taking_stable_traffic():
    src = SimulatedMetricSource(make_policy(strategy="type: mirror, mirrorPercent: 50"))
    s = src.fetch(T0, T0 + timedelta(minutes=5), None)
    canary_only = SimulatedMetricSource(make_policy()).fetch(T0, T0 + timedelta(minutes=5), 0)
    assert s.stable.requests == canary_only.stable.requests  # stable keeps every request
    assert 0.4 < s.canary.requests / s.stable.requests < 0.6


def test_burstiness_overdisperses_errors():
    calm = SimulatedMetricSource(make_policy(rps=200))
    bursty_text = policy_yaml(rps=200).replace("    seed: 3", "    seed: 3\n    burstiness: 1")
    bursty = SimulatedMetricSource(parse_policy(bursty_text))

    def dispersion(src):
        errs = [src.fetch(T0 + k * W, T0 + (k + 1) * W, 0).stable.errors for k in range(200)]
        return np.var(errs) / np.mean(errs)

    assert dispersion(calm) < 1.5 < 3 < dispersion(bursty)
