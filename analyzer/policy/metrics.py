"""`spec.metrics`: where a tick's samples come from (Prometheus presets and queries, or the
`simulate` source).
"""

from __future__ import annotations

from collections.abc import Sequence
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
from analyzer.policy.checks import Check, ClassicCheck, LatencyCheck, ThresholdCheck, check_name
from analyzer.policy.routers import GatewayApiRouter, RouterSpec

# --------------------------------------------------------------------------- metric sources

PRESETS = (
    "istio", "gateway-istio", "nginx-ingress", "knative", "knative-otel", "seldon", "seldon-v2",
    "gateway-contour", "gateway-envoy", "linkerd", "generic",
)
# Presets whose metrics carry the gRPC status of a call (the others see HTTP statuses only).
GRPC_PRESETS = ("istio", "gateway-istio", "seldon", "seldon-v2")
# Presets without a per-version latency histogram, and why.
NO_LATENCY = {
    "seldon-v2": "Seldon Core 2 has no per-model latency histogram: its only one, "
    "seldon_model_infer_api_seconds, is per server replica and mixes every model loaded on it",
}
ENVOY_GATEWAY_PER_RULE = (
    "Envoy Gateway puts every backendRef of an HTTPRoute rule into one Envoy cluster "
    "(httproute/<namespace>/<route>/rule/<n>), so its metrics cannot tell the stable Service "
    "from the canary. Either give a backendRef of that rule a filter (any, e.g. a response "
    "header; Envoy Gateway >= 1.4 then makes one cluster per backendRef, "
    "httproute/<namespace>/<route>/rule/<n>/backend/<index>) and set envoyGatewayClusters: "
    "per-backend with target.stable/canary set to those two cluster names; or enable the "
    "EnvoyProxy's spec.mergeBackends (Envoy Gateway >= 1.9, experimental: one cluster "
    "service/<namespace>/<service>/<port> per Service) and set envoyGatewayClusters: merged; "
    "or use the backends' own metrics (preset generic, istio or linkerd)"
)


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
        "istio", "gateway-istio", "nginx-ingress", "knative", "knative-otel", "seldon",
        "seldon-v2", "gateway-contour", "gateway-envoy", "linkerd", "generic", "custom",
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
    grpcErrors: Literal["server", "non-ok"] = Field(
        default="server",
        description="gRPC statuses counted as errors (presets istio, gateway-istio, seldon, "
        "seldon-v2): server = Unknown, DeadlineExceeded, Unimplemented, Internal, Unavailable, "
        "DataLoss (those that map to HTTP 5xx); non-ok = every status but OK",
    )
    envoyGatewayClusters: Literal["per-backend", "merged"] | None = Field(
        default=None,
        description="preset gateway-envoy: how Envoy Gateway names the backends' clusters "
        "(per-backend: a backendRef has a filter; merged: EnvoyProxy mergeBackends)",
    )

    @model_validator(mode="after")
    def _custom(self) -> PrometheusSource:
        if self.preset == "custom" and self.queries is None:
            raise ValueError("preset custom needs queries.requests and queries.errors")
        if self.preset != "custom" and self.queries is not None:
            raise ValueError("queries are only used with preset: custom")
        if self.grpcErrors != "server" and self.preset not in GRPC_PRESETS:
            raise ValueError(
                f"grpcErrors: preset {self.preset} cannot see gRPC statuses (its metrics "
                f"carry HTTP statuses only); it applies to {', '.join(GRPC_PRESETS)}")
        if self.preset == "gateway-envoy" and self.envoyGatewayClusters is None:
            raise ValueError(f"preset gateway-envoy: {ENVOY_GATEWAY_PER_RULE}")
        if self.envoyGatewayClusters is not None and self.preset != "gateway-envoy":
            raise ValueError("envoyGatewayClusters is only used with preset: gateway-envoy")
        if self.preset == "gateway-istio" and "source_workload" not in self.labels:
            raise ValueError(
                "preset gateway-istio needs labels.source_workload: the gateway's Deployment "
                "(<Gateway name>-istio for a Gateway API Gateway, istio-ingressgateway for the "
                "classic one; add source_workload_namespace too). Without it, calls from any "
                "mesh client to the two Services are counted as gateway traffic")
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


def uses_latency(check: Check) -> bool:
    """Whether a check needs a latency histogram."""
    if isinstance(check, LatencyCheck):
        return True
    return isinstance(check, ThresholdCheck | ClassicCheck) and check.metric == "latency"


def metrics_fit_problems(
    metrics: PrometheusSource | SimulateSource, *, version_label: str | None,
    versions: tuple[str, ...], router: RouterSpec, strategy: str, checks: Sequence[Check],
) -> list[str]:
    """What the rest of the policy asks of the metrics that the preset cannot give (empty when
    it fits): a latency check without a latency histogram, a version label the exporter does
    not put versions in, Gateway API values the router does not say."""
    if not isinstance(metrics, PrometheusSource):
        return []
    preset, out = metrics.preset, []
    if preset in NO_LATENCY:
        for i, c in enumerate(checks):
            if uses_latency(c):
                out.append(f"spec.checks[{i}] ({check_name(c)}): preset {preset} cannot check "
                           f"latency per version: {NO_LATENCY[preset]}; remove the check "
                           "(error-rate and error-rate threshold checks work)")
    if preset == "nginx-ingress" and version_label not in (None, "canary"):
        out.append(
            f"spec.target.versionLabel: {version_label!r} cannot tell the versions apart with "
            "preset nginx-ingress: ingress-nginx reports canary requests with the main "
            "Ingress and its Service (labels ingress and service), and only the canary label "
            "marks them; remove versionLabel (target.stable/canary are then display names)")
    if preset == "gateway-istio" and strategy == "mirror":
        out.append("spec.strategy: preset gateway-istio cannot see mirrored requests: Istio "
                   "reports them from the destination sidecar only; use preset istio")
    wants_port = preset == "gateway-contour" or (
        preset == "gateway-envoy" and metrics.envoyGatewayClusters == "merged")
    if wants_port and isinstance(router, GatewayApiRouter) and router.port is None:
        out.append(f"spec.router.port: preset {preset} names Envoy clusters after the "
                   "backendRef's port; set router.port")
    if metrics.envoyGatewayClusters == "per-backend" and not all(
        "/backend/" in v for v in versions
    ):
        out.append("spec.target.stable/canary: with envoyGatewayClusters: per-backend they are "
                   "the two Envoy cluster names, httproute/<namespace>/<route>/rule/<n>/"
                   "backend/<index> (index: the backendRef's position in the rule, from 0)")
    return out
