"""Gateway API implemented on Envoy: Contour and Envoy Gateway, read from Envoy's cluster stats.

Names via Envoy's default tag extraction (envoyproxy/envoy
source/common/config/well_known_names.cc): cluster.<name>.upstream_rq_<code> ->
envoy_cluster_upstream_rq{envoy_cluster_name, envoy_response_code}, upstream_rq_<d>xx ->
envoy_cluster_upstream_rq_xx{envoy_response_code_class}, upstream_rq_total ->
envoy_cluster_upstream_rq_total, the upstream_rq_time histogram in ms (Envoy's default buckets).
Envoy's counters have no `_total` suffix of their own. Series are per Envoy pod; the
`namespace`/`pod` target labels are the Envoy pod's, not the backend's.
"""

from __future__ import annotations

import random

from tests.prometheus.exporters.series import (
    ENVOY_MS,
    PROXY_PODS,
    STEPS,
    Scenario,
    Target,
    Writer,
    ms,
    observations,
)


def _cluster(w: Writer, rng: random.Random, sc: str, sl: str, role: str, cluster: str,
             envoy_ns: str, envoy_pod_prefix: str, job: str, low: int, high: int,
             bad: bool) -> None:
    """One Envoy cluster's stats on every Envoy pod."""
    codes = [("ok", "200", low, high), ("client_err", "404", 0, 1),
             ("http_5xx", "503", 0, 3 if bad else 1)]
    for pod in PROXY_PODS:
        target = {"namespace": envoy_ns, "pod": f"{envoy_pod_prefix}-{pod.name}",
                  "container": "envoy", "job": job,
                  "instance": f"10.0.0.{10 + int(pod.name)}:8002"}
        per_code = {c: [rng.randint(lo, hi) for _ in range(STEPS)] for _, c, lo, hi in codes}
        for outcome, code, _, _ in codes:
            w.counter("envoy_cluster_upstream_rq",
                      {"envoy_response_code": code, "envoy_cluster_name": cluster, **target},
                      per_code[code], pod, scenario=sc, slice=sl, role=role, kind="requests",
                      outcome=outcome)
        for cls in ("2", "4", "5"):
            n = [sum(per_code[c][i] for _, c, _, _ in codes if c[0] == cls)
                 for i in range(STEPS)]
            w.counter("envoy_cluster_upstream_rq_xx",
                      {"envoy_response_code_class": cls, "envoy_cluster_name": cluster,
                       **target}, n, pod, scenario=sc, slice=sl, role=role, kind="aux",
                      outcome="http_5xx" if cls == "5" else "")
        total = [sum(per_code[c][i] for _, c, _, _ in codes) for i in range(STEPS)]
        w.counter("envoy_cluster_upstream_rq_total", {"envoy_cluster_name": cluster, **target},
                  total, pod, scenario=sc, slice=sl, role=role, kind="aux")
        obs = observations(rng, total, 0.025 if role != "canary" else 0.035)
        w.histogram("envoy_cluster_upstream_rq_time", {"envoy_cluster_name": cluster, **target},
                    obs, ms(ENVOY_MS), ENVOY_MS, pod, role=role, scenario=sc, slice=sl,
                    outcome="", count_is_requests=False, sum_scale=1000.0)


def gen_contour(w: Writer, rng: random.Random) -> Scenario:
    """Contour: one Envoy cluster per backend Service.

    Contour names each cluster `<ns>/<svc>/<port>/<hash>` with alt_stat_name `<ns>_<svc>_<port>`
    (projectcontour/contour internal/envoy/cluster.go AltStatName, internal/envoy/v3/cluster.go;
    v1.33.0) and implements backendRef weights with Envoy weighted_clusters
    (internal/envoy/v3/route.go): envoy_cluster_name="store-contour_store-v1_8080". Slices:
    "main"; "other-port" (the same Services on port 9090, another route: not to be counted).
    """
    sc, ns = "contour", "store-contour"
    slices = {}
    for sl, port, low, high in (("main", 8080, 4, 12), ("other-port", 9090, 1, 3)):
        slices[sl] = Target(ns, "store", "store-v1", "store-v2",
                            note=f"envoy_cluster_name={ns}_<svc>_{port}")
        for role, svc in (("stable", "store-v1"), ("canary", "store-v2")):
            _cluster(w, rng, sc, sl, role, f"{ns}_{svc}_{port}", "projectcontour", "envoy",
                     "projectcontour/envoy", low, high, bad=role == "canary")
    return Scenario(sc, "envoy (contour)", "projectcontour/contour internal/envoy/cluster.go",
                    slices)


def gen_envoy_gateway(w: Writer, rng: random.Random) -> Scenario:
    """Envoy Gateway.

    Default: one Envoy cluster per HTTPRoute rule, `httproute/<ns>/<route>/rule/<n>`, holding
    the endpoints of every backendRef of the rule (weights as endpoint weights), so stable and
    canary share one envoy_cluster_name (envoyproxy/gateway internal/gatewayapi/helpers.go
    irRouteDestinationName; v1.0.0 .. v1.9.0; envoyproxy/gateway#6742, #7017 open): slice
    "rule-cluster", role "combined". A backendRef with a filter makes one cluster per
    backendRef, `.../rule/<n>/backend/<i>` (irDestinationSettingName; v1.4.0+, #5269): slice
    "per-backend". EnvoyProxy spec.mergeBackends (v1.9.0, experimental) makes one cluster per
    backend, `service/<ns>/<svc>/<port>` (irBackendClusterName): slice "merged".
    """
    sc = "envoy-gateway"
    slices: dict[str, Target] = {}
    eg = ("envoy-gateway-system", "envoy-eg-public-5d9c7b8f4", "envoy-gateway-system/envoy")
    ns = "eg"
    cluster = f"httproute/{ns}/store/rule/0"
    slices["rule-cluster"] = Target(ns, "store", "store-v1", "store-v2",
                                    note=f"one cluster {cluster}: versions cannot be told apart")
    _cluster(w, rng, sc, "rule-cluster", "combined", cluster, *eg, 6, 16, bad=False)
    ns = "eg-filters"
    slices["per-backend"] = Target(ns, "store", f"httproute/{ns}/store/rule/0/backend/0",
                                   f"httproute/{ns}/store/rule/0/backend/1",
                                   note="a filter on a backendRef: one cluster per backendRef")
    for role, idx in (("stable", 0), ("canary", 1)):
        _cluster(w, rng, sc, "per-backend", role, f"httproute/{ns}/store/rule/0/backend/{idx}",
                 *eg, 4, 12, bad=role == "canary")
    ns = "eg-merge"
    slices["merged"] = Target(ns, "store", f"service/{ns}/store-v1/8080",
                              f"service/{ns}/store-v2/8080",
                              note="EnvoyProxy mergeBackends (v1.9.0, experimental)")
    for role, svc in (("stable", "store-v1"), ("canary", "store-v2")):
        _cluster(w, rng, sc, "merged", role, f"service/{ns}/{svc}/8080", *eg, 4, 12,
                 bad=role == "canary")
    return Scenario(sc, "envoy (envoy gateway)",
                    "envoyproxy/gateway internal/gatewayapi/helpers.go", slices)
