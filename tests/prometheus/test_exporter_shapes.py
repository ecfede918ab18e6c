"""Every preset against series shaped exactly like its exporter's (tests/prometheus/exporters/),
in a real Prometheus: the exact per-version counts (requests, errors, latency buckets), gRPC
failures, same-named services in two namespaces, decoys, and the scrape configurations that
rename labels. Issue 23: each item has a test here that failed before the fix."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from analyzer.core.types import Samples
from analyzer.demo.local_prometheus import PrometheusServer
from analyzer.policy import PolicyError
from analyzer.sources.prometheus.source import PrometheusMetricSource, QueryCoalescer
from tests.prometheus import exporters
from tests.prometheus.conftest import CountingSession, make_policy
from tests.prometheus.exporters import ERRORS_DEFAULT, ERRORS_NON_OK, Dataset

pytestmark = pytest.mark.prometheus

T0 = datetime.fromtimestamp(exporters.T0, UTC)
T1 = datetime.fromtimestamp(exporters.T1, UTC)
# An HTTPRoute rule with backendRefs store-v1 and store-v2 on port 8080 (policies/gateway-api.yaml)
GATEWAY_ROUTER = {"provider": "gateway-api", "httpRoute": "store", "stableService": "store-v1",
                  "canaryService": "store-v2", "port": 8080}
# The Istio gateway of the data: Deployment public-gateway-istio in namespace gateway
ISTIO_GATEWAY = {"source_workload": "public-gateway-istio", "source_workload_namespace": "gateway"}
ERROR_RATE_ONLY = [{"type": "error-rate"}]


def fetch(prom: PrometheusServer, data: Dataset, scenario: str, slice: str, preset: str,
          *, session: CountingSession | None = None, **kw: Any) -> Samples:
    """The preset's samples for the scenario's slice, named as the slice's target names them
    unless `kw` says otherwise."""
    t = data.target(scenario, slice)
    args: dict[str, Any] = {"service": t.service, "stable": t.stable, "canary": t.canary,
                            "namespace": t.namespace, **kw}
    policy = make_policy(preset, prom.url, **args)
    return PrometheusMetricSource(policy, coalescer=QueryCoalescer(),
                                  session=session).fetch(T0, T1)


def assert_exact(samples: Samples, data: Dataset, scenario: str, slice: str = "main", *,
                 errors: frozenset[str] = ERRORS_DEFAULT, latency: bool = True) -> None:
    assert samples.ok, samples.no_data_reason
    for role in ("stable", "canary"):
        got = getattr(samples, role)
        want = data.expected(scenario, role, slice=slice, errors=errors)
        assert got is not None
        assert (got.requests, got.errors) == (want.requests, want.errors), role
        if not latency:
            assert got.latency is None
            continue
        assert got.latency is not None and want.buckets
        assert got.latency.le == pytest.approx(tuple(want.buckets), rel=1e-9), role
        assert got.latency.counts == tuple(want.buckets.values()), role
        assert math.isinf(got.latency.le[-1])


def policy_error(**kw: Any) -> str:
    with pytest.raises(PolicyError) as e:
        make_policy(address="http://127.0.0.1:1", **kw)
    return str(e.value)


# ---------------------------------------------------------------------- 1. gRPC failures


def test_istio_counts_grpc_failures_once(exporter_prom: PrometheusServer,
                                         exporter_data: Dataset) -> None:
    """A failed gRPC call answers HTTP 200 with grpc_response_status; an Envoy 503 carries
    status 14 too and counts once."""
    canary = exporter_data.expected("istio-grpc", "canary")
    assert canary.breakdown and canary.breakdown["grpc_server_err"] > 100
    assert canary.breakdown["http5xx_grpc"] > 0  # rows matching both alternatives exist
    samples = fetch(exporter_prom, exporter_data, "istio-grpc", "main", "istio")
    assert_exact(samples, exporter_data, "istio-grpc")
    assert samples.canary is not None and samples.canary.errors == 172  # 17 before issue 23


def test_istio_grpc_any_non_ok_status(exporter_prom: PrometheusServer,
                                      exporter_data: Dataset) -> None:
    samples = fetch(exporter_prom, exporter_data, "istio-grpc", "main", "istio",
                    grpcErrors="non-ok")
    assert_exact(samples, exporter_data, "istio-grpc", errors=ERRORS_NON_OK)
    server_only = exporter_data.expected("istio-grpc", "canary").errors
    assert samples.canary is not None and samples.canary.errors > server_only


@pytest.mark.parametrize("grpc_errors", ["server", "non-ok"])
def test_seldon_counts_grpc_status_names(exporter_prom: PrometheusServer,
                                         exporter_data: Dataset, grpc_errors: str) -> None:
    """Seldon's executor puts the gRPC status name in `code` ("Unavailable")."""
    samples = fetch(exporter_prom, exporter_data, "seldon-v1", "main", "seldon",
                    grpcErrors=grpc_errors)
    errors = ERRORS_DEFAULT if grpc_errors == "server" else ERRORS_NON_OK
    assert_exact(samples, exporter_data, "seldon-v1", errors=errors)


