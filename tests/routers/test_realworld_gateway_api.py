"""Gateway API router on real-world HTTPRoutes (tests/fixtures/realworld/gateway-api/), on the
real API server (Gateway API v1.6.1 standard CRD, with its CEL rules and defaulting): weight,
header A/B, RequestMirror, reset and sticky sessions, read back from the server.

Defect 6 of issue 18 (the A/B rule dropped the rule's filters and timeouts) and the version
problems (v1beta1 objects, Linkerd's "core" group) are covered here; Gateway API v1.2.1 (rule
names and mirror percent pruned) in test_realworld_versions.py.
"""

from __future__ import annotations

import pytest

from analyzer.routers.base import RouterError
from tests.routers.realworld import every_operation, get, live, offline, seed

pytestmark = pytest.mark.kube


def rules(cluster, ns, obj) -> list[dict]:
    return get(cluster, obj, ns)["spec"]["rules"]


def gateway(route: str, stable: str, canary: str, **extra) -> dict:
    return {"provider": "gateway-api", "httpRoute": route, "stableService": stable,
            "canaryService": canary, **extra}


# ---------------------------------------------------------------------------- defect 6


@pytest.mark.parametrize(("rel", "route", "stable", "kept"), [
    ("gateway-api/gateway-api-url-rewrite.yaml", "http-filter-1", "filter-svc", "filters"),
    ("gateway-api/gateway-api-request-header-modifier.yaml", "http-filter-1", "my-filter-svc1",
     "filters"),
    ("gateway-api/gateway-api-timeouts.yaml", "timeout-example", "timeout-svc", "timeouts"),
    ("gateway-api/gateway-api-request-mirroring.yaml", "http-filter-mirror", "foo-v1",
     "filters"),
])
def test_ab_rule_keeps_filters_and_timeouts(kube_cluster, kube_namespace, rel, route, stable,
                                            kept):
    """Defect 6: the A/B rule used to copy only matches and backendRefs, so header users lost
    the URL rewrite, the header modifier, the user's request mirror and the timeouts."""
    (obj,) = seed(kube_cluster, kube_namespace, rel)
    router = live(kube_cluster, gateway(route, stable, f"{stable}-canary", port=8080),
                  kube_namespace)
    router.set_header_route({"header": "x-canary", "value": "always"})
    ab, user = rules(kube_cluster, kube_namespace, obj)
    original = obj["spec"]["rules"][0]
    assert ab[kept] == original[kept]
    assert [m["headers"][-1] for m in ab["matches"]] == [
        {"type": "Exact", "name": "x-canary", "value": "always"}] * len(original["matches"])
    assert [{k: v for k, v in m.items() if k != "headers"} for m in ab["matches"]] == \
        original["matches"]
    assert [b["name"] for b in ab["backendRefs"]] == [f"{stable}-canary"]
    assert user == original
    assert router.get_weight().header_route == {"header": "x-canary", "value": "always"}
    router.set_weight(10)
    assert rules(kube_cluster, kube_namespace, obj)[0] == ab  # the weight does not touch it
    router.reset()
    after = rules(kube_cluster, kube_namespace, obj)
    assert len(after) == 1 and after[0][kept] == original[kept]
    assert "canary-analyzer.io/rules" not in get(kube_cluster, obj, kube_namespace)[
        "metadata"].get("annotations", {})


def test_ab_by_regex_on_a_rule_without_matches(kube_cluster, kube_namespace):
    """A header regex (RegularExpression match) on a rule that matches everything."""
    (obj,) = seed(kube_cluster, kube_namespace, "gateway-api/gateway-api-traffic-split-2.yaml")
    router = live(kube_cluster, gateway("foo-route", "foo-v1", "foo-v2"), kube_namespace)
    router.set_header_route({"header": "x-user", "pattern": "beta-.*"})
    ab = rules(kube_cluster, kube_namespace, obj)[0]
    assert ab["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}, "headers": [
        {"type": "RegularExpression", "name": "x-user", "value": "beta-.*"}]}]
    assert router.get_weight().header_route == {"header": "x-user", "pattern": "beta-.*"}
    router.set_header_route({"header": "x-user", "value": "1"})  # replaced, not added
    assert len(rules(kube_cluster, kube_namespace, obj)) == 2


# ---------------------------------------------------------------------------- weights


def test_split_read_moved_and_reset(kube_cluster, kube_namespace):
    """The Gateway API traffic-splitting example at 90/10."""
    (obj,) = seed(kube_cluster, kube_namespace, "gateway-api/gateway-api-traffic-split-2.yaml")
    router = live(kube_cluster, gateway("foo-route", "foo-v1", "foo-v2"), kube_namespace)
    assert router.get_weight().canary_weight == 10
    router.set_weight(60)
    refs = rules(kube_cluster, kube_namespace, obj)[0]["backendRefs"]
    assert [(b["name"], b["weight"]) for b in refs] == [("foo-v1", 40), ("foo-v2", 60)]
    router.reset()
    assert router.get_weight().canary_weight == 0
    assert get(kube_cluster, obj, kube_namespace)["spec"]["hostnames"] == ["foo.example.com"]
    with pytest.raises(RouterError, match="cannot route by cookie"):
        router.set_header_route({"cookie": "c"})


