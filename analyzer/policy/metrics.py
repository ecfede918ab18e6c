"""`spec.metrics`: where a tick's samples come from (Prometheus presets and queries, or the
`simulate` source).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import (
    Field,
    model_validator,
)

from analyzer.policy.base import (
    Duration,
    HttpUrl,
    Model,
    Percent,
    at_most,
)

# --------------------------------------------------------------------------- metric sources

PRESETS = ("istio", "nginx-ingress", "knative", "seldon", "linkerd", "generic")


class PromQueries(Model):
    """Custom PromQL templates. Placeholders: {namespace}, {service}, {stable}, {canary} (escaped
    for a double-quoted PromQL string), {version_label}, {versions} (a regex alternation of the
    escaped version values), {extra_matchers} (`, name="value"...` or empty). Each must return
    counters summed `by ({version_label})` (latency: `by ({version_label}, le)`). See
    docs/prometheus.md."""

    requests: str
    errors: str
    latency: str | None = None
    latencyUnit: Literal["s", "ms"] = Field(
        default="s", description="unit of the latency histogram's le bounds"
    )


class PrometheusSource(Model):
    source: Literal["prometheus"]
    address: HttpUrl = "http://localhost:9090"
    preset: Literal[
        "istio", "nginx-ingress", "knative", "seldon", "linkerd", "generic", "custom"
    ] = "generic"
    queries: PromQueries | None = None
    labels: dict[str, str] = Field(
        default_factory=dict, description="extra label matchers added to every query"
    )
    timeout: Annotated[Duration, at_most("5m")] = Field(default=timedelta(seconds=10))
    retries: int = Field(default=2, ge=0, le=10)
    headers: dict[str, str] = Field(default_factory=dict, description="e.g. Authorization")
    namespaceLabel: str | None = Field(
        default=None, pattern=r"^([a-zA-Z_][a-zA-Z0-9_]*)?$",
        description="label carrying the namespace; default: the preset's; '' = no namespace filter",
    )

    @model_validator(mode="after")
    def _custom(self) -> PrometheusSource:
        if self.preset == "custom" and self.queries is None:
            raise ValueError("preset custom needs queries.requests and queries.errors")
        if self.preset != "custom" and self.queries is not None:
            raise ValueError("queries are only used with preset: custom")
        return self


class SimulatedVersion(Model):
    errorRate: float = Field(default=0.01, ge=0, le=1, description="errors per request")
    latencyMedian: Annotated[Duration, at_most("1h")] = Field(
        default=timedelta(milliseconds=50))
    latencyP99: Annotated[Duration, at_most("1h")] = Field(default=timedelta(milliseconds=250))


class SimulateSource(Model):
    """Seeded synthetic traffic: runs the engine with no Prometheus at all."""

    source: Literal["simulate"]
    rps: float = Field(default=50, gt=0, le=1e7,
                       description="requests per second for both versions (at most 1e7)")
    seed: int | None = None
    stable: SimulatedVersion = SimulatedVersion()
    canary: SimulatedVersion = SimulatedVersion()
    regressionAboveWeight: Percent | None = Field(
        default=None, description="the canary's own figures apply only above this weight"
    )
    burstiness: float = Field(
        default=0, ge=0, le=100, description="overdispersion of errors (0 = Poisson)"
    )
    allowSimulatedMetrics: bool = Field(
        default=False,
        description="allow this invented traffic to drive a router other than dry-run (tests, "
        "demos): without it, such a policy is refused, since it would move real traffic on "
        "fake data",
    )


MetricsSpec = Annotated[PrometheusSource | SimulateSource, Field(discriminator="source")]
