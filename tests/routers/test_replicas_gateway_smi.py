"""Kubernetes replicas, Gateway API HTTPRoute and SMI TrafficSplit routers on the real API
server; the Gateway API CRD's schema limits and CEL rules refuse what the router would write."""

from __future__ import annotations

import copy

import pytest

from analyzer.routers.base import RouterError
from analyzer.routers.kube.replicas import split_replicas
from tests.routers.conftest import (
    GATEWAY,
    HTTP_ROUTE,
    KUBERNETES,
    SMI,
    TRAFFIC_SPLIT,
    Kube,
    deployment,
)

DEP = ("apps/v1", "Deployment")
ROUTE = ("gateway.networking.k8s.io/v1", "HTTPRoute", "store")
SPLIT = ("split.smi-spec.io/v1alpha4", "TrafficSplit", "podinfo")


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


def replicas(kube: Kube) -> tuple[int, int]:
    return (kube.get(*DEP, "api-v1")["spec"]["replicas"],
            kube.get(*DEP, "api-v2")["spec"]["replicas"])


@pytest.fixture
def deployments(kube: Kube) -> Kube:
    kube.seed(deployment("api-v1", "v1", 8))
    kube.seed(deployment("api-v2", "v2", 2))
    return kube


def test_replicas_follow_weight_and_total_stays(deployments: Kube) -> None:
    before = deployments.get(*DEP, "api-v1")
    r = deployments.router(KUBERNETES)
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
    # the pod template (with the server's defaults) is never touched
    assert dep["spec"]["template"] == before["spec"]["template"]
    assert dep["spec"]["strategy"] == before["spec"]["strategy"]


def test_replicas_total_from_policy(deployments: Kube) -> None:
    deployments.router({**KUBERNETES, "totalReplicas": 4}).set_weight(25)
    assert replicas(deployments) == (3, 1)


def test_replicas_grow_first_then_shrink(deployments: Kube) -> None:
    r = deployments.router(KUBERNETES)
    r.set_weight(60)
    # canary grows before stable shrinks
    assert deployments.writes() == [("PATCH", "api-v2", 200), ("PATCH", "api-v1", 200)]


def test_replicas_second_write_fails_first_is_put_back(deployments: Kube) -> None:
    r = deployments.router(KUBERNETES)
    deployments.proxy.inject(500, method="PATCH", path="/api-v1")
    with pytest.raises(RouterError, match=rf"Deployment {deployments.ns}/api-v1.*put back"):
        r.set_weight(50)
    assert replicas(deployments) == (8, 2)
    assert deployments.writes() == [("PATCH", "api-v2", 200), ("PATCH", "api-v1", 500),
                                    ("PATCH", "api-v2", 200)]


def test_replicas_no_header_no_mirror(deployments: Kube) -> None:
    r = deployments.router(KUBERNETES)
    with pytest.raises(RouterError, match="cannot route by header"):
        r.set_header_route({"header": "a", "value": "b"})
    with pytest.raises(RouterError, match="cannot mirror"):
        r.set_mirror(5)


def test_replicas_missing_deployment(kube: Kube) -> None:
    kube.seed(deployment("api-v1", "v1", 8))
    with pytest.raises(RouterError, match=rf"Deployment {kube.ns}/api-v2.*does not exist"):
        kube.router(KUBERNETES).set_weight(10)


def rules(kube: Kube) -> list[dict]:
    return kube.get(*ROUTE)["spec"]["rules"]


SERVICE = {"group": "", "kind": "Service"}  # the server's defaults on every backendRef


def test_gateway_weights_and_foreign_rule_untouched(kube: Kube) -> None:
    seeded = kube.seed(HTTP_ROUTE)
    r = kube.router(GATEWAY)
    assert r.get_weight().canary_weight == 0
    r.set_weight(20)
    assert rules(kube)[0]["backendRefs"] == [
        {**SERVICE, "name": "store-v1", "port": 8080, "weight": 80},
        {**SERVICE, "name": "store-v2", "port": 8080, "weight": 20}]
    assert rules(kube)[1] == seeded["spec"]["rules"][1]
    assert kube.get(*ROUTE)["spec"]["parentRefs"] == seeded["spec"]["parentRefs"]
    assert r.get_weight().canary_weight == 20
    r.set_header_route({"header": "x-canary", "value": "always"})
    ab = rules(kube)[0]
    assert "name" not in ab  # pruned before Gateway API v1.4: found by annotation instead
    assert "canary-analyzer.io/rules" in kube.get(*ROUTE)["metadata"]["annotations"]
    assert ab["matches"] == [{"path": {"type": "PathPrefix", "value": "/api"},
                              "headers": [{"type": "Exact", "name": "x-canary",
                                           "value": "always"}]}]
    assert ab["backendRefs"] == [{**SERVICE, "name": "store-v2", "port": 8080, "weight": 1}]
    assert r.get_weight().header_route == {"header": "x-canary", "value": "always"}
    r.reset()
    assert [x.get("name") for x in rules(kube)] == [None, None]
    assert r.get_weight().canary_weight == 0 and r.get_weight().header_route is None
    with pytest.raises(RouterError, match="cannot route by cookie"):
        r.set_header_route({"cookie": "c"})