def test_user_header_rule_to_the_canary_survives(kube_cluster, kube_namespace):
    """traffic-split-1: the user's own `traffic: test` rule to foo-v2 is not a candidate and
    survives weight, A/B and reset."""
    (obj,) = seed(kube_cluster, kube_namespace, "gateway-api/gateway-api-traffic-split-1.yaml")
    router = live(kube_cluster, gateway("foo-route", "foo-v1", "foo-v2"), kube_namespace)
    router.set_weight(30)
    router.set_header_route({"header": "x-canary", "value": "1"})
    after = rules(kube_cluster, kube_namespace, obj)
    assert after[-1] == obj["spec"]["rules"][1]
    router.reset()
    assert rules(kube_cluster, kube_namespace, obj)[1] == obj["spec"]["rules"][1]


def test_linkerd_core_group_backends(kube_cluster, kube_namespace):
    """Argo's Linkerd example (v1beta1) spells the core group "core": those backends used to be
    refused as "not stable/canary". Unweighted, they read as 50/50 (weight defaults to 1)."""
    (obj,) = seed(kube_cluster, kube_namespace,
                  "gateway-api/argo-plugin-linkerd-core-group.yaml")
    router = live(kube_cluster, gateway("argo-rollouts-http-route",
                                        "argo-rollouts-stable-service",
                                        "argo-rollouts-canary-service"), kube_namespace)
    assert router.get_weight().canary_weight == 50
    router.set_weight(20)
    refs = rules(kube_cluster, kube_namespace, obj)[0]["backendRefs"]
    assert [(b["group"], b["weight"]) for b in refs] == [("core", 80), ("core", 20)]


def test_linkerd_policy_httproute_is_refused_by_group():
    """Linkerd's own HTTPRoute (policy.linkerd.io) is another API group: named as such."""
    router = offline("gateway-api/linkerd-policy-httproute.yaml",
                     gateway("backend-router", "backend-a-podinfo", "backend-b-podinfo"))
    with pytest.raises(RouterError,
                       match=r"policy\.linkerd\.io/v1beta2.*gateway\.networking\.k8s\.io"):
        router.get_weight()


# ---------------------------------------------------------------------------- mirroring


def test_mirror_read_set_with_percent_and_fraction(kube_cluster, kube_namespace):
    """The Gateway API mirroring example mirrors foo-v1's traffic to foo-v2: read as 100 %; a
    percent and a fraction are written (the v1.6.1 schema has both) and read back."""
    (obj,) = seed(kube_cluster, kube_namespace, "gateway-api/gateway-api-request-mirroring.yaml")
    router = live(kube_cluster, gateway("http-filter-mirror", "foo-v1", "foo-v2"),
                  kube_namespace, strategy={"type": "mirror", "mirrorPercent": 25})
    assert router.get_weight().mirror_percent == 100.0
    router.set_mirror(25)
    (rule,) = rules(kube_cluster, kube_namespace, obj)
    assert rule["filters"] == [{"type": "RequestMirror", "requestMirror": {
        "backendRef": {"group": "", "kind": "Service", "name": "foo-v2", "port": 8080},
        "percent": 25}}]
    assert router.get_weight().mirror_percent == 25.0
    router.set_mirror(12.5)
    mirror = rules(kube_cluster, kube_namespace, obj)[0]["filters"][0]["requestMirror"]
    assert mirror["fraction"] == {"numerator": 1250, "denominator": 10000}
    assert router.get_weight().mirror_percent == 12.5
    router.reset()
    assert "filters" not in rules(kube_cluster, kube_namespace, obj)[0]


def test_user_mirror_to_another_backend_stays(kube_cluster, kube_namespace):
    """istio.io's GAMMA mirroring route (v1beta1) mirrors to httpbin-v2; a canary httpbin-v3
    mirror is added beside it and removed alone."""
    (obj,) = seed(kube_cluster, kube_namespace, "gateway-api/istio-mirroring-task-gamma.yaml")
    router = live(kube_cluster, gateway("httpbin", "httpbin-v1", "httpbin-v3"), kube_namespace)
    assert router.get_weight().mirror_percent is None
    router.set_mirror(50)
    filters = rules(kube_cluster, kube_namespace, obj)[0]["filters"]
    assert [f["requestMirror"]["backendRef"]["name"] for f in filters] == [
        "httpbin-v2", "httpbin-v3"]
    router.reset()
    assert [f["requestMirror"]["backendRef"]["name"]
            for f in rules(kube_cluster, kube_namespace, obj)[0]["filters"]] == ["httpbin-v2"]
    assert router.last_applied[0]["apiVersion"] == "gateway.networking.k8s.io/v1"


