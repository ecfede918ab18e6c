"""Linkerd proxy metrics as linkerd-viz's Prometheus scrapes them."""

from __future__ import annotations

import random

from tests.prometheus.exporters.series import (
    LINKERD_MS,
    PODS,
    Outcome,
    Scenario,
    Target,
    Writer,
    full,
    incs,
    ms,
    observations,
)


def gen_linkerd(w: Writer, rng: random.Random) -> Scenario:
    """Shape: linkerd2-proxy response_total / response_latency_ms (labels authority, direction,
    tls, status_code, classification; grpc_status for gRPC, classification from it: the Linkerd
    proxy-metrics reference) and the `linkerd-proxy` job of
    viz/charts/linkerd-viz/templates/prometheus.yaml (linkerd/linkerd2), whose relabeling adds
    namespace, pod and, from the pod label linkerd.io/proxy-deployment, `deployment`. Inbound
    series carry the receiving Deployment; the outbound copies are decoys.
    """
    sc, ns = "linkerd", "mesh-linkerd"
    tgt = Target(ns, "web", "web-v1", "web-v2")
    for role, dep in (("stable", "web-v1"), ("canary", "web-v2")):
        outcomes = [
            Outcome("ok", {"status_code": "200", "classification": "success"}, 4, 12),
            Outcome("http_5xx", {"status_code": "503", "classification": "failure"}, 0,
                    3 if role == "canary" else 1),
            # gRPC failure: HTTP 200, grpc_status 14, classified failure by the proxy
            Outcome("grpc_server_err", {"status_code": "200", "grpc_status": "14",
                                        "classification": "failure"}, 0, 2),
        ]
        for pod in PODS[role]:
            podname = f"{dep}-6b8f7c9d5-{pod.name}"
            for o in outcomes:
                n = incs(rng, o)
                obs = observations(rng, n, 0.020)
                for direction, r in (("inbound", role), ("outbound", "decoy:outbound")):
                    inbound = direction == "inbound"
                    labels = {
                        "authority": f"web.{ns}.svc.cluster.local:8080",
                        "direction": direction, "tls": "true", **o.labels, "namespace": ns,
                        "pod": podname if inbound else f"vote-bot-5d4f6c7b8-{pod.name}",
                        "deployment": dep if inbound else "vote-bot",
                        "pod_template_hash": "6b8f7c9d5", "control_plane_ns": "linkerd",
                        "job": "linkerd-proxy",
                        "instance": f"10.3.{1 if role == 'stable' else 2}.{ord(pod.name[0])}:4191",
                    }
                    if not inbound:
                        labels.update({"dst_namespace": ns, "dst_deployment": dep,
                                       "dst_pod": podname, "dst_service": "web"})
                    w.counter("response_total", labels, n, pod, scenario=sc, slice="main",
                              role=r, kind="requests", outcome=o.outcome)
                    if full(r, pod, PODS[role]):
                        w.histogram("response_latency_ms", labels, obs, ms(LINKERD_MS),
                                    LINKERD_MS, pod, role=r, scenario=sc, slice="main",
                                    outcome=o.outcome, count_is_requests=False,
                                    sum_scale=1000.0)
    return Scenario(sc, "linkerd", "linkerd2 viz prometheus.yaml; linkerd2-proxy",
                    {"main": tgt})
