"""Istio standard metrics: sidecars over HTTP and gRPC, mirroring, and Istio as the Gateway API
gateway.

Shape: istio/proxy source/extensions/filters/http/istio_stats/istio_stats.cc (1.18.0 .. master;
extensions/stats/plugin.cc in 1.5 .. 1.17 with the same labels): `istio_requests_total` and
`istio_request_duration_milliseconds` (ms, Envoy's default buckets), tags reporter, source_*,
destination_*, request_protocol, response_flags, connection_security_policy, response_code,
grpc_response_status. reporter is "destination" for the server sidecar and "source" for the
client sidecar and for gateways. Target labels from Istio's documented Prometheus scrape
(namespace, pod).
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from tests.prometheus.exporters.series import (
    ENVOY_MS,
    PODS,
    PROXY_PODS,
    Outcome,
    Pod,
    Scenario,
    Target,
    Writer,
    full,
    incs,
    ms,
    observations,
)

BUCKET = "istio_request_duration_milliseconds"


def _labels(ns: str, svc: str, ver: str, pod: Pod, reporter: str, protocol: str,
            extra: Mapping[str, str], *, source_workload: str, service_name: str | None = None,
            service_host: str | None = None) -> dict[str, str]:
    return {
        "reporter": reporter,
        "source_workload": source_workload,
        "source_workload_namespace": ns,
        "source_principal": f"spiffe://cluster.local/ns/{ns}/sa/{source_workload}",
        "source_app": source_workload,
        "source_version": "v1",
        "source_canonical_service": source_workload,
        "source_canonical_revision": "v1",
        "source_cluster": "Kubernetes",
        "destination_workload": f"{svc}-{ver}",
        "destination_workload_namespace": ns,
        "destination_principal": f"spiffe://cluster.local/ns/{ns}/sa/{svc}",
        "destination_app": svc,
        "destination_version": ver,
        "destination_service": service_host or f"{svc}.{ns}.svc.cluster.local",
        "destination_service_name": service_name or svc,
        "destination_service_namespace": ns,
        "destination_canonical_service": svc,
        "destination_canonical_revision": ver,
        "destination_cluster": "Kubernetes",
        "request_protocol": protocol,
        "connection_security_policy": "mutual_tls" if reporter == "destination" else "unknown",
        "grpc_response_status": "",
        **extra,
        # target labels (Istio's scrape of the sidecar's :15020/stats/prometheus)
        "namespace": ns,
        "pod": (f"{svc}-{ver}-7d9f8c6b5-{pod.name}" if reporter == "destination"
                else f"{source_workload}-6c8d7f9b4-{pod.name}"),
    }


def _write(w: Writer, labels: dict[str, str], n: list[int], obs: list[list[float]], pod: Pod,
           pods: tuple[Pod, ...], *, sc: str, sl: str, role: str, outcome: str) -> None:
    w.counter("istio_requests_total", labels, n, pod, scenario=sc, slice=sl, role=role,
              kind="requests", outcome=outcome)
    if full(role, pod, pods):
        w.histogram(BUCKET, labels, obs, ms(ENVOY_MS), ENVOY_MS, pod, role=role, scenario=sc,
                    slice=sl, outcome=outcome, count_is_requests=False, sum_scale=1000.0)


def _both_reporters(w: Writer, rng: random.Random, sc: str, ns: str, svc: str, ver: str,
                    role: str, outcomes: list[Outcome], protocol: str, client: str,
                    median_s: float) -> None:
    """One version's series as both sidecars report them: the server's (reporter=destination)
    and the client's copy of each request (reporter=source, a decoy)."""
    for pod in PODS[role]:
        for o in outcomes:
            n = incs(rng, o)
            obs = observations(rng, n, median_s)
            for reporter, r in (("destination", role), ("source", "decoy:reporter=source")):
                labels = _labels(ns, svc, ver, pod, reporter, protocol, o.labels,
                                 source_workload=client)
                _write(w, labels, n, obs, pod, PODS[role], sc=sc, sl="main", role=r,
                       outcome=o.outcome)


