"""Seldon Core: the v1 executor (service orchestrator) and the Core 2 agent."""

from __future__ import annotations

import random

from tests.prometheus.exporters.series import (
    PODS,
    PROXY_PODS,
    SELDON_S,
    STEPS,
    Outcome,
    Scenario,
    Target,
    Writer,
    full,
    incs,
    observations,
)

_PREDICT = "/seldon.protos.Seldon/Predict"


def gen_seldon_v1(w: Writer, rng: random.Random) -> Scenario:
    """Seldon Core v1 executor.

    Shape: SeldonIO/seldon-core executor/api/metric/server.go, rest/server.go, grpc/server.go
    (v1.18.0): histogram seldon_api_executor_server_requests_seconds (DefBuckets), labels
    deployment_name, predictor_name, predictor_version (often empty), service, method, code.
    REST: promhttp.InstrumentHandlerDuration -> service="predictions", method="post",
    code="200"/"500". gRPC: UnaryServerInterceptor -> service=info.FullMethod, method="unary",
    code=status.Code().String() ("OK", "Unavailable", "InvalidArgument"). The executor exports no
    namespace; Seldon's PodMonitor (doc/source/analytics/analytics.md, since v1.14.0) adds
    namespace, pod, container, endpoint. seldon_api_executor_client_requests_seconds (executor ->
    model calls) counts the same requests again: decoys. Slices: "main" (iris in namespace
    models) and "staging" (iris in models-staging, 4x the traffic).
    """
    sc = "seldon-v1"
    slices = {}
    for sl, ns, scale in (("main", "models", 1), ("staging", "models-staging", 4)):
        slices[sl] = Target(ns, "iris", "main", "candidate")
        for role, pred in (("stable", "main"), ("canary", "candidate")):
            bad = role == "canary"
            outcomes = [
                Outcome("ok", {"service": "predictions", "method": "post", "code": "200"},
                        2 * scale, 6 * scale),
                Outcome("http_5xx", {"service": "predictions", "method": "post", "code": "500"},
                        0, 1),
                Outcome("ok", {"service": _PREDICT, "method": "unary", "code": "OK"},
                        2 * scale, 6 * scale),
                Outcome("grpc_server_err",
                        {"service": _PREDICT, "method": "unary", "code": "Unavailable"},
                        0, 5 if bad else 1),
                Outcome("grpc_client_err",
                        {"service": _PREDICT, "method": "unary", "code": "InvalidArgument"},
                        0, 1),
            ]
            for pod in PODS[role]:
                target = {"namespace": ns,
                          "pod": f"iris-{pred}-0-classifier-5c7d8f9b6-{pod.name}",
                          "container": "seldon-container-engine", "endpoint": "metrics",
                          "job": "seldon-monitoring/seldon-podmonitor"}
                for o in outcomes:
                    n = incs(rng, o)
                    obs = observations(rng, n, 0.080)
                    labels = {"deployment_name": "iris", "predictor_name": pred,
                              "predictor_version": "", **o.labels, **target}
                    w.histogram("seldon_api_executor_server_requests_seconds", labels, obs,
                                SELDON_S, SELDON_S, pod, role=role, scenario=sc, slice=sl,
                                outcome=o.outcome, count_is_requests=True)
                    client = {"deployment_name": "iris", "predictor_name": pred,
                              "predictor_version": "", "service": o.labels["service"],
                              "model_name": "classifier",
                              "model_image": "seldonio/sklearnserver",
                              "model_version": "1.18.0", "method": o.labels["method"],
                              "code": o.labels["code"], **target}
                    if full("decoy", pod, PODS[role]):
                        w.histogram("seldon_api_executor_client_requests_seconds", client, obs,
                                    SELDON_S, SELDON_S, pod, role="decoy:client-metric",
                                    scenario=sc, slice=sl, outcome=o.outcome,
                                    count_is_requests=True)
    return Scenario(sc, "seldon core v1", "SeldonIO/seldon-core executor/api/metric v1.18.0",
                    slices)