# ---------------------------------------------------------------------------- sticky sessions


def test_sticky_sessions_rule_and_expiry(kube_cluster, kube_namespace):
    """Sticky sessions on the URL-rewrite example: a rule before the route's one, matching our
    cookie (RegularExpression on Cookie) with the route's path and filters, to the canary; the
    canary backend sets the cookie; a rollback expires it on stable."""
    (obj,) = seed(kube_cluster, kube_namespace, "gateway-api/gateway-api-url-rewrite.yaml")
    router = live(kube_cluster, gateway("http-filter-1", "filter-svc", "filter-svc-canary",
                                        stickySessions={"maxAge": "30m"}), kube_namespace)
    router.set_weight(20)
    sticky, rule = rules(kube_cluster, kube_namespace, obj)
    cookie = sticky["matches"][0]["headers"][-1]
    assert cookie["type"] == "RegularExpression" and cookie["name"] == "Cookie"
    value = cookie["value"].split("canary\\-analyzer=")[1][:16]
    assert sticky["filters"] == obj["spec"]["rules"][0]["filters"]
    assert [b["name"] for b in sticky["backendRefs"]] == ["filter-svc-canary"]
    canary = rule["backendRefs"][1]
    assert canary["filters"] == [{"type": "ResponseHeaderModifier", "responseHeaderModifier": {
        "add": [{"name": "Set-Cookie",
                 "value": f"canary-analyzer={value}; Max-Age=1800; Path=/; HttpOnly"}]}}]
    assert router.get_weight().sticky == f"cookie canary-analyzer={value}"
    router.reset()
    expiring, rule = rules(kube_cluster, kube_namespace, obj)
    assert expiring["matches"] == sticky["matches"]
    assert [b["name"] for b in expiring["backendRefs"]] == ["filter-svc"]
    assert expiring["backendRefs"][0]["filters"][0]["responseHeaderModifier"]["add"] == [
        {"name": "Set-Cookie", "value": f"canary-analyzer={value}; Max-Age=0; Path=/; HttpOnly"}]
    assert "filters" not in rule["backendRefs"][1]
    assert router.get_weight().sticky is None
    assert router.get_weight().canary_weight == 0


# ---------------------------------------------------------------------------- every object

EVERY = [
    ("gateway-api/argo-plugin-linkerd-core-group.yaml",
     gateway("argo-rollouts-http-route", "argo-rollouts-stable-service",
             "argo-rollouts-canary-service")),
    ("gateway-api/gateway-api-request-header-modifier.yaml",
     gateway("http-filter-1", "my-filter-svc1", "my-filter-svc2")),
    ("gateway-api/gateway-api-request-mirroring.yaml",
     gateway("http-filter-mirror", "foo-v1", "foo-v3")),
    ("gateway-api/gateway-api-timeouts.yaml", gateway("timeout-example", "timeout-svc", "t-2")),
    ("gateway-api/gateway-api-traffic-split-1.yaml", gateway("foo-route", "foo-v1", "foo-v2")),
    ("gateway-api/gateway-api-traffic-split-2.yaml", gateway("foo-route", "foo-v1", "foo-v2")),
    ("gateway-api/gateway-api-url-rewrite.yaml", gateway("http-filter-1", "filter-svc", "f-2")),
    ("gateway-api/istio-mirroring-task-gamma.yaml", gateway("httpbin", "httpbin-v1", "httpbin-v3")),
]


@pytest.mark.parametrize(("rel", "cfg"), EVERY, ids=[e[0] for e in EVERY])
def test_weight_header_mirror_reset_on_every_object(kube_cluster, kube_namespace, rel, cfg):
    """Every real-world HTTPRoute: each operation, read back; after the last reset only the
    weights differ from the object as written (its rules, filters and timeouts stay)."""
    (obj,) = seed(kube_cluster, kube_namespace, rel)
    every_operation(live(kube_cluster, cfg, kube_namespace),
                    header={"header": "x-canary", "value": "always"}, mirror=12.5)
    after = get(kube_cluster, obj, kube_namespace)
    assert len(after["spec"]["rules"]) == len(obj["spec"]["rules"])
    for before, now in zip(obj["spec"]["rules"], after["spec"]["rules"], strict=True):
        strip = [{k: v for k, v in b.items() if k != "weight"} for b in before["backendRefs"]]
        assert [{k: v for k, v in b.items() if k != "weight"}
                for b in now["backendRefs"]][:len(strip)] == strip
        assert {k: v for k, v in now.items() if k != "backendRefs"} == \
            {k: v for k, v in before.items() if k != "backendRefs"}
    assert after["metadata"].get("annotations") == obj["metadata"].get("annotations")