def gen_istio_http(w: Writer, rng: random.Random) -> Scenario:
    """Istio over HTTP. Each request is reported twice, once per proxy: the reporter="source"
    copies are decoys a preset must exclude."""
    sc, ns, svc = "istio-http", "mesh-http", "checkout"
    for role, ver in (("stable", "v1"), ("canary", "v2")):
        outcomes = [
            Outcome("ok", {"response_code": "200", "response_flags": "-"}, 4, 12),
            Outcome("client_err", {"response_code": "404", "response_flags": "-"}, 0, 2),
            Outcome("http_5xx", {"response_code": "503", "response_flags": "-"}, 0,
                    2 if role == "stable" else 4),
        ]
        _both_reporters(w, rng, sc, ns, svc, ver, role, outcomes, "http", "frontend",
                        0.040 if role == "stable" else 0.055)
    return Scenario(sc, "istio", "istio/proxy istio_stats.cc",
                    {"main": Target(ns, svc, "v1", "v2")})


def gen_istio_grpc(w: Writer, rng: random.Random) -> Scenario:
    """Istio for gRPC calls (request_protocol="grpc").

    istio_stats.cc IstioStatsFilter::log: response_code is the HTTP status (200 for a failed
    gRPC call that answered with trailers); grpc_response_status is the numeric gRPC status from
    the trailers, else the headers, else mapped from the HTTP status (Envoy
    Grpc::Common::getGrpcStatus, source/common/grpc/common.cc), so an Envoy-generated 503 on a
    gRPC call carries grpc_response_status="14" too.
    """
    sc, ns, svc = "istio-grpc", "mesh-grpc", "payments"
    for role, ver in (("stable", "v1"), ("canary", "v2")):
        bad = role == "canary"
        outcomes = [
            Outcome("ok", {"response_code": "200", "grpc_response_status": "0",
                           "response_flags": "-"}, 5, 12),
            Outcome("grpc_client_err", {"response_code": "200", "grpc_response_status": "5",
                                        "response_flags": "-"}, 0, 2),
            Outcome("grpc_server_err", {"response_code": "200", "grpc_response_status": "14",
                                        "response_flags": "-"}, 0, 6 if bad else 1),
            Outcome("grpc_server_err", {"response_code": "200", "grpc_response_status": "13",
                                        "response_flags": "-"}, 0, 2 if bad else 1),
            # Envoy answered for the upstream (no healthy upstream): HTTP 503 *and* gRPC 14.
            Outcome("http5xx_grpc", {"response_code": "503", "grpc_response_status": "14",
                                     "response_flags": "UH"}, 0, 1),
        ]
        _both_reporters(w, rng, sc, ns, svc, ver, role, outcomes, "grpc", "checkout",
                        0.012 if role == "stable" else 0.015)
    return Scenario(sc, "istio", "istio/proxy istio_stats.cc (grpc_response_status)",
                    {"main": Target(ns, svc, "v1", "v2")})


def gen_istio_mirror(w: Writer, rng: random.Random) -> Scenario:
    """Istio mirroring: the canary gets a copy of live traffic.

    The copy is sent by the client proxy's router with Host/authority `<host>-shadow` (Envoy
    source/common/router/shadow_writer_impl.cc) and does not pass the client's stats filter, so
    only the canary's sidecar reports it (reporter="destination"; istio/istio#23496). At the
    destination, destination_service comes from the inbound cluster's `istio.services` metadata
    (istio/istio pilot addTelemetryMetadata), never from the Host header
    (pilot/pkg/model/telemetry.go statsConfigForClass disables the host header fallback for
    inbound), so destination_service_name is the Service name: slice "main" (reviews). Slice
    "host-fallback" (ratings): a proxy with disable_host_header_fallback=false and no inbound
    service metadata, where the shadow Host leaks into destination_service_name.
    """
    sc, ns = "istio-mirror", "mesh-mirror"
    slices = {}
    for sl, svc, leak in (("main", "reviews", False), ("host-fallback", "ratings", True)):
        slices[sl] = Target(ns, svc, "v1", "v2", note="canary reported with "
                            f"destination_service_name={svc}-shadow" if leak else "")
        for role, ver in (("stable", "v1"), ("canary", "v2")):
            outcomes = [
                Outcome("ok", {"response_code": "200", "response_flags": "-"}, 4, 10),
                Outcome("http_5xx", {"response_code": "500", "response_flags": "-"}, 0, 2),
            ]
            for pod in PODS[role]:
                for o in outcomes:
                    n = incs(rng, o)
                    obs = observations(rng, n, 0.030)
                    reporters = [("destination", role)]
                    if role == "stable":  # the primary request is also seen by the client
                        reporters.append(("source", "decoy:reporter=source"))
                    shadow = leak and role == "canary"
                    for reporter, r in reporters:
                        labels = _labels(
                            ns, svc, ver, pod, reporter, "http", o.labels,
                            source_workload="productpage",
                            service_name=f"{svc}-shadow" if shadow else None,
                            service_host=f"{svc}-shadow:9080" if shadow else None)
                        _write(w, labels, n, obs, pod, PODS[role], sc=sc, sl=sl, role=r,
                               outcome=o.outcome)
    return Scenario(sc, "istio", "envoy shadow_writer_impl.cc; istio/istio#23496", slices)


