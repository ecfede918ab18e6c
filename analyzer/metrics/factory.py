"""Builds the metric source a policy asks for (`spec.metrics.source`)."""

from __future__ import annotations

from analyzer.metrics.base import MetricSource
from analyzer.policy import Policy, PrometheusSource, SimulateSource


def build_metric_source(policy: Policy, *, seed: int | None = None) -> MetricSource:
    """The MetricSource for `policy`: Prometheus or the seeded simulator.

    `seed` overrides the simulate source's seed (replays and tests); Prometheus ignores it.
    """
    spec = policy.spec.metrics
    if isinstance(spec, SimulateSource):
        from analyzer.metrics.simulate import SimulatedMetricSource

        return SimulatedMetricSource(policy, seed=seed)
    if isinstance(spec, PrometheusSource):
        from analyzer.metrics.prometheus import PrometheusMetricSource

        return PrometheusMetricSource(policy)
    raise ValueError(f"policy {policy.name}: unknown metric source {spec!r}")
