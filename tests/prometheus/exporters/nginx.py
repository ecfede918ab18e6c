"""ingress-nginx's socket collector, scraped directly and behind the Prometheus Operator.

Shape: kubernetes/ingress-nginx internal/ingress/metric/collectors/socket.go (controller-v1.1.2
.. v1.15.0): nginx_ingress_controller_requests (counter, no _total) and
nginx_ingress_controller_request_duration_seconds (DefBuckets), labels status, method, path,
namespace, ingress, service, canary (+ host with the default --metrics-per-host=true) and the
const labels controller_namespace, controller_class, controller_pod. Values from
rootfs/etc/nginx/lua/monitor.lua: ingress/service are the location's (the main Ingress and its
Service, nginx.tmpl `set $ingress_name`/`$service_name`) for canary requests too; canary =
$proxy_alternative_upstream_name: "" for the main backend and `<ns>-<svc>-<port>`
(controller/util.go upstreamName) for canary requests (since controller-v1.0.2, #7696).
"""

from __future__ import annotations

import random

from tests.prometheus.exporters.series import (
    PROM_DEF_S,
    PROXY_PODS,
    Outcome,
    Scenario,
    Target,
    Writer,
    full,
    incs,
    observations,
)


def gen_nginx(w: Writer, rng: random.Random) -> Scenario:
    """Slice "direct": labels as exported (honorLabels: true, or an annotation scrape). Slice
    "kube-prometheus": the chart's ServiceMonitor without honorLabels
    (charts/ingress-nginx values.yaml) under the Prometheus Operator, whose target labels
    namespace/service/pod/container/endpoint (prometheus-operator pkg/prometheus/promcfg.go)
    collide: the exporter's namespace and service become exported_namespace /
    exported_service. Decoy (role decoy:other-ingress): another Ingress in the same namespace.
    """
    sc = "nginx-ingress"
    slices = {}
    for sl, ns in (("direct", "web"), ("kube-prometheus", "web-kp")):
        slices[sl] = Target(ns, "frontend", "frontend", f"{ns}-frontend-canary-80",
                            note="stable: no canary label; canary: <ns>-frontend-canary-80")
        for role, ingress, canary in (("stable", "frontend", ""),
                                      ("canary", "frontend", f"{ns}-frontend-canary-80"),
                                      ("decoy:other-ingress", "admin", "")):
            outcomes = [
                Outcome("ok", {"status": "200"}, 4, 12),
                Outcome("client_err", {"status": "404"}, 0, 2),
                Outcome("http_5xx", {"status": "502"}, 0, 3 if role == "canary" else 1),
            ]
            service = "admin" if ingress == "admin" else "frontend"
            for pod in PROXY_PODS:  # the controller pods report every Ingress
                for o in outcomes:
                    n = incs(rng, o)
                    obs = observations(rng, n, 0.030)
                    labels = {
                        "controller_class": "k8s.io/ingress-nginx",
                        "controller_namespace": "ingress-nginx",
                        "controller_pod": f"ingress-nginx-controller-7b9c6d5f8-{pod.name}",
                        "host": f"{ingress}.example.com", "method": "GET", "path": "/",
                        **o.labels,
                        "namespace": ns, "ingress": ingress, "service": service,
                        "canary": canary,
                    }
                    instance = f"10.1.0.{10 + int(pod.name)}:10254"
                    if sl == "kube-prometheus":
                        del labels["namespace"], labels["service"]
                        labels.update({
                            "exported_namespace": ns, "exported_service": service,
                            "namespace": "ingress-nginx",
                            "service": "ingress-nginx-controller-metrics",
                            "pod": f"ingress-nginx-controller-7b9c6d5f8-{pod.name}",
                            "container": "controller", "endpoint": "metrics",
                            "job": "ingress-nginx-controller-metrics", "instance": instance,
                        })
                    else:
                        labels.update({"job": "ingress-nginx", "instance": instance})
                    w.counter("nginx_ingress_controller_requests", labels, n, pod,
                              scenario=sc, slice=sl, role=role, kind="requests",
                              outcome=o.outcome)
                    if full(role, pod, PROXY_PODS):
                        w.histogram("nginx_ingress_controller_request_duration_seconds", labels,
                                    obs, PROM_DEF_S, PROM_DEF_S, pod, role=role, scenario=sc,
                                    slice=sl, outcome=o.outcome, count_is_requests=False)
    return Scenario(sc, "ingress-nginx",
                    "kubernetes/ingress-nginx collectors/socket.go, monitor.lua", slices)