def gen_gateway_istio(w: Writer, rng: random.Random) -> Scenario:
    """Gateway API implemented by Istio: an HTTPRoute rule with backendRefs store-v1 / store-v2.

    The gateway Deployment (`<gateway>-istio`: public-gateway-istio in namespace gateway) runs
    Envoy with the client-side stats filter: reporter="source" (istio_stats.cc
    Reporter::ClientSidecar; Istio docs: "source if report is from a client Istio proxy or a
    gateway"). destination_service(_name) comes from the outbound cluster's `istio.services`
    metadata: the backendRef Service. The backends have no sidecar: destination_workload and
    destination_service_namespace come from the endpoint metadata (extractEndpointMetadata),
    which has no app version, so destination_version="unknown". Slices: "main" (namespace
    store), "staging" (the same Service names in store-staging), "direct" (a mesh client,
    frontend, calling store-v1 and store-v2 directly: reporter="source" too, not the gateway's).
    """
    sc = "gateway-istio"
    slices: dict[str, Target] = {}
    for sl, ns, src, src_ns, low, high in (
        ("main", "store", "public-gateway-istio", "gateway", 4, 12),
        ("staging", "store-staging", "public-gateway-istio", "gateway", 20, 40),
        ("direct", "store", "frontend", "store", 2, 6),
    ):
        slices[sl] = Target(ns, "store", "store-v1", "store-v2",
                            note=f"reporter=source, source_workload={src}")
        for role, backend in (("stable", "store-v1"), ("canary", "store-v2")):
            outcomes = [
                Outcome("ok", {"response_code": "200", "response_flags": "-"}, low, high),
                Outcome("client_err", {"response_code": "404", "response_flags": "-"}, 0, 1),
                Outcome("http_5xx", {"response_code": "503", "response_flags": "UF"}, 0,
                        3 if role == "canary" else 1),
            ]
            for pod in PROXY_PODS:  # the gateway's Envoy pods report
                for o in outcomes:
                    n = incs(rng, o)
                    obs = observations(rng, n, 0.020)
                    labels = {
                        "reporter": "source",
                        "source_workload": src,
                        "source_workload_namespace": src_ns,
                        "source_principal": f"spiffe://cluster.local/ns/{src_ns}/sa/{src}",
                        "source_app": src,
                        "source_version": "unknown",
                        "source_canonical_service": src,
                        "source_canonical_revision": "latest",
                        "source_cluster": "Kubernetes",
                        "destination_workload": backend,
                        "destination_workload_namespace": ns,
                        "destination_principal": "unknown",
                        "destination_app": "unknown",
                        "destination_version": "unknown",
                        "destination_service": f"{backend}.{ns}.svc.cluster.local",
                        "destination_service_name": backend,
                        "destination_service_namespace": ns,
                        "destination_canonical_service": "store",
                        "destination_canonical_revision": "latest",
                        "destination_cluster": "Kubernetes",
                        "request_protocol": "http",
                        "connection_security_policy": "unknown",
                        **o.labels,
                        "namespace": src_ns,
                        "pod": f"{src}-5b7c9d8f6-x{pod.name}",
                    }
                    w.counter("istio_requests_total", labels, n, pod, scenario=sc, slice=sl,
                              role=role, kind="requests", outcome=o.outcome)
                    if sl == "main" or pod == PROXY_PODS[0]:
                        w.histogram(BUCKET, labels, obs, ms(ENVOY_MS), ENVOY_MS, pod, role=role,
                                    scenario=sc, slice=sl, outcome=o.outcome,
                                    count_is_requests=False, sum_scale=1000.0)
    return Scenario(sc, "istio (gateway)", "istio/proxy istio_stats.cc; Istio metrics docs",
                    slices)