def test_grpc_errors_refused_where_the_metrics_have_no_grpc_status() -> None:
    msg = policy_error(preset="nginx-ingress", grpcErrors="non-ok")
    assert "cannot see gRPC statuses" in msg and "grpcErrors" in msg


# ---------------------------------------------------------------------- 2. Knative >= 1.19


def test_knative_opencensus(exporter_prom: PrometheusServer, exporter_data: Dataset) -> None:
    samples = fetch(exporter_prom, exporter_data, "knative-oc", "main", "knative")
    assert_exact(samples, exporter_data, "knative-oc")


def test_knative_otel_scraped_queue_proxy(exporter_prom: PrometheusServer,
                                          exporter_data: Dataset) -> None:
    """The revision is a resource attribute: on scraped series only the pod name has it."""
    samples = fetch(exporter_prom, exporter_data, "knative-otel", "scrape", "knative-otel")
    assert_exact(samples, exporter_data, "knative-otel", "scrape")
    assert 'pod=~"(?:hello-00001|hello-00002)-deployment-.+"' in samples.queries[0]


def test_knative_otel_promoted_resource_attributes(exporter_prom: PrometheusServer,
                                                   exporter_data: Dataset) -> None:
    kw = {"version_label": "kn_revision_name", "namespaceLabel": "k8s_namespace_name"}
    samples = fetch(exporter_prom, exporter_data, "knative-otel", "promoted", "knative-otel",
                    **kw)
    assert_exact(samples, exporter_data, "knative-otel", "promoted")
    # without the two settings the reason says what to set
    samples = fetch(exporter_prom, exporter_data, "knative-otel", "promoted", "knative-otel")
    assert not samples.ok
    assert ("set target.versionLabel: kn_revision_name and namespaceLabel: k8s_namespace_name"
            in (samples.no_data_reason or ""))


def test_knative_otel_1_19_0_name(exporter_prom: PrometheusServer,
                                  exporter_data: Dataset) -> None:
    """1.19.0-1.19.7 and 1.20.0 name the histogram kn_queueproxy_app_duration_seconds and
    record whole seconds: error rates are exact, latency is refused with the reason."""
    kw = {"version_label": "kn_revision_name", "namespaceLabel": "k8s_namespace_name"}
    samples = fetch(exporter_prom, exporter_data, "knative-otel", "legacy-name", "knative-otel",
                    checks=ERROR_RATE_ONLY, **kw)
    assert_exact(samples, exporter_data, "knative-otel", "legacy-name", latency=False)
    samples = fetch(exporter_prom, exporter_data, "knative-otel", "legacy-name", "knative-otel",
                    **kw)
    assert_exact(Samples(samples.t0, samples.t1, samples.stable, samples.canary),
                 exporter_data, "knative-otel", "legacy-name", latency=False)
    reason = samples.no_data_reason or ""
    assert reason.startswith("no latency series for either version")
    assert "record whole seconds in that histogram, so latency cannot be checked" in reason


def test_knative_opencensus_preset_says_the_cluster_runs_1_19(
    exporter_prom: PrometheusServer, exporter_data: Dataset
) -> None:
    samples = fetch(exporter_prom, exporter_data, "knative-otel", "scrape", "knative")
    assert samples.stable is None and samples.canary is None
    assert ("no series for the OpenCensus names, but "
            '["kn_serving_invocation_duration_seconds_count"] has series: this looks like '
            "Knative >= 1.19 (OpenTelemetry); use preset knative-otel"
            in (samples.no_data_reason or ""))
    samples = fetch(exporter_prom, exporter_data, "knative-oc", "main", "knative-otel")
    assert "this looks like Knative <= 1.18 (OpenCensus); use preset knative" in (
        samples.no_data_reason or "")


