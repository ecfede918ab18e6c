"""Built-in Prometheus presets: the metric and label names each exporter really emits.

A preset says which counter counts requests, which matchers pick the errors, which histogram
holds latency (and in which unit its `le` bounds are), which labels carry the version, the
service and the namespace, and what to look up when a query finds nothing. Every name was
checked against the exporter's source (repository, path and tag on each preset; the evidence
and the version ranges are in docs/prometheus.md). Nothing here does I/O; selectors are built
in `selection.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
MatchOp = Literal["=", "!=", "=~", "!~"]


@dataclass(frozen=True)
class Matcher:
    """One label matcher, e.g. `reporter="destination"` or `response_code=~"5.."`.

    `value` is raw (a literal, or an RE2 regex for `=~`/`!~`); rendering escapes it for the
    PromQL string (promql.py), so user values can be matchers too.
    """

    label: str
    op: MatchOp
    value: str

    def matches(self, value: str) -> bool:
        """What Prometheus decides for a series whose label has `value` ("" = absent)."""
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        hit = re.fullmatch(self.value, value) is not None  # PromQL regexes are anchored
        return hit if self.op == "=~" else not hit


Alternatives = tuple[tuple[Matcher, ...], ...]
"""Error selectors: any of the conjunctions (each a tuple of matchers) marks an error. They are
disjoint by construction, and the query takes their union (`or`), so no request counts twice."""


@dataclass(frozen=True)
class Hint:
    """A look-up run when a query finds no series: if `label` has values among the series
    matching any of `matches` (selectors; `{namespace}` is the target's namespace), the cluster
    exports another shape than the preset's, and `says` (which may show the `{values}` seen)
    tells the user what to set."""

    label: str
    matches: tuple[str, ...]
    says: str
    kind: Literal["requests", "latency"] = "requests"


@dataclass(frozen=True)
class Preset:
    """The metric and label names one exporter emits.

    `version_mode` "value": the version label holds the stable/canary names of the policy.
    "canary-flag" (ingress-nginx): the label is empty for the stable backend and holds the
    canary upstream's name for the canary, so any non-empty value counts as the canary.
    `version_suffix`: an RE2 regex following each version name in the label (Knative pod names
    `<revision>-deployment-...`, Seldon Core 2 `<model>_<n>`); used only with the preset's own
    version label. `latency_scale` turns the `le` bounds into seconds (0.001 for ms).
    `service_label`/`namespace_label` None: the exporter has no such label.
    `namespace_exported`: the exporter writes the namespace label itself, so a scrape whose
    target labels collide (the Prometheus Operator without honorLabels) renames it
    `exported_<label>`; the source then reads either.
    `backend_value`: with a Gateway API router, the version values are built from its
    stableService/canaryService (`{namespace}`, `{service}`, `{port}`) instead of target.stable
    / target.canary. `mirror_suffix`: under strategy mirror, the service may also be reported
    as `<service><suffix>` (Envoy's shadow host).
    `latency_metric` None: no per-version histogram exists (the policy refuses latency checks,
    analyzer/policy/metrics.py says why).
    """

    name: str
    requests_metric: str
    error_matchers: Alternatives
    latency_metric: str | None
    latency_scale: float
    version_label: str
    service_label: str | None
    namespace_label: str | None
    fixed: tuple[Matcher, ...] = ()
    version_mode: Literal["value", "canary-flag"] = "value"
    version_suffix: str = ""
    requests_metric_also: tuple[str, ...] = ()
    error_matchers_non_ok: Alternatives | None = None
    namespace_exported: bool = False
    backend_value: str | None = None
    mirror_suffix: str = ""
    hints: tuple[Hint, ...] = ()
    reference: str = ""

    def __post_init__(self) -> None:
        for label in (self.version_label, self.service_label, self.namespace_label):
            if label is not None and not LABEL_NAME.match(label):
                raise ValueError(f"preset {self.name}: invalid label name {label!r}")

    @property
    def requests_metrics(self) -> tuple[str, ...]:
        return (self.requests_metric, *self.requests_metric_also)


# gRPC statuses a server is to blame for: the ones the gRPC/HTTP mapping turns into 5xx
# (google.rpc.Code: UNKNOWN 500, DEADLINE_EXCEEDED 504, UNIMPLEMENTED 501, INTERNAL 500,
# UNAVAILABLE 503, DATA_LOSS 500). Client-side statuses (NotFound, InvalidArgument, ...) are
# not errors, as HTTP 4xx are not.
GRPC_SERVER_CODES = "2|4|12|13|14|15"
GRPC_SERVER_NAMES = "Unknown|DeadlineExceeded|Unimplemented|Internal|Unavailable|DataLoss"

# Istio: a failed gRPC call usually answers HTTP 200 and carries its status in
# grpc_response_status; an Envoy-generated 503 on a gRPC call carries "14" as well, so the second
# alternative excludes 5xx rows: each request counts once.
_ISTIO_ERRORS: Alternatives = (
    (Matcher("response_code", "=~", "5.."),),
    (Matcher("response_code", "!~", "5.."),
     Matcher("grpc_response_status", "=~", GRPC_SERVER_CODES)),
)
_ISTIO_ERRORS_NON_OK: Alternatives = (
    (Matcher("response_code", "=~", "5.."),),
    # "" is an HTTP request (no status label), "0" is OK
    (Matcher("response_code", "!~", "5.."), Matcher("grpc_response_status", "!~", "0|")),
)
# Seldon (v1 executor and Core 2 agent): `code` is the HTTP status for REST and the gRPC status
# name for gRPC, so one matcher covers both and no row can match twice.
_SELDON_ERRORS: Alternatives = ((Matcher("code", "=~", f"5..|{GRPC_SERVER_NAMES}"),),)
_SELDON_ERRORS_NON_OK: Alternatives = ((Matcher("code", "!~", "[1-4]..|OK|"),),)

_KN_OC = "revision_app_request_count"
_KN_OTEL = "kn_serving_invocation_duration_seconds_count"
_KN_OTEL_EARLY = "kn_queueproxy_app_duration_seconds_count"
_SELDON_V1 = "seldon_api_executor_server_requests_seconds_count"
_SELDON_V2 = "seldon_model_infer_total"
_KN_OTEL_EARLY_BUCKET = "kn_queueproxy_app_duration_seconds_bucket"
_ENVOY_RQ = "envoy_cluster_upstream_rq"
# Hints look in the target's namespace, under the label each shape keeps it in.
_NS = 'namespace="{namespace}"'
_K8S_NS = 'k8s_namespace_name="{namespace}"'

ISTIO = Preset(
    name="istio",
    requests_metric="istio_requests_total",
    error_matchers=_ISTIO_ERRORS,
    error_matchers_non_ok=_ISTIO_ERRORS_NON_OK,
    latency_metric="istio_request_duration_milliseconds_bucket",
    latency_scale=0.001,
    version_label="destination_version",
    service_label="destination_service_name",
    namespace_label="destination_service_namespace",
    # Server-side proxy reports only: the client side reports the same request a second time,
    # and mirrored requests are reported by the destination only (istio/istio#23496).
    fixed=(Matcher("reporter", "=", "destination"),),
    mirror_suffix="-shadow",
    reference="istio/proxy source/extensions/filters/http/istio_stats/istio_stats.cc (1.18+; "
    "extensions/stats/plugin.cc before); https://istio.io/latest/docs/reference/config/metrics/",
)

GATEWAY_ISTIO = replace(
    ISTIO,
    name="gateway-istio",
    # The gateway's Envoy reports as a client (reporter="source"); the backendRef Service it
    # sent the request to is destination_service_name, so the two Services are the versions.
    version_label="destination_service_name",
    service_label=None,
    fixed=(Matcher("reporter", "=", "source"),),
    backend_value="{service}",
    mirror_suffix="",
    reference="istio/proxy istio_stats.cc (reporter source = client proxies and gateways)",
)

NGINX_INGRESS = Preset(
    name="nginx-ingress",
    requests_metric="nginx_ingress_controller_requests",
    error_matchers=((Matcher("status", "=~", "5.."),),),
    latency_metric="nginx_ingress_controller_request_duration_seconds_bucket",
    latency_scale=1.0,
    # Canary requests carry the main Ingress and its Service (nginx.tmpl sets $ingress_name and
    # $service_name per location); only `canary` ($proxy_alternative_upstream_name) tells them.
    version_label="canary",
    service_label="ingress",
    namespace_label="namespace",
    version_mode="canary-flag",
    namespace_exported=True,
    reference="kubernetes/ingress-nginx internal/ingress/metric/collectors/socket.go, "
    "rootfs/etc/nginx/lua/monitor.lua (canary label since controller-v1.0.2)",
)

KNATIVE = Preset(
    name="knative",
    requests_metric=_KN_OC,
    error_matchers=((Matcher("response_code_class", "=", "5xx"),),),
    latency_metric="revision_app_request_latencies_bucket",
    latency_scale=0.001,
    version_label="revision_name",
    service_label="configuration_name",
    namespace_label="namespace_name",
    hints=(
        Hint("__name__", (f'{{__name__=~"{_KN_OTEL}|{_KN_OTEL_EARLY}", {_NS}}}',
                          f'{{__name__=~"{_KN_OTEL}|{_KN_OTEL_EARLY}", {_K8S_NS}}}'),
             "no series for the OpenCensus names, but {values} has series: this looks like "
             "Knative >= 1.19 (OpenTelemetry); use preset knative-otel"),
    ),
    reference="knative/serving pkg/queue/request_metric.go (knative-v1.18.0): "
    "app_request_count, app_request_latencies (ms)",
)

KNATIVE_OTEL = Preset(
    name="knative-otel",
    requests_metric=_KN_OTEL,
    # 1.19.0-1.19.7 and 1.20.0 named the histogram kn.queueproxy.app.duration (#16290)
    requests_metric_also=(_KN_OTEL_EARLY,),
    error_matchers=((Matcher("http_response_status_code", "=~", "5.."),),),
    latency_metric="kn_serving_invocation_duration_seconds_bucket",
    latency_scale=1.0,
    # The revision is a resource attribute: on the scraped series only the pod name
    # (<revision>-deployment-<hash>-<hash>) carries it.
    version_label="pod",
    version_suffix="-deployment-.+",
    service_label=None,
    namespace_label="namespace",
    hints=(
        Hint("__name__", (f'{{__name__="{_KN_OC}", namespace_name="{{namespace}}"}}',),
             "{values} has series: this looks like Knative <= 1.18 (OpenCensus); use preset "
             "knative"),
        Hint("kn_revision_name", (f'{{__name__=~"{_KN_OTEL}|{_KN_OTEL_EARLY}", {_K8S_NS}}}',),
             "the series carry the resource attributes as labels (kn_revision_name values seen: "
             "{values}): set target.versionLabel: kn_revision_name and namespaceLabel: "
             "k8s_namespace_name"),
        Hint("__name__", (f'{{__name__="{_KN_OTEL_EARLY_BUCKET}", {_NS}}}',
                          f'{{__name__="{_KN_OTEL_EARLY_BUCKET}", {_K8S_NS}}}'),
             "{values} has series: Knative 1.19.0-1.19.7 and 1.20.0 record whole seconds in "
             "that histogram, so latency cannot be checked; remove the latency checks or "
             "upgrade to 1.19.9, 1.20.2 or later", kind="latency"),
    ),
    reference="knative/serving pkg/queue/request_metric.go, pkg/queue/sharedmain/otel.go "
    "(knative-v1.19.0+); otel-go exporters/prometheus",
)

SELDON = Preset(
    name="seldon",
    requests_metric=_SELDON_V1,
    error_matchers=_SELDON_ERRORS,
    error_matchers_non_ok=_SELDON_ERRORS_NON_OK,
    latency_metric="seldon_api_executor_server_requests_seconds_bucket",
    latency_scale=1.0,
    version_label="predictor_name",
    service_label="deployment_name",
    # The executor exports no namespace; Seldon's PodMonitor adds the target label `namespace`.
    namespace_label="namespace",
    hints=(
        Hint("kubernetes_namespace",
             (f'{{__name__="{_SELDON_V1}", kubernetes_namespace="{{namespace}}"}}',),
             "the namespace is in kubernetes_namespace (seldon-core-analytics' scrape config): "
             "set namespaceLabel: kubernetes_namespace"),
        Hint("__name__", (f'{{__name__="{_SELDON_V2}", {_NS}}}',),
             "{values} has series: this looks like Seldon Core 2; use preset seldon-v2"),
    ),
    reference="SeldonIO/seldon-core executor/api/metric (v1.18.0); PodMonitor in "
    "doc/source/analytics/analytics.md",
)

SELDON_V2 = Preset(
    name="seldon-v2",
    requests_metric=_SELDON_V2,
    error_matchers=_SELDON_ERRORS,
    error_matchers_non_ok=_SELDON_ERRORS_NON_OK,
    latency_metric=None,
    latency_scale=1.0,
    # model_internal = the served model and its version, <model>_<n>; n changes on every Model
    # update, so the policy names models and the preset adds the suffix. `model` is the model
    # the caller asked for (an Experiment's default model).
    version_label="model_internal",
    version_suffix="_[0-9]+",
    service_label="model",
    namespace_label="namespace",
    hints=(
        Hint("__name__", (f'{{__name__="{_SELDON_V1}", {_NS}}}',),
             "{values} has series: this looks like Seldon Core v1; use preset seldon"),
    ),
    reference="SeldonIO/seldon-core scheduler/pkg/metrics/agent.go (v2.0.0 .. v2.10.0)",
)

_EG_RULE_CLUSTER = f'{_ENVOY_RQ}{{envoy_cluster_name=~"httproute/[^/]+/[^/]+/rule/[0-9]+"}}'

GATEWAY_CONTOUR = Preset(
    name="gateway-contour",
    requests_metric=_ENVOY_RQ,
    error_matchers=((Matcher("envoy_response_code", "=~", "5.."),),),
    latency_metric="envoy_cluster_upstream_rq_time_bucket",
    latency_scale=0.001,
    # One Envoy cluster per backend Service, stat name <namespace>_<service>_<port>. The
    # `namespace` target label is Envoy's own, not the backend's: no namespace label.
    version_label="envoy_cluster_name",
    service_label=None,
    namespace_label=None,
    backend_value="{namespace}_{service}_{port}",
    hints=(
        Hint("envoy_cluster_name", (_EG_RULE_CLUSTER,),
             "clusters named httproute/<namespace>/<route>/rule/<n> (seen: {values}) are Envoy "
             "Gateway's: use preset gateway-envoy"),
    ),
    reference="projectcontour/contour internal/envoy/cluster.go AltStatName (v1.33.0); "
    "envoyproxy/envoy source/common/config/well_known_names.cc",
)

GATEWAY_ENVOY = replace(
    GATEWAY_CONTOUR,
    name="gateway-envoy",
    # Only with envoyGatewayClusters: merged (selection.py swaps this in); per-backend clusters
    # are named by the backendRef's index, which only the user knows.
    backend_value=None,
    hints=(
        Hint("envoy_cluster_name", (_EG_RULE_CLUSTER,),
             "only per-rule clusters exist (seen: {values}): Envoy Gateway put both versions "
             "into one cluster; see envoyGatewayClusters in docs/prometheus.md"),
    ),
    reference="envoyproxy/gateway internal/gatewayapi/helpers.go irRouteDestinationName, "
    "irDestinationSettingName, irBackendClusterName (v1.0.0 .. v1.9.0)",
)
ENVOY_GATEWAY_MERGED_VALUE = "service/{namespace}/{service}/{port}"

LINKERD = Preset(
    name="linkerd",
    requests_metric="response_total",
    error_matchers=((Matcher("classification", "=", "failure"),),),
    latency_metric="response_latency_ms_bucket",
    latency_scale=0.001,
    # Linkerd labels inbound traffic with the receiving workload; stable and canary are two
    # Deployments, so the deployment name is the version. The proxy classifies a gRPC call
    # with a non-OK status as a failure already.
    version_label="deployment",
    service_label=None,
    namespace_label="namespace",
    fixed=(Matcher("direction", "=", "inbound"),),
    reference="https://linkerd.io/2/reference/proxy-metrics/; linkerd/linkerd2 "
    "viz/charts/linkerd-viz/templates/prometheus.yaml",
)

GENERIC = Preset(
    name="generic",
    requests_metric="http_requests_total",
    error_matchers=((Matcher("code", "=~", "5.."),),),
    latency_metric="http_request_duration_seconds_bucket",
    latency_scale=1.0,
    version_label="version",
    service_label="service",
    namespace_label="namespace",
    reference="https://prometheus.io/docs/practices/naming/ (client library conventions)",
)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (ISTIO, GATEWAY_ISTIO, NGINX_INGRESS, KNATIVE, KNATIVE_OTEL, SELDON, SELDON_V2,
              GATEWAY_CONTOUR, GATEWAY_ENVOY, LINKERD, GENERIC)
}


def get_preset(name: str) -> Preset:
    """The preset called `name`; KeyError names the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
