"""Conflict storms (409 retries, concurrent writers, no lost foreign changes) and the declared
RBAC of each router module compared with the API calls it really makes."""

from __future__ import annotations

import copy
import importlib
import threading

import pytest

from analyzer.routers.base import RouterError
from tests.routers.conftest import (
    DESTINATION_RULE,
    GATEWAY,
    HTTP_ROUTE,
    ISTIO,
    KNATIVE,
    KNATIVE_SERVICE,
    KUBERNETES,
    NGINX_INGRESS,
    NS,
    SELDON,
    SELDON_DEPLOYMENT,
    SMI,
    STABLE_INGRESS,
    TRAFFIC_SPLIT,
    VIRTUAL_SERVICE,
    deployment,
    router_for,
)

VS = ("networking.istio.io/v1", "VirtualService", NS, "checkout")


def test_409_storm_is_retried_with_a_fresh_read(double):
    double.seed(VIRTUAL_SERVICE)
    double.seed(DESTINATION_RULE)
    double.inject(409, count=5, method="PATCH")
    r = router_for(double, ISTIO)
    r.set_weight(20)
    assert r.get_weight().canary_weight == 20
    patches = [q for q in double.requests if q.method == "PATCH"]
    assert [q.status for q in patches] == [409] * 5 + [200]
    vs_gets = [q for q in double.requests if q.method == "GET" and "virtualservices" in q.path]
    assert len(vs_gets) >= 6 + 1  # one fresh read per attempt, plus the read-back


def test_endless_conflicts_give_up_and_leave_the_previous_weight(double):
    double.seed(VIRTUAL_SERVICE)
    double.seed(DESTINATION_RULE)
    r = router_for(double, ISTIO, conflict_retries=3)
    r.set_weight(10)
    double.inject(409, count=None, method="PATCH")
    with pytest.raises(RouterError, match=r"VirtualService shop/checkout.*4 conflicting writes"):
        r.set_weight(90)
    double.clear_faults()
    assert r.get_weight().canary_weight == 10


def test_concurrent_writers_converge_without_lost_updates(double):
    """N routers each own one route of the same VirtualService, while a foreign writer keeps
    adding annotations; reads are slowed so writers collide. Every write must land."""
    n = 6
    vs = copy.deepcopy(VIRTUAL_SERVICE)
    vs["spec"]["http"] = [
        {"name": f"r{i}", "match": [{"uri": {"prefix": f"/p{i}"}}],
         "route": [{"destination": {"host": "checkout", "subset": "stable"}}]}
        for i in range(n)
    ]
    double.seed(vs)
    double.seed(DESTINATION_RULE)
    double.inject(None, delay=0.03, method="GET", path="virtualservices", count=None)
    start = threading.Barrier(n + 1)
    failures: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            r = router_for(double, {**ISTIO, "routes": [f"r{i}"]})
            start.wait()
            for w in (i + 1, 10 * (i + 1)):
                r.set_weight(w)
        except BaseException as e:
            failures.append(e)

    def foreign() -> None:
        start.wait()
        for k in range(5):
            double.modify(*VS, lambda o, k=k: o["metadata"]["annotations"].update({f"f{k}": "x"}))
            threading.Event().wait(0.02)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
    threads.append(threading.Thread(target=foreign))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert failures == []
    final = double.get(*VS)
    weights = {r["name"]: [d["weight"] for d in r["route"]] for r in final["spec"]["http"]}
    assert weights == {f"r{i}": [100 - 10 * (i + 1), 10 * (i + 1)] for i in range(n)}
    for k in range(5):
        assert final["metadata"]["annotations"][f"f{k}"] == "x"
    assert final["metadata"]["annotations"]["team"] == "payments"
    assert any(q.status == 409 for q in double.requests)  # the storm really happened


# ------------------------------------------------------------------------------ RBAC

SCENARIOS = {
    "istio": ([VIRTUAL_SERVICE, DESTINATION_RULE], ISTIO, True, True),
    "nginx_ingress": ([STABLE_INGRESS], NGINX_INGRESS, True, False),
    "knative": ([KNATIVE_SERVICE], KNATIVE, False, False),
    "seldon": ([SELDON_DEPLOYMENT], SELDON, False, True),
    "replicas": ([deployment("api-v1", "v1", 8), deployment("api-v2", "v2", 2)],
                   KUBERNETES, False, False),
    "gateway_api": ([HTTP_ROUTE], GATEWAY, True, False),
    "smi": ([TRAFFIC_SPLIT], SMI, False, False),
}


@pytest.mark.parametrize("module", sorted(SCENARIOS))
def test_declared_permissions_equal_the_calls_made(double, module):
    seeds, cfg, header, mirror = SCENARIOS[module]
    for obj in seeds:
        double.seed(obj)
    r = router_for(double, cfg, service="frontend" if module == "nginx_ingress" else "checkout")
    r.get_weight()
    r.set_weight(20)
    if header:
        r.set_header_route({"header": "x-canary", "value": "1"})
    if mirror:
        r.reset()
        r.set_mirror(100)
    r.reset()
    declared = {(g, res, verb) for g, res, verbs in
                importlib.import_module(f"analyzer.routers.kube.{module}").PERMISSIONS
                for verb in verbs}
    assert double.calls() == declared


def test_nginx_local_needs_no_kubernetes_rbac():
    from analyzer.routers import nginx_file

    assert nginx_file.PERMISSIONS == ()