def test_gateway_rule_index_missing(kube: Kube) -> None:
    kube.seed(HTTP_ROUTE)
    with pytest.raises(RouterError,
                       match=rf"HTTPRoute {kube.ns}/store .*: rule index\(es\) \[5\]"):
        kube.router({**GATEWAY, "rules": [5]}).set_weight(10)


def test_gateway_foreign_backend_in_managed_rule_refused(kube: Kube) -> None:
    route = copy.deepcopy(HTTP_ROUTE)
    route["spec"]["rules"][0]["backendRefs"].append({"name": "store-old", "port": 8080})
    kube.seed(route)
    with pytest.raises(RouterError, match="store-old"):
        kube.router(GATEWAY).set_weight(10)


def test_gateway_ab_rule_over_the_schema_limit_is_refused_by_the_server(kube: Kube) -> None:
    """HTTPRoute allows 16 rules (`maxItems` in the CRD): the A/B rule would be the 17th."""
    route = copy.deepcopy(HTTP_ROUTE)
    route["spec"]["rules"] += [{"matches": [{"path": {"type": "PathPrefix", "value": f"/r{i}"}}],
                                "backendRefs": [{"name": "docs", "port": 80}]}
                               for i in range(14)]
    before = kube.seed(route)
    r = kube.router(GATEWAY)
    r.set_weight(10)  # 16 rules: fine
    with pytest.raises(RouterError) as exc:
        r.set_header_route({"header": "x-canary", "value": "always"})
    message = str(exc.value)
    assert message.startswith(f"cannot update HTTPRoute {kube.ns}/store "
                              "(gateway.networking.k8s.io/v1): HTTP 422")
    assert "spec.rules: Too many: 17: must have at most 16 items" in message
    assert message.endswith("nothing was applied")
    after = kube.get(*ROUTE)
    assert len(after["spec"]["rules"]) == len(before["spec"]["rules"]) == 16
    assert r.get_weight() == type(r.get_weight())(canary_weight=10)


def test_gateway_ab_rule_breaking_a_cel_rule_is_refused_by_the_server(kube: Kube) -> None:
    """The CRD's CEL rule allows fewer than 128 matches in a route; the A/B rule copies the
    managed rule's 60 matches next to 60 others."""
    route = copy.deepcopy(HTTP_ROUTE)
    route["spec"]["rules"][0]["matches"] = [
        {"path": {"type": "PathPrefix", "value": f"/api/{i}"}} for i in range(60)]
    route["spec"]["rules"][1]["matches"] = [
        {"path": {"type": "PathPrefix", "value": f"/docs/{i}"}} for i in range(60)]
    kube.seed(route)
    r = kube.router(GATEWAY)
    with pytest.raises(RouterError) as exc:
        r.set_header_route({"header": "x-canary", "value": "always"})
    message = str(exc.value)
    assert f"cannot update HTTPRoute {kube.ns}/store" in message and "HTTP 422" in message
    assert ("While 16 rules and 64 matches per rule are allowed, the total number of matches "
            "across all rules in a route must be less than 128") in message
    assert [x.get("name") for x in rules(kube)] == [None, None]


def test_smi_weights(kube: Kube) -> None:
    kube.seed(TRAFFIC_SPLIT)
    r = kube.router(SMI)
    r.set_weight(35)
    backends = kube.get(*SPLIT)["spec"]["backends"]
    assert backends == [{"service": "podinfo-primary", "weight": 65},
                        {"service": "podinfo-old", "weight": 0},
                        {"service": "podinfo-canary", "weight": 35}]
    assert r.get_weight().canary_weight == 35
    r.reset()
    assert r.get_weight().canary_weight == 0
    assert kube.get(*SPLIT)["metadata"]["annotations"] == {"x": "y"}
    with pytest.raises(RouterError, match="cannot route by header"):
        r.set_header_route({"header": "a", "value": "b"})


def test_smi_wrong_root_service(kube: Kube) -> None:
    ts = copy.deepcopy(TRAFFIC_SPLIT)
    ts["spec"]["service"] = "other"
    kube.seed(ts)
    with pytest.raises(RouterError, match="expected the root service 'podinfo'"):
        kube.router(SMI).set_weight(10)