# ---------------------------------------------------------------------- 3. Seldon


def test_seldon_same_deployment_name_in_two_namespaces(exporter_prom: PrometheusServer,
                                                       exporter_data: Dataset) -> None:
    staging = exporter_data.expected("seldon-v1", "stable", slice="staging")
    assert staging.requests > 1000  # iris in models-staging: four times the traffic
    for sl in ("main", "staging"):
        samples = fetch(exporter_prom, exporter_data, "seldon-v1", sl, "seldon")
        assert_exact(samples, exporter_data, "seldon-v1", sl)


def test_seldon_core_2(exporter_prom: PrometheusServer, exporter_data: Dataset) -> None:
    """Versions are Models: model_internal is <model>_<n>; the policy names the models."""
    for sl, ns in (("main", "seldon-mesh"), ("staging", "seldon-staging")):
        samples = fetch(exporter_prom, exporter_data, "seldon-v2", sl, "seldon-v2",
                        stable="iris", canary="iris2", namespace=ns, checks=ERROR_RATE_ONLY)
        assert_exact(samples, exporter_data, "seldon-v2", sl, latency=False)
    samples = fetch(exporter_prom, exporter_data, "seldon-v2", "main", "seldon-v2",
                    stable="iris", canary="iris2", grpcErrors="non-ok", checks=ERROR_RATE_ONLY)
    assert_exact(samples, exporter_data, "seldon-v2", errors=ERRORS_NON_OK, latency=False)


@pytest.mark.parametrize("check", [{"type": "latency"},
                                   {"type": "threshold", "metric": "latency", "quantile": 0.99,
                                    "max": 0.5}])
def test_seldon_core_2_refuses_latency_checks(check: dict[str, Any]) -> None:
    msg = policy_error(preset="seldon-v2", checks=[{"type": "error-rate"}, check])
    assert "spec.checks[1]" in msg and "preset seldon-v2 cannot check latency per version" in msg
    assert "seldon_model_infer_api_seconds, is per server replica" in msg


# ---------------------------------------------------------------------- 4. Gateway API


def test_gateway_istio(exporter_prom: PrometheusServer, exporter_data: Dataset) -> None:
    """The gateway reports reporter="source" with the backendRef Service as
    destination_service_name; direct mesh calls and store-staging are not counted."""
    samples = fetch(exporter_prom, exporter_data, "gateway-istio", "main", "gateway-istio",
                    stable="v1", canary="v2", router=GATEWAY_ROUTER, labels=ISTIO_GATEWAY)
    assert_exact(samples, exporter_data, "gateway-istio")
    query = samples.queries[0]
    assert 'destination_service_name=~"store-v1|store-v2"' in query
    assert 'reporter="source"' in query and 'source_workload="public-gateway-istio"' in query


def test_gateway_istio_needs_the_gateway_workload() -> None:
    msg = policy_error(preset="gateway-istio", router=GATEWAY_ROUTER)
    assert "preset gateway-istio needs labels.source_workload" in msg


def test_version_label_equal_to_the_service_label(exporter_prom: PrometheusServer,
                                                  exporter_data: Dataset) -> None:
    """Services as versions (ratings / ratings-shadow at the destination): one matcher on the
    label, not two contradictory ones."""
    samples = fetch(exporter_prom, exporter_data, "istio-mirror", "host-fallback", "istio",
                    stable="ratings", canary="ratings-shadow",
                    version_label="destination_service_name")
    assert_exact(samples, exporter_data, "istio-mirror", "host-fallback")
    query = samples.queries[0]
    assert query.count("destination_service_name=") == query.count("{")
    assert "by (destination_service_namespace, destination_service_name)" in query


