"""Builds the metric source a policy asks for (`spec.metrics.source`)."""

from __future__ import annotations

from analyzer.policy import Policy, PrometheusSource, SimulateSource
from analyzer.sources.base import MetricSource


def build_metric_source(policy: Policy, *, seed: int | None = None) -> MetricSource:
    """The MetricSource for `policy`: Prometheus or the seeded simulator.

    `seed` overrides the simulate source's seed (replays and tests); Prometheus ignores it.
    """
    spec = policy.spec.metrics
    if isinstance(spec, SimulateSource):
        from analyzer.sources.simulate import SimulatedMetricSource

        return SimulatedMetricSource(policy, seed=seed)
    if isinstance(spec, PrometheusSource):
        from analyzer.sources.prometheus.source import PrometheusMetricSource

        return PrometheusMetricSource(policy)
    raise ValueError(f"policy {policy.name}: unknown metric source {spec!r}")
