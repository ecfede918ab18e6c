"""Knative Serving's queue-proxy: OpenCensus (up to 1.18) and OpenTelemetry (1.19 and later)."""

from __future__ import annotations

import random

from tests.prometheus.exporters.series import (
    KNATIVE_OC_MS,
    KNATIVE_OTEL_S,
    PODS,
    Outcome,
    Scenario,
    Target,
    Writer,
    incs,
    ms,
    observations,
)


def gen_knative_oc(w: Writer, rng: random.Random) -> Scenario:
    """OpenCensus, up to knative-v1.18.x.

    Shape: knative/serving pkg/queue/request_metric.go (knative-v1.18.0): views
    app_request_count (count) and app_request_latencies (ms distribution) with tag keys
    pod_name, container_name, response_code, response_code_class and the revision's resource
    labels namespace_name, service_name, configuration_name, revision_name; exported with the
    `revision` prefix: revision_app_request_count, revision_app_request_latencies_bucket
    (knative/docs docs/serving/metrics.md). Target labels from a PodMonitor (namespace, pod).
    """
    sc, ns, ksvc = "knative-oc", "serving-oc", "hello"
    tgt = Target(ns, ksvc, f"{ksvc}-00001", f"{ksvc}-00002")
    for role, rev in (("stable", tgt.stable), ("canary", tgt.canary)):
        outcomes = [
            Outcome("ok", {"response_code": "200", "response_code_class": "2xx"}, 4, 12),
            Outcome("client_err", {"response_code": "404", "response_code_class": "4xx"}, 0, 1),
            Outcome("http_5xx", {"response_code": "500", "response_code_class": "5xx"}, 0,
                    3 if role == "canary" else 1),
        ]
        for pod in PODS[role]:
            podname = f"{rev}-deployment-6f8d9c7b5-{pod.name}"
            for o in outcomes:
                n = incs(rng, o)
                obs = observations(rng, n, 0.050)
                labels = {
                    "configuration_name": ksvc, "container_name": "queue-proxy",
                    "namespace_name": ns, "pod_name": podname, **o.labels,
                    "revision_name": rev, "service_name": ksvc,
                    "namespace": ns, "pod": podname, "job": "serving/queue-proxy",
                }
                w.counter("revision_app_request_count", labels, n, pod, scenario=sc,
                          slice="main", role=role, kind="requests", outcome=o.outcome)
                w.histogram("revision_app_request_latencies", labels, obs, ms(KNATIVE_OC_MS),
                            KNATIVE_OC_MS, pod, role=role, scenario=sc, slice="main",
                            outcome=o.outcome, count_is_requests=False, sum_scale=1000.0)
    return Scenario(sc, "knative (opencensus)",
                    "knative/serving pkg/queue/request_metric.go v1.18.0", {"main": tgt})


def gen_knative_otel(w: Writer, rng: random.Random) -> Scenario:
    """OpenTelemetry, knative-v1.19.0 and later.

    Instrument: Float64Histogram `kn.serving.invocation.duration`, unit "s", attribute
    http.response.status_code, bounds KNATIVE_OTEL_S (knative/serving
    pkg/queue/request_metric.go; knative-v1.19.8+, v1.20.1+, v1.21.0+; named
    `kn.queueproxy.app.duration` in v1.19.0..v1.19.7 and v1.20.0, #16290). Until v1.19.8 /
    v1.20.1 the value was float64(latency / time.Second), whole seconds (#16358). The revision,
    configuration, service, namespace and pod are *resource* attributes
    (pkg/queue/sharedmain/otel.go). Prometheus names (otel-go exporters/prometheus v0.59..v0.65
    as knative.dev/pkg observability/metrics/prometheus_enabled.go configures it; the same
    translation in Prometheus' OTLP receiver): kn_serving_invocation_duration_seconds_{bucket,
    count,sum}, label http_response_status_code, otel_scope_name; the resource attributes only
    on target_info. No request counter: requests are the histogram's _count.
    Slices: "scrape" (request-metrics-protocol: prometheus, queue-proxy :9091 scraped by a
    PodMonitor: namespace/pod/job/instance target labels; the revision is in target_info or in
    the pod name); "promoted" (resource attributes promoted to labels: Prometheus' OTLP receiver
    `otlp.promote_resource_attributes`, or an OTel Collector with
    resource_to_telemetry_conversion); "legacy-name" (v1.19.0..v1.19.7 / v1.20.0:
    kn_queueproxy_app_duration_seconds, whole-second values, promoted shape).
    """
    sc = "knative-otel"
    slices = {}
    for sl, ns, base, truncate in (
        ("scrape", "serving-otel", "kn_serving_invocation_duration_seconds", False),
        ("promoted", "serving-otel-promoted", "kn_serving_invocation_duration_seconds", False),
        ("legacy-name", "serving-otel-119", "kn_queueproxy_app_duration_seconds", True),
    ):
        ksvc = "hello"
        tgt = Target(ns, ksvc, f"{ksvc}-00001", f"{ksvc}-00002", note=base)
        slices[sl] = tgt
        for role, rev in (("stable", tgt.stable), ("canary", tgt.canary)):
            outcomes = [
                Outcome("ok", {"http_response_status_code": "200"}, 4, 12),
                Outcome("client_err", {"http_response_status_code": "404"}, 0, 1),
                Outcome("http_5xx", {"http_response_status_code": "503"}, 0,
                        3 if role == "canary" else 1),
            ]
            for pod in PODS[role]:
                podname = f"{rev}-deployment-6f8d9c7b5-{pod.name}"
                ip = f"10.2.{1 if role == 'stable' else 2}.{ord(pod.name[0])}"
                resource = {
                    "k8s_container_name": "queue-proxy", "k8s_namespace_name": ns,
                    "k8s_pod_name": podname, "kn_configuration_name": ksvc,
                    "kn_revision_name": rev, "kn_service_name": ksvc, "service_name": ksvc,
                    "service_instance_id": podname, "service_version": "v1.21.0",
                }
                if sl == "scrape":
                    target = {"namespace": ns, "pod": podname, "container": "queue-proxy",
                              "endpoint": "http-usermetric", "job": f"{ns}/queue-proxy",
                              "instance": f"{ip}:9091"}
                    w.gauge("target_info", {**target, **resource,
                                            "telemetry_sdk_language": "go",
                                            "telemetry_sdk_name": "opentelemetry",
                                            "telemetry_sdk_version": "1.39.0"},
                            1, pod, scenario=sc, slice=sl, role=role)
                    extra = target
                else:
                    # OTLP push: job = service.name, instance = service.instance.id
                    extra = {**resource, "job": ksvc, "instance": podname}
                for o in outcomes:
                    n = incs(rng, o)
                    obs = observations(rng, n, 0.050, truncate=truncate)
                    labels = {**o.labels, "otel_scope_name": "knative.dev/serving/pkg/queue",
                              **extra}
                    w.histogram(base, labels, obs, KNATIVE_OTEL_S, KNATIVE_OTEL_S, pod,
                                role=role, scenario=sc, slice=sl, outcome=o.outcome,
                                count_is_requests=True)
    return Scenario(sc, "knative (opentelemetry)",
                    "knative/serving pkg/queue/request_metric.go v1.19+", slices)