@pytest.mark.parametrize("preset", ["gateway-contour", "gateway-envoy"])
def test_gateway_on_envoy(exporter_prom: PrometheusServer, exporter_data: Dataset,
                          preset: str) -> None:
    """Contour: one cluster per Service, <ns>_<svc>_<port> (the other port's clusters are not
    counted). Envoy Gateway with EnvoyProxy mergeBackends: service/<ns>/<svc>/<port>."""
    scenario, sl = ("contour", "main") if preset == "gateway-contour" else (
        "envoy-gateway", "merged")
    extra = {"envoyGatewayClusters": "merged"} if preset == "gateway-envoy" else {}
    samples = fetch(exporter_prom, exporter_data, scenario, sl, preset, stable="v1",
                    canary="v2", router=GATEWAY_ROUTER, **extra)
    assert_exact(samples, exporter_data, scenario, sl)


def test_envoy_gateway_per_backend_clusters(exporter_prom: PrometheusServer,
                                            exporter_data: Dataset) -> None:
    samples = fetch(exporter_prom, exporter_data, "envoy-gateway", "per-backend",
                    "gateway-envoy", envoyGatewayClusters="per-backend")
    assert_exact(samples, exporter_data, "envoy-gateway", "per-backend")


def test_envoy_gateway_refused_by_default() -> None:
    """Per-rule clusters hold both versions: refused with the reason and the two opt-ins."""
    msg = policy_error(preset="gateway-envoy", router=GATEWAY_ROUTER)
    assert "cannot tell the stable Service from the canary" in msg
    assert "envoyGatewayClusters: per-backend" in msg and "envoyGatewayClusters: merged" in msg
    msg = policy_error(preset="gateway-envoy", router=GATEWAY_ROUTER,
                       envoyGatewayClusters="per-backend")
    assert "httproute/<namespace>/<route>/rule/<n>/backend/<index>" in msg


def test_contour_on_envoy_gateway_clusters_says_so(exporter_prom: PrometheusServer,
                                                   exporter_data: Dataset) -> None:
    samples = fetch(exporter_prom, exporter_data, "envoy-gateway", "rule-cluster",
                    "gateway-contour", stable="v1", canary="v2", router=GATEWAY_ROUTER)
    reason = samples.no_data_reason or ""
    assert 'no series with envoy_cluster_name=~"eg_store-v1_8080|eg_store-v2_8080"' in reason
    assert '"httproute/eg/store/rule/0"' in reason and "use preset gateway-envoy" in reason


# ---------------------------------------------------------------------- 5. ingress-nginx


@pytest.mark.parametrize("slice", ["direct", "kube-prometheus"])
def test_nginx_ingress_canary_label_and_exported_namespace(
    exporter_prom: PrometheusServer, exporter_data: Dataset, slice: str
) -> None:
    """The canary is the `canary` label; behind the Prometheus Operator the exporter's namespace
    is exported_namespace (and `namespace` is the controller's): both read by default."""
    samples = fetch(exporter_prom, exporter_data, "nginx-ingress", slice, "nginx-ingress")
    assert_exact(samples, exporter_data, "nginx-ingress", slice)


@pytest.mark.parametrize("label", ["service", "ingress"])
def test_nginx_ingress_refuses_the_wrong_version_label(label: str) -> None:
    msg = policy_error(preset="nginx-ingress", version_label=label, stable="frontend",
                       canary="frontend-canary")
    assert "reports canary requests with the main Ingress and its Service" in msg


# ---------------------------------------------------------------------- 6. mirroring


@pytest.mark.parametrize("slice", ["main", "host-fallback"])
def test_istio_mirror(exporter_prom: PrometheusServer, exporter_data: Dataset,
                      slice: str) -> None:
    """Mirrored requests are reported by the destination only; with the host header fallback
    their service is <svc>-shadow."""
    samples = fetch(exporter_prom, exporter_data, "istio-mirror", slice, "istio",
                    strategy={"type": "mirror", "mirrorPercent": 50})
    assert_exact(samples, exporter_data, "istio-mirror", slice)


def test_linkerd(exporter_prom: PrometheusServer, exporter_data: Dataset) -> None:
    samples = fetch(exporter_prom, exporter_data, "linkerd", "main", "linkerd")
    assert_exact(samples, exporter_data, "linkerd")


def test_istio_http(exporter_prom: PrometheusServer, exporter_data: Dataset) -> None:
    samples = fetch(exporter_prom, exporter_data, "istio-http", "main", "istio")
    assert_exact(samples, exporter_data, "istio-http")
