"""Built-in Prometheus presets: the real metric and label names of each mesh / ingress / platform.

A preset says which counter counts requests, which matcher picks the errors, which histogram
holds latency (and in which unit its `le` bounds are), and which labels carry the version, the
service and the namespace. Names were checked against each project's own documentation or
source (links on each preset). Nothing here does I/O; PromQL is built in
`analyzer.sources.prometheus.source`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
MatchOp = Literal["=", "!=", "=~", "!~"]


@dataclass(frozen=True)
class Matcher:
    """One label matcher, e.g. `reporter="destination"` or `response_code=~"5.."`.

    Preset matchers are trusted constants; user values go through the escaping in
    `analyzer.sources.prometheus.source` instead.
    """

    label: str
    op: MatchOp
    value: str


@dataclass(frozen=True)
class Preset:
    """The metric and label names one provider exports.

    `version_mode` "value": the version label holds the stable/canary names of the policy.
    "canary-flag" (NGINX Ingress): the label is empty for the stable backend and holds the
    canary upstream's name for the canary, so any non-empty value counts as the canary.
    `latency_scale` turns the `le` bounds into seconds (0.001 for millisecond histograms).
    `service_label`/`namespace_label` None: the provider has no such label; the rollout is then
    told apart by its version values alone.
    """

    name: str
    requests_metric: str
    error_matcher: Matcher
    latency_metric: str | None
    latency_scale: float
    version_label: str
    service_label: str | None
    namespace_label: str | None
    fixed: tuple[Matcher, ...] = ()
    version_mode: Literal["value", "canary-flag"] = "value"
    reference: str = ""

    def __post_init__(self) -> None:
        for label in (self.version_label, self.service_label, self.namespace_label):
            if label is not None and not LABEL_NAME.match(label):
                raise ValueError(f"preset {self.name}: invalid label name {label!r}")


ISTIO = Preset(
    name="istio",
    requests_metric="istio_requests_total",
    error_matcher=Matcher("response_code", "=~", "5.."),
    latency_metric="istio_request_duration_milliseconds_bucket",
    latency_scale=0.001,
    version_label="destination_version",
    service_label="destination_service_name",
    namespace_label="destination_service_namespace",
    # Server-side proxy reports only: the client side reports the same request a second time.
    fixed=(Matcher("reporter", "=", "destination"),),
    reference="https://istio.io/latest/docs/reference/config/metrics/",
)

NGINX_INGRESS = Preset(
    name="nginx-ingress",
    requests_metric="nginx_ingress_controller_requests",
    error_matcher=Matcher("status", "=~", "5.."),
    latency_metric="nginx_ingress_controller_request_duration_seconds_bucket",
    latency_scale=1.0,
    version_label="canary",
    service_label="ingress",
    namespace_label="namespace",
    version_mode="canary-flag",
    reference="https://github.com/kubernetes/ingress-nginx/blob/main/docs/user-guide/monitoring.md"
    " (labels: internal/ingress/metric/collectors/socket.go)",
)

KNATIVE = Preset(
    name="knative",
    requests_metric="revision_app_request_count",
    error_matcher=Matcher("response_code_class", "=", "5xx"),
    latency_metric="revision_app_request_latencies_bucket",
    latency_scale=0.001,
    version_label="revision_name",
    service_label="configuration_name",
    namespace_label="namespace_name",
    reference="https://knative.dev/docs/serving/observability/metrics/serving-metrics/ "
    "(queue-proxy app_request_count / app_request_latencies, milliseconds)",
)

SELDON = Preset(
    name="seldon",
    requests_metric="seldon_api_executor_server_requests_seconds_count",
    error_matcher=Matcher("code", "=~", "5.."),
    latency_metric="seldon_api_executor_server_requests_seconds_bucket",
    latency_scale=1.0,
    version_label="predictor_name",
    service_label="deployment_name",
    # The executor exports no namespace label of its own; add `labels: {namespace: ...}` (or set
    # namespaceLabel) when your scrape config attaches one.
    namespace_label=None,
    reference="https://docs.seldon.io/projects/seldon-core/en/latest/analytics/analytics.html",
)

LINKERD = Preset(
    name="linkerd",
    requests_metric="response_total",
    error_matcher=Matcher("classification", "=", "failure"),
    latency_metric="response_latency_ms_bucket",
    latency_scale=0.001,
    # Linkerd labels inbound traffic with the receiving workload; stable and canary are two
    # Deployments, so the deployment name is the version.
    version_label="deployment",
    service_label=None,
    namespace_label="namespace",
    fixed=(Matcher("direction", "=", "inbound"),),
    reference="https://linkerd.io/2/reference/proxy-metrics/",
)

GENERIC = Preset(
    name="generic",
    requests_metric="http_requests_total",
    error_matcher=Matcher("code", "=~", "5.."),
    latency_metric="http_request_duration_seconds_bucket",
    latency_scale=1.0,
    version_label="version",
    service_label="service",
    namespace_label="namespace",
    reference="https://prometheus.io/docs/practices/naming/ (client library conventions)",
)

PRESETS: dict[str, Preset] = {
    p.name: p for p in (ISTIO, NGINX_INGRESS, KNATIVE, SELDON, LINKERD, GENERIC)
}


def get_preset(name: str) -> Preset:
    """The preset called `name`; KeyError names the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