def gen_seldon_v2(w: Writer, rng: random.Random) -> Scenario:
    """Seldon Core 2 agent (the model server's sidecar).

    Shape: SeldonIO/seldon-core scheduler/pkg/metrics/agent.go (v2.0.0 .. v2.10.0):
    seldon_model_infer_total{server, server_replica, model, model_internal, method_type, code},
    seldon_model_infer_seconds_total (latency sum, same labels) and the histogram
    seldon_model_infer_api_seconds{server, server_replica, method, code}, which has no model
    label ("Histograms do no include pipeline label for efficiency"): no per-model latency
    buckets exist. code: the HTTP status for REST (metrics.HttpCodeToString), the gRPC status
    name for gRPC. `model` is the requested model (the Seldon-Model header), `model_internal`
    the served model and its version: an Experiment splitting `iris` between iris and iris2
    reports model="iris", model_internal="iris_1" / "iris2_1"
    (docs-gb/examples/local-experiments.md). Target labels from Seldon's agent PodMonitor
    (prometheus/monitors/agent-podmonitor.yaml). Slices "main" (seldon-mesh) and "staging"
    (seldon-staging, same names). A third model on the same servers shares the histogram.
    """
    sc = "seldon-v2"
    slices = {}
    # which server replica (PROXY_PODS name) has which model loaded
    placement = {"iris_1": ("0", "1", "3"), "iris2_1": ("1", "2"), "other_3": ("0", "2")}
    for sl, ns, scale in (("main", "seldon-mesh", 1), ("staging", "seldon-staging", 3)):
        slices[sl] = Target(ns, "iris", "iris_1", "iris2_1", note="version label model_internal")
        server_obs: dict[tuple[str, str, str], list[list[float]]] = {}
        for role, internal in (("stable", "iris_1"), ("canary", "iris2_1"),
                               ("decoy:other-model", "other_3")):
            model = "other" if internal.startswith("other") else "iris"
            outcomes = [
                Outcome("ok", {"method_type": "rest", "code": "200"}, 2 * scale, 6 * scale),
                Outcome("http_5xx", {"method_type": "rest", "code": "500"}, 0, 1),
                Outcome("ok", {"method_type": "grpc", "code": "OK"}, 2 * scale, 6 * scale),
                Outcome("grpc_server_err", {"method_type": "grpc", "code": "Unavailable"}, 0,
                        5 if role == "canary" else 1),
            ]
            for pod in PROXY_PODS:
                if pod.name not in placement[internal]:
                    continue
                target = {"namespace": ns, "pod": f"mlserver-{pod.name}", "container": "agent",
                          "endpoint": "metrics", "job": f"{ns}/agent"}
                for o in outcomes:
                    n = incs(rng, o)
                    obs = observations(rng, n, 0.060 if role != "canary" else 0.080)
                    labels = {"code": o.labels["code"], "method_type": o.labels["method_type"],
                              "model": model, "model_internal": internal, "server": "mlserver",
                              "server_replica": pod.name, **target}
                    w.counter("seldon_model_infer_total", labels, n, pod, scenario=sc,
                              slice=sl, role=role, kind="requests", outcome=o.outcome)
                    secs = [round(sum(x), 3) for x in obs]  # latency sum (a float counter)
                    w.counter("seldon_model_infer_seconds_total", labels, secs, pod,
                              scenario=sc, slice=sl, role=role, kind="aux", outcome=o.outcome)
                    acc = server_obs.setdefault(
                        (pod.name, o.labels["method_type"], o.labels["code"]),
                        [[] for _ in range(STEPS)])
                    for i, xs in enumerate(obs):
                        acc[i].extend(xs)
        # the per-server-replica histogram: every model's calls together (no model label)
        for (podn, mtype, code), obs in server_obs.items():
            pod = next(p for p in PROXY_PODS if p.name == podn)
            labels = {"code": code, "method": "grpc" if mtype == "grpc" else "post",
                      "server": "mlserver", "server_replica": podn, "namespace": ns,
                      "pod": f"mlserver-{podn}", "container": "agent", "endpoint": "metrics",
                      "job": f"{ns}/agent"}
            w.histogram("seldon_model_infer_api_seconds", labels, obs, SELDON_S, SELDON_S, pod,
                        role="decoy:per-server-histogram", scenario=sc, slice=sl, outcome="",
                        count_is_requests=False)
    return Scenario(sc, "seldon core 2",
                    "SeldonIO/seldon-core scheduler/pkg/metrics/agent.go v2.10.0", slices,
                    latency_per_version=False)
