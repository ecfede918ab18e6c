"""Kubernetes replicas, Gateway API HTTPRoute and SMI TrafficSplit routers."""

from __future__ import annotations

import copy

import pytest

from analyzer.routers.base import RouterError
from analyzer.routers.kube.replicas import split_replicas
from tests.routers.conftest import (
    GATEWAY,
    HTTP_ROUTE,
    KUBERNETES,
    NS,
    SMI,
    TRAFFIC_SPLIT,
    deployment,
    router_for,
)

DEP = ("apps/v1", "Deployment", NS)
ROUTE = ("gateway.networking.k8s.io/v1", "HTTPRoute", NS, "store")
SPLIT = ("split.smi-spec.io/v1alpha4", "TrafficSplit", NS, "podinfo")


@pytest.mark.parametrize(("total", "weight", "expected"), [
    (10, 0, (10, 0)), (10, 100, (0, 10)), (10, 20, (8, 2)), (10, 25, (7, 3)),  # 2.5 -> 3
    (10, 5, (9, 1)), (10, 1, (9, 1)),   # floor: a weight above 0 gets a pod
    (10, 99, (1, 9)),                   # floor: a weight below 100 keeps a stable pod
    (3, 50, (1, 2)), (2, 10, (1, 1)), (1, 0, (1, 0)), (1, 100, (0, 1)),
])
def test_split_replicas(total, weight, expected):
    assert split_replicas(total, weight) == expected
    assert sum(split_replicas(total, weight)) == total


def test_split_replicas_needs_two_for_a_partial_weight():
    with pytest.raises(RouterError, match="at least 2 replicas"):
        split_replicas(1, 50)


def replicas(double):
    return (double.get(*DEP, "api-v1")["spec"]["replicas"],
            double.get(*DEP, "api-v2")["spec"]["replicas"])


@pytest.fixture
def deployments(double):
    double.seed(deployment("api-v1", "v1", 8))
    double.seed(deployment("api-v2", "v2", 2))
    return double


def test_replicas_follow_weight_and_total_stays(deployments):
    r = router_for(deployments, KUBERNETES)
    assert r.get_weight().canary_weight == 20
    r.set_weight(50)
    assert replicas(deployments) == (5, 5)
    r.set_weight(100)
    assert replicas(deployments) == (0, 10)
    r.reset()
    assert replicas(deployments) == (10, 0)
    assert r.get_weight().canary_weight == 0
    dep = deployments.get(*DEP, "api-v1")
    assert dep["metadata"]["annotations"] == {"deploy/by": "ci"}
    assert dep["spec"]["template"] == deployment("api-v1", "v1", 0)["spec"]["template"]


def test_replicas_total_from_policy(deployments):
    router_for(deployments, {**KUBERNETES, "totalReplicas": 4}).set_weight(25)
    assert replicas(deployments) == (3, 1)


def test_replicas_grow_first_then_shrink(deployments):
    r = router_for(deployments, KUBERNETES)
    r.set_weight(60)
    patches = [q.path.rsplit("/", 1)[1] for q in deployments.requests if q.method == "PATCH"]
    assert patches == ["api-v2", "api-v1"]  # canary grows before stable shrinks


def test_replicas_second_write_fails_first_is_put_back(deployments):
    r = router_for(deployments, KUBERNETES)
    deployments.inject(500, method="PATCH", path="/api-v1")
    with pytest.raises(RouterError, match=r"Deployment shop/api-v1.*put back"):
        r.set_weight(50)
    assert replicas(deployments) == (8, 2)


def test_replicas_no_header_no_mirror(deployments):
    r = router_for(deployments, KUBERNETES)
    with pytest.raises(RouterError, match="cannot route by header"):
        r.set_header_route({"header": "a", "value": "b"})
    with pytest.raises(RouterError, match="cannot mirror"):
        r.set_mirror(5)


def test_replicas_missing_deployment(double):
    double.seed(deployment("api-v1", "v1", 8))
    with pytest.raises(RouterError, match=r"Deployment shop/api-v2.*does not exist"):
        router_for(double, KUBERNETES).set_weight(10)


def rules(double):
    return double.get(*ROUTE)["spec"]["rules"]


def test_gateway_weights_and_foreign_rule_untouched(double):
    double.seed(HTTP_ROUTE)
    r = router_for(double, GATEWAY)
    assert r.get_weight().canary_weight == 0
    r.set_weight(20)
    assert rules(double)[0]["backendRefs"] == [
        {"name": "store-v1", "port": 8080, "weight": 80},
        {"name": "store-v2", "port": 8080, "weight": 20}]
    assert rules(double)[1] == HTTP_ROUTE["spec"]["rules"][1]
    assert double.get(*ROUTE)["spec"]["parentRefs"] == HTTP_ROUTE["spec"]["parentRefs"]
    assert r.get_weight().canary_weight == 20
    r.set_header_route({"header": "x-canary", "value": "always"})
    ab = rules(double)[0]
    assert ab["name"] == "canary-analyzer-ab"
    assert ab["matches"] == [{"path": {"type": "PathPrefix", "value": "/api"},
                              "headers": [{"type": "Exact", "name": "x-canary",
                                           "value": "always"}]}]
    assert ab["backendRefs"] == [{"name": "store-v2", "port": 8080}]
    assert r.get_weight().header_route == {"header": "x-canary", "value": "always"}
    r.reset()
    assert [x.get("name") for x in rules(double)] == [None, None]
    assert r.get_weight().canary_weight == 0 and r.get_weight().header_route is None
    with pytest.raises(RouterError, match="cannot route by cookie"):
        r.set_header_route({"cookie": "c"})


def test_gateway_rule_index_missing(double):
    double.seed(HTTP_ROUTE)
    with pytest.raises(RouterError, match=r"HTTPRoute shop/store .*: rule index\(es\) \[5\]"):
        router_for(double, {**GATEWAY, "rules": [5]}).set_weight(10)


def test_gateway_foreign_backend_in_managed_rule_refused(double):
    route = copy.deepcopy(HTTP_ROUTE)
    route["spec"]["rules"][0]["backendRefs"].append({"name": "store-old", "port": 8080})
    double.seed(route)
    with pytest.raises(RouterError, match="store-old"):
        router_for(double, GATEWAY).set_weight(10)


def test_smi_weights(double):
    double.seed(TRAFFIC_SPLIT)
    r = router_for(double, SMI)
    r.set_weight(35)
    backends = double.get(*SPLIT)["spec"]["backends"]
    assert backends == [{"service": "podinfo-primary", "weight": 65},
                        {"service": "podinfo-old", "weight": 0},
                        {"service": "podinfo-canary", "weight": 35}]
    assert r.get_weight().canary_weight == 35
    r.reset()
    assert r.get_weight().canary_weight == 0
    assert double.get(*SPLIT)["metadata"]["annotations"] == {"x": "y"}
    with pytest.raises(RouterError, match="cannot route by header"):
        r.set_header_route({"header": "a", "value": "b"})


def test_smi_wrong_root_service(double):
    ts = copy.deepcopy(TRAFFIC_SPLIT)
    ts["spec"]["service"] = "other"
    double.seed(ts)
    with pytest.raises(RouterError, match="expected the root service 'podinfo'"):
        router_for(double, SMI).set_weight(10)
