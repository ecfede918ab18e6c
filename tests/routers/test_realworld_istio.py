"""Istio router on real-world VirtualServices (tests/fixtures/realworld/istio/), on the real API
server: weight, header A/B, mirror, reset and sticky sessions, read back from the server.

Defects of issue 18 covered here: 1 (A/B route drops the route's matches and fields), 2 (routes
the policy does not name are managed), 3 (subset mode matches other services' subsets), and the
version problems (objects written in v1alpha3/v1beta1, TLS routes left behind, YAML anchors,
deprecated mirrorPercent). Versions the session cluster does not serve: test_realworld_versions.py.
"""

from __future__ import annotations

import copy

import pytest
import yaml

from analyzer.routers.base import RouterError
from analyzer.routers.factory import build_router
from tests.routers.conftest import make_policy
from tests.routers.realworld import (
    FIXTURES,
    every_operation,
    fixture,
    get,
    live,
    offline,
    seed,
    without_meta,
)

pytestmark = pytest.mark.kube

SUBSETS = {"provider": "istio", "stableSubset": "v1", "canarySubset": "v2"}


def http(cluster, ns, obj) -> list[dict]:
    return get(cluster, obj, ns)["spec"]["http"]


def names(routes) -> list:
    return [r.get("name") for r in routes]


# ---------------------------------------------------------------------------- defect 1


def test_ab_route_keeps_every_uri_match_of_bookinfo_gateway(kube_cluster, kube_namespace):
    """Defect 1: bookinfo's ingress route matches five URIs behind a `hosts: "*"` gateway; the A/B
    route used to match the header alone, sending ANY path with the header to the canary. Each of
    its matches must now be one of the route's matches plus the header."""
    (vs,) = seed(kube_cluster, kube_namespace, "istio/bookinfo-gateway-productpage.yaml")
    router = live(kube_cluster, {"provider": "istio", "virtualService": "bookinfo",
                                 "stableHost": "productpage", "canaryHost": "productpage-canary"},
                  kube_namespace)
    router.set_header_route({"header": "X-Canary", "value": "always"})
    routes = http(kube_cluster, kube_namespace, vs)
    assert names(routes) == ["canary-analyzer-ab-http0", None]
    ab, user = routes
    assert ab["match"] == [{**m, "headers": {"x-canary": {"exact": "always"}}}
                           for m in vs["spec"]["http"][0]["match"]]
    assert [m["uri"] for m in ab["match"]] == [
        {"exact": "/productpage"}, {"prefix": "/static"}, {"exact": "/login"},
        {"exact": "/logout"}, {"prefix": "/api/v1/products"}]
    assert ab["route"] == [{"destination": {"host": "productpage-canary",
                                            "port": {"number": 9080}}}]
    assert user == vs["spec"]["http"][0]  # the user's route is untouched
    assert router.get_weight().header_route == {"header": "x-canary", "value": "always"}
    router.set_weight(30)
    assert router.get_weight().canary_weight == 30
    router.reset()
    assert http(kube_cluster, kube_namespace, vs)[0]["route"] == [
        {"destination": {"host": "productpage", "port": {"number": 9080}}, "weight": 100},
        {"destination": {"host": "productpage-canary", "port": {"number": 9080}}, "weight": 0}]
    assert router.get_weight().header_route is None


def test_ab_route_keeps_rewrite_retries_cors_and_headers_of_flagger_route(kube_cluster,
                                                                         kube_namespace):
    """Defect 1: Flagger's generated VirtualService (v1beta1) has a prefix match, rewrite,
    retries, corsPolicy and request headers; the A/B route used to drop them all."""
    (vs,) = seed(kube_cluster, kube_namespace, "istio/flagger-faq-frontend.yaml")
    router = live(kube_cluster, {"provider": "istio", "virtualService": "frontend",
                                 "stableHost": "podinfo-primary", "canaryHost": "podinfo-canary"},
                  kube_namespace)
    router.set_header_route({"header": "x-user", "pattern": "beta-.*"})
    ab, user = http(kube_cluster, kube_namespace, vs)
    original = vs["spec"]["http"][0]
    for key in ("rewrite", "retries", "corsPolicy", "headers"):
        assert ab[key] == original[key], key
    assert ab["match"] == [{"uri": {"prefix": "/"}, "headers": {"x-user": {"regex": "beta-.*"}}}]
    assert ab["route"] == [{"destination": {"host": "podinfo-canary"}}]
    assert user == original
    assert router.get_weight().header_route == {"header": "x-user", "pattern": "beta-.*"}
    router.set_mirror(20)
    assert "mirror" not in http(kube_cluster, kube_namespace, vs)[0]  # A/B route: no mirror
    router.reset()
    assert http(kube_cluster, kube_namespace, vs) == [original]


# ---------------------------------------------------------------------------- defect 2


def test_unnamed_test_route_is_never_managed(kube_cluster, kube_namespace):
    """Defect 2: bookinfo's ratings fault-injection route (user jason, 7 s delay) and the default
    route both go to ratings v1; without `routes:` both used to get canary weight and mirroring.
    Now the router refuses and lists them, and writes nothing."""
    vs, _ = seed(kube_cluster, kube_namespace, "istio/bookinfo-ratings-test-delay.yaml")
    cfg = {**SUBSETS, "virtualService": "ratings", "destinationRule": "ratings"}
    for op in (lambda r: r.set_weight(20), lambda r: r.set_mirror(50), lambda r: r.get_weight()):
        with pytest.raises(RouterError) as refused:
            op(live(kube_cluster, cfg, kube_namespace))
        message = str(refused.value)
        assert "VirtualService" in message and "(networking.istio.io/v1)" in message
        assert "2 routes send traffic to subset 'v1' of host 'ratings'" in message
        assert "http[0] (1 match, fault) -> ratings/v1" in message
        assert "http[1] (no match) -> ratings/v1" in message
        assert "spec.router.routes" in message
    assert without_meta(get(kube_cluster, vs, kube_namespace)) == without_meta(vs)
    router = live(kube_cluster, {**cfg, "routes": ["http[1]"]}, kube_namespace)
    router.set_weight(20)
    router.set_mirror(50)
    jason, default = http(kube_cluster, kube_namespace, vs)
    assert jason == vs["spec"]["http"][0]
    assert [(d["destination"]["subset"], d["weight"]) for d in default["route"]] == [
        ("v1", 80), ("v2", 20)]
    assert default["mirror"] == {"host": "ratings", "subset": "v2"}
    router.reset()
    assert http(kube_cluster, kube_namespace, vs)[0] == vs["spec"]["http"][0]


def test_two_named_routes_need_naming(kube_cluster, kube_namespace):
    """Defect 2: Argo's VirtualService with routes `primary` and `secondary` (v1alpha3): Argo
    refuses without route names; we used to move both."""
    (vs,) = seed(kube_cluster, kube_namespace, "istio/argo-regular-vsvc-two-routes.yaml")
    cfg = {"provider": "istio", "virtualService": "vsvc", "stableHost": "stable",
           "canaryHost": "canary"}
    with pytest.raises(RouterError, match=r"http\[0\] name=primary .*http\[1\] name=secondary"):
        live(kube_cluster, cfg, kube_namespace).set_weight(10)
    router = live(kube_cluster, {**cfg, "routes": ["primary"]}, kube_namespace)
    router.set_weight(10)
    primary, secondary = http(kube_cluster, kube_namespace, vs)
    assert [d["weight"] for d in primary["route"]] == [90, 10]
    assert secondary == vs["spec"]["http"][1]
    assert router.get_weight().canary_weight == 10
    router.set_header_route({"header": "x-canary", "value": "1"})
    assert names(http(kube_cluster, kube_namespace, vs)) == [
        "canary-analyzer-ab-primary", "primary", "secondary"]
    router.reset()
    assert names(http(kube_cluster, kube_namespace, vs)) == ["primary", "secondary"]


def test_ratings_abort_sample_offline_names_its_v1alpha3(tmp_path):
    """Defect 2 on the v1alpha3 abort sample, offline (a real server refuses its deprecated
    `fault.abort.percent`), and the error names the object's real apiVersion (it printed v1)."""
    router = offline("istio/bookinfo-ratings-test-abort.yaml",
                     {**SUBSETS, "virtualService": "ratings", "destinationRule": "ratings"})
    with pytest.raises(RouterError, match=r"VirtualService default/ratings "
                                          r"\(networking.istio.io/v1alpha3\): 2 routes"):
        router.set_weight(10)


def test_user_header_route_to_the_canary_survives(kube_cluster, kube_namespace):
    """bookinfo's reviews test route sends jason to v2 (the canary): not a candidate (it does not
    reach stable), untouched by weight, A/B and reset; our A/B route goes after it."""
    vs, _ = seed(kube_cluster, kube_namespace, "istio/bookinfo-reviews-test-v2.yaml")
    router = live(kube_cluster, {**SUBSETS, "virtualService": "reviews",
                                 "destinationRule": "reviews"}, kube_namespace)
    router.set_weight(25)
    router.set_header_route({"header": "x-canary", "value": "on"})
    routes = http(kube_cluster, kube_namespace, vs)
    assert names(routes) == [None, "canary-analyzer-ab-http1", None]
    assert routes[0] == vs["spec"]["http"][0]
    router.reset()
    assert http(kube_cluster, kube_namespace, vs)[0] == vs["spec"]["http"][0]
    assert router.get_weight().canary_weight == 0


# ---------------------------------------------------------------------------- defect 3


def test_subset_mode_leaves_the_other_services_v1_alone(kube_cluster, kube_namespace):
    """Defect 3: one VirtualService routes /svc-1 and /svc-2 to two services, each pinned to its
    subset v1. Without `host`, subset v1 of svc-2 used to be taken for svc-1's and split to a
    v2 svc-2 does not even have. Now the host comes from the DestinationRule."""
    vs, _, _ = seed(kube_cluster, kube_namespace,
                    "istio/istio-concepts-two-services-subset-v1.yaml")
    router = live(kube_cluster, {**SUBSETS, "virtualService": "my-namespace",
                                 "destinationRule": "svc-1"}, kube_namespace, service="svc-1")
    router.set_weight(30)
    svc1, svc2 = http(kube_cluster, kube_namespace, vs)
    assert [(d["destination"]["host"], d["destination"]["subset"], d["weight"])
            for d in svc1["route"]] == [("svc-1.my-namespace.svc.cluster.local", "v1", 70),
                                        ("svc-1.my-namespace.svc.cluster.local", "v2", 30)]
    assert svc2 == vs["spec"]["http"][1]
    assert router.get_weight().canary_weight == 30
    router.reset()
    assert router.get_weight().canary_weight == 0


def test_short_host_equals_fqdn_and_disagreement_is_refused():
    """Defect 3: `host: svc-1` in the VirtualService's namespace is the DestinationRule's
    `svc-1.my-namespace.svc.cluster.local` (it found nothing before); another host is refused."""
    rel = "istio/istio-concepts-two-services-subset-v1.yaml"
    cfg = {**SUBSETS, "virtualService": "my-namespace", "destinationRule": "svc-1"}
    router = offline(rel, {**cfg, "host": "svc-1"})
    router.set_weight(40)
    assert router.get_weight().canary_weight == 40
    with pytest.raises(RouterError, match=r"its host is 'svc-1\.my-namespace\.svc\.cluster\.local' "
                                          r"but spec\.router\.host is 'svc-2'"):
        offline(rel, {**cfg, "host": "svc-2"}).set_weight(40)


# ---------------------------------------------------------------------------- versions, TLS


def test_v1alpha3_split_read_and_reset(kube_cluster, kube_namespace):
    """An 80/20 split written in v1alpha3 with its DestinationRule in v1: read 20 %, moved,
    reset; other subsets of the DestinationRule (v3) stay unused."""
    vs, _ = seed(kube_cluster, kube_namespace, "istio/bookinfo-reviews-80-20.yaml")
    router = live(kube_cluster, {**SUBSETS, "virtualService": "reviews",
                                 "destinationRule": "reviews"}, kube_namespace)
    assert router.get_weight().canary_weight == 20
    router.set_weight(50)
    assert [d["weight"] for d in http(kube_cluster, kube_namespace, vs)[0]["route"]] == [50, 50]
    router.reset()
    assert [d["weight"] for d in http(kube_cluster, kube_namespace, vs)[0]["route"]] == [100, 0]
    assert router.last_applied[0]["apiVersion"] == "networking.istio.io/v1"


def test_tls_route_to_the_same_hosts_is_refused_unless_named(kube_cluster, kube_namespace):
    """TLS routes used to stay at 100/0 silently while http moved (Argo's host split e2e
    object). Now both are candidates: the router refuses and lists them; named, both move."""
    (vs,) = seed(kube_cluster, kube_namespace, "istio/argo-host-http-tls-split.yaml")
    cfg = {"provider": "istio", "virtualService": "istio-host-split-vsvc",
           "stableHost": "istio-host-split-stable", "canaryHost": "istio-host-split-canary"}
    with pytest.raises(RouterError, match=r"http\[0\] name=primary .*tls\[0\] \(1 match\)"):
        live(kube_cluster, cfg, kube_namespace).set_weight(20)
    router = live(kube_cluster, {**cfg, "routes": ["primary", "tls[0]"]}, kube_namespace)
    router.set_weight(20)
    obj = get(kube_cluster, vs, kube_namespace)
    assert [d["weight"] for d in obj["spec"]["http"][0]["route"]] == [80, 20]
    assert [d["weight"] for d in obj["spec"]["tls"][0]["route"]] == [80, 20]
    assert obj["spec"]["tls"][0]["match"] == vs["spec"]["tls"][0]["match"]
    assert router.get_weight().canary_weight == 20
    with pytest.raises(RouterError, match="need an http route"):
        live(kube_cluster, {**cfg, "routes": ["tls[0]"]}, kube_namespace).set_mirror(10)
    router.reset()
    assert router.get_weight().canary_weight == 0


def test_mixed_http_tls_tcp_offline_lists_all_six():
    """Argo's mixed VirtualService (offline: its tls matches lack the sniHosts a server
    requires): two http, two tls and two tcp routes to the same hosts."""
    router = offline("istio/argo-regular-mixed-vsvc.yaml", {
        "provider": "istio", "virtualService": "vsvc", "stableHost": "stable",
        "canaryHost": "canary"})
    with pytest.raises(RouterError) as refused:
        router.get_weight()
    for label in ("http[0] name=primary", "http[1] name=secondary", "tls[0]", "tls[1]",
                  "tcp[0]", "tcp[1]"):
        assert label in str(refused.value)


def test_no_yaml_anchors_in_the_written_object():
    """The port dict of the stable destination used to be shared with the canary, mirror and
    A/B destinations, so `canary route -o yaml` printed `&id001` anchors (Argo's routes with
    port 8443)."""
    router = offline("istio/argo-vsvc-with-extra.yaml", {
        "provider": "istio", "virtualService": "vsvc", "stableHost": "stable",
        "canaryHost": "canary", "routes": ["secondary"]})
    router.set_weight(10)
    router.set_header_route({"header": "x-canary", "value": "1"})
    router.set_mirror(20)
    text = yaml.safe_dump_all(router.last_applied)
    assert "&id" not in text and "*id" not in text
    secondary = next(r for r in router.last_applied[0]["spec"]["http"]
                     if r.get("name") == "secondary")
    assert secondary["mirror"] == {"host": "canary", "port": {"number": 8443}}
    assert secondary["corsPolicy"]["allowOrigins"] == [{"exact": "https://example.com"}]


# ---------------------------------------------------------------------------- mirroring


def test_mirroring_task_read_changed_and_removed(kube_cluster, kube_namespace):
    """istio.io's mirroring task (v1alpha3): 100 % mirrored to httpbin v2 reads back as 100."""
    vs, _ = seed(kube_cluster, kube_namespace, "istio/istio-mirroring-task-httpbin.yaml")
    router = live(kube_cluster, {**SUBSETS, "virtualService": "httpbin",
                                 "destinationRule": "httpbin"}, kube_namespace)
    split = router.get_weight()
    assert (split.canary_weight, split.mirror_percent) == (0, 100.0)
    router.set_mirror(5)
    route = http(kube_cluster, kube_namespace, vs)[0]
    assert route["mirrorPercentage"] == {"value": 5.0}
    router.reset()
    route = http(kube_cluster, kube_namespace, vs)[0]
    assert "mirror" not in route and "mirrorPercentage" not in route


def test_deprecated_mirror_percent_read_and_replaced(kube_cluster, kube_namespace):
    """The older task's `mirrorPercent: 100` (deprecated): read as 100 (it read as 100 only by
    accident of the default), and setting a mirror no longer leaves both fields."""
    vs, _ = seed(kube_cluster, kube_namespace,
                 "istio/istio-mirroring-task-legacy-mirrorPercent.yaml")
    router = live(kube_cluster, {**SUBSETS, "virtualService": "httpbin",
                                 "destinationRule": "httpbin"}, kube_namespace)
    assert vs["spec"]["http"][0]["mirrorPercent"] == 100
    assert router.get_weight().mirror_percent == 100.0
    router.set_mirror(30)
    route = http(kube_cluster, kube_namespace, vs)[0]
    assert route["mirrorPercentage"] == {"value": 30.0} and "mirrorPercent" not in route
    router.set_mirror(None)
    route = http(kube_cluster, kube_namespace, vs)[0]
    assert not {"mirror", "mirrorPercent", "mirrorPercentage"} & set(route)


def test_mirror_on_a_route_already_split(kube_cluster, kube_namespace):
    """Argo's mirror e2e VirtualService, already at 80/20 behind a gateway."""
    (vs,) = seed(kube_cluster, kube_namespace, "istio/argo-mirror-host.yaml")
    router = live(kube_cluster, {"provider": "istio", "virtualService": "rollouts-demo-vsvc",
                                 "stableHost": "stable-service", "canaryHost": "canary-service"},
                  kube_namespace)
    assert router.get_weight().canary_weight == 20
    router.set_mirror(50)
    route = http(kube_cluster, kube_namespace, vs)[0]
    assert route["mirror"] == {"host": "canary-service"}
    assert [d["weight"] for d in route["route"]] == [80, 20]
    router.reset()
    assert router.get_weight().mirror_percent is None


# ---------------------------------------------------------------------------- third destination


def test_third_weighted_destination_kept_when_listed(kube_cluster, kube_namespace):
    """Argo's route with a third destination (additional-service, weight 20): refused unless the
    policy lists it in keepDestinations; then it keeps its 20 and stable takes the rest (Argo:
    70/10/20)."""
    vs, _, _ = seed(kube_cluster, kube_namespace, "istio/argo-single-route-third-destination.yaml")
    cfg = {"provider": "istio", "virtualService": "vsvc", "destinationRule": "istio-destrule",
           "stableSubset": "stable", "canarySubset": "canary"}
    with pytest.raises(RouterError, match="keepDestinations"):
        live(kube_cluster, cfg, kube_namespace, service="rollout-service").set_weight(10)
    router = live(kube_cluster, {**cfg, "keepDestinations": [
        {"host": "additional-service", "subset": "stable-subset"}]}, kube_namespace,
        service="rollout-service")
    router.set_weight(10)
    route = http(kube_cluster, kube_namespace, vs)[0]
    assert [(d["destination"]["host"], d["destination"]["subset"], d["weight"])
            for d in route["route"]] == [("rollout-service", "stable", 70),
                                         ("rollout-service", "canary", 10),
                                         ("additional-service", "stable-subset", 20)]
    assert router.get_weight().canary_weight == 10
    with pytest.raises(RouterError, match="exceed 100"):
        router.set_weight(90)
    router.reset()
    assert [d["weight"] for d in http(kube_cluster, kube_namespace, vs)[0]["route"]] == [
        80, 0, 20]


# ---------------------------------------------------------------------------- sticky sessions


def test_sticky_sessions_cookie_route_and_expiry(kube_cluster, kube_namespace):
    """Sticky sessions on istio.io's cookie example: the user's cookie route (jason -> v2) stays
    first; our sticky route goes right before the default route, matching our cookie; the canary
    destination sets it; a rollback turns the route into one that expires it on stable."""
    vs, _ = seed(kube_cluster, kube_namespace, "istio/istio-concepts-cookie-jason.yaml")
    cfg = {**SUBSETS, "virtualService": "my-vtl-svc", "destinationRule": "my-destination-rule",
           "stickySessions": {"cookieName": "canary-user", "maxAge": "1h"}}
    router = live(kube_cluster, cfg, kube_namespace, service="my-svc")
    router.set_weight(20)
    jason, sticky, default = http(kube_cluster, kube_namespace, vs)
    assert jason == vs["spec"]["http"][0]
    assert sticky["name"] == "canary-analyzer-sticky-http1"
    regex = sticky["match"][0]["headers"]["cookie"]["regex"]
    value = regex.split("canary\\-user=")[1][:16]
    assert sticky["route"] == [{"destination": {"host": "my-svc", "subset": "v2"}}]
    canary = default["route"][1]
    assert canary["headers"]["response"]["add"]["set-cookie"] == (
        f"canary-user={value}; Max-Age=3600; Path=/; HttpOnly")
    assert router.get_weight().sticky == f"cookie canary-user={value}"
    router.set_weight(50)  # same rollout, same cookie: only the weights change
    assert http(kube_cluster, kube_namespace, vs)[1] == sticky
    router.reset()
    jason, expiring, default = http(kube_cluster, kube_namespace, vs)
    assert expiring["match"] == sticky["match"]
    assert expiring["route"] == [{"destination": {"host": "my-svc", "subset": "v1"}, "headers": {
        "response": {"add": {"set-cookie": f"canary-user={value}; Max-Age=0; Path=/; HttpOnly"}}}}]
    assert "headers" not in default["route"][1]
    assert router.get_weight().sticky is None
    # The next canary version gets a new cookie; the expiring route of the old one is replaced.
    nxt = live(kube_cluster, cfg, kube_namespace, service="my-svc", canary="v3")
    nxt.set_weight(10)
    routes = http(kube_cluster, kube_namespace, vs)
    assert names(routes).count("canary-analyzer-sticky-http1") == 1
    assert value not in routes[1]["match"][0]["headers"]["cookie"]["regex"]


def test_sticky_sessions_merge_with_the_route_matches(kube_cluster, kube_namespace):
    """On bookinfo's gateway route the sticky route keeps the five URI matches too."""
    (vs,) = seed(kube_cluster, kube_namespace, "istio/bookinfo-gateway-productpage.yaml")
    router = live(kube_cluster, {"provider": "istio", "virtualService": "bookinfo",
                                 "stableHost": "productpage", "canaryHost": "productpage-canary",
                                 "stickySessions": {}}, kube_namespace)
    router.set_weight(10)
    sticky, _ = http(kube_cluster, kube_namespace, vs)
    assert [m["uri"] for m in sticky["match"]] == [
        m["uri"] for m in vs["spec"]["http"][0]["match"]]
    assert all("canary\\-analyzer=" in m["headers"]["cookie"]["regex"] for m in sticky["match"])


def test_cookie_ab_next_to_a_user_cookie_route(kube_cluster, kube_namespace):
    """Cookie A/B (`canary=always`) on istio.io's cookie example: our regex sits in our own
    route, so the user's `user=jason` cookie route is not changed."""
    vs, _ = seed(kube_cluster, kube_namespace, "istio/istio-concepts-cookie-jason.yaml")
    router = live(kube_cluster, {**SUBSETS, "virtualService": "my-vtl-svc",
                                 "destinationRule": "my-destination-rule"}, kube_namespace,
                  service="my-svc")
    router.set_header_route({"cookie": "canary"})
    routes = http(kube_cluster, kube_namespace, vs)
    assert routes[0] == vs["spec"]["http"][0]
    assert routes[1]["name"] == "canary-analyzer-ab-http1"
    assert router.get_weight().header_route == {"cookie": "canary"}
    router.set_header_route(None)
    assert http(kube_cluster, kube_namespace, vs) == copy.deepcopy(vs["spec"]["http"])


def test_header_already_matched_by_the_route_is_refused():
    """A/B on the header the managed route itself matches (bookinfo's `end-user`) would need two
    conditions on one header: refused, naming it."""
    router = offline("istio/bookinfo-ratings-test-delay.yaml", {
        **SUBSETS, "virtualService": "ratings", "destinationRule": "ratings",
        "routes": ["http[0]"]})
    with pytest.raises(RouterError, match="already matches on header 'end-user'"):
        router.set_header_route({"header": "end-user", "value": "bob"})


# ---------------------------------------------------------------------------- every object

H = {"header": "x-canary", "value": "always"}
TWO_HOST = {"provider": "istio"}
EVERY = [
    ("istio/argo-host-http-tls-split.yaml",
     {**TWO_HOST, "virtualService": "istio-host-split-vsvc", "routes": ["primary", "tls[0]"],
      "stableHost": "istio-host-split-stable", "canaryHost": "istio-host-split-canary"}, {}),
    ("istio/argo-mirror-host.yaml",
     {**TWO_HOST, "virtualService": "rollouts-demo-vsvc", "stableHost": "stable-service",
      "canaryHost": "canary-service"}, {}),
    ("istio/argo-regular-vsvc-two-routes.yaml",
     {**TWO_HOST, "virtualService": "vsvc", "routes": ["secondary"], "stableHost": "stable",
      "canaryHost": "canary"}, {}),
    ("istio/argo-single-route-third-destination.yaml",
     {"provider": "istio", "virtualService": "vsvc", "destinationRule": "istio-destrule",
      "stableSubset": "stable", "canarySubset": "canary",
      "keepDestinations": [{"host": "additional-service"}]}, {"service": "rollout-service"}),
    ("istio/argo-vsvc-with-extra.yaml",
     {**TWO_HOST, "virtualService": "vsvc", "routes": ["primary", "secondary"],
      "stableHost": "stable", "canaryHost": "canary"}, {}),
    ("istio/bookinfo-gateway-productpage.yaml",
     {**TWO_HOST, "virtualService": "bookinfo", "stableHost": "productpage",
      "canaryHost": "productpage-canary"}, {}),
    ("istio/bookinfo-ratings-test-delay.yaml",
     {**SUBSETS, "virtualService": "ratings", "destinationRule": "ratings",
      "routes": ["http[1]"]}, {}),
    ("istio/bookinfo-reviews-80-20.yaml",
     {**SUBSETS, "virtualService": "reviews", "destinationRule": "reviews"}, {}),
    ("istio/bookinfo-reviews-test-v2.yaml",
     {**SUBSETS, "virtualService": "reviews", "destinationRule": "reviews"}, {}),
    ("istio/flagger-faq-frontend.yaml",
     {**TWO_HOST, "virtualService": "frontend", "stableHost": "podinfo-primary",
      "canaryHost": "podinfo-canary"}, {}),
    ("istio/istio-concepts-cookie-jason.yaml",
     {**SUBSETS, "virtualService": "my-vtl-svc", "destinationRule": "my-destination-rule"},
     {"service": "my-svc"}),
    ("istio/istio-concepts-two-services-subset-v1.yaml",
     {**SUBSETS, "virtualService": "my-namespace", "destinationRule": "svc-1"},
     {"service": "svc-1"}),
    ("istio/istio-mirroring-task-httpbin.yaml",
     {**SUBSETS, "virtualService": "httpbin", "destinationRule": "httpbin"}, {}),
    ("istio/istio-mirroring-task-legacy-mirrorPercent.yaml",
     {**SUBSETS, "virtualService": "httpbin", "destinationRule": "httpbin"}, {}),
]


@pytest.mark.parametrize(("rel", "cfg", "target"), EVERY, ids=[e[0] for e in EVERY])
def test_weight_header_mirror_reset_on_every_object(kube_cluster, kube_namespace, rel, cfg,
                                                    target):
    """Every real-world VirtualService a server takes: each operation, read back; the objects
    the policy does not name (DestinationRules) are never written."""
    seeded = seed(kube_cluster, kube_namespace, rel)
    every_operation(live(kube_cluster, cfg, kube_namespace, **target), header=H, mirror=12.5)
    for obj in seeded:
        if obj["kind"] == "DestinationRule":
            assert without_meta(get(kube_cluster, obj, kube_namespace)) == without_meta(obj)


def test_users_own_set_cookie_on_the_canary_is_kept_and_never_replaced():
    """Flagger's route with a user `set-cookie` on the canary destination (added here): sticky
    sessions refuse to replace it, and a reset (a rollback) still works and keeps it."""
    objs = fixture("istio/flagger-faq-frontend.yaml")
    canary = objs[0]["spec"]["http"][0]["route"][1]
    canary["headers"] = {"response": {"add": {"set-cookie": "theme=dark"}}}
    cfg = {"provider": "istio", "virtualService": "frontend", "stableHost": "podinfo-primary",
           "canaryHost": "podinfo-canary", "stickySessions": {}}
    router = build_router(make_policy(cfg, namespace="test"), current_object=objs)
    with pytest.raises(RouterError, match="already sets a cookie \\('theme=dark'\\)"):
        router.set_weight(10)
    router.reset()
    assert router.get_weight().canary_weight == 0


def test_canary_route_prints_no_anchors(tmp_path):
    """`canary route --current ... -o yaml` on Argo's routes with ports: no `&id001` either."""
    from typer.testing import CliRunner

    from analyzer.cli.app import app

    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(make_policy(
        {"provider": "istio", "virtualService": "vsvc", "stableHost": "stable",
         "canaryHost": "canary", "routes": ["primary"]},
        namespace="default").model_dump(mode="json", exclude_none=True)))
    result = CliRunner().invoke(app, [
        "route", str(policy), "--weight", "20", "--header-pattern", "x-user=beta-.*",
        "--mirror", "5", "-o", "yaml",
        "--current", str(FIXTURES / "istio/argo-vsvc-with-extra.yaml")])
    assert result.exit_code == 0, result.output
    assert "&id" not in result.output and "*id" not in result.output
    assert "A/B: header x-user matching beta-.* -> canary" in " ".join(result.output.split())


def test_discovery_once_per_router_and_again_after_a_404(kube_cluster, kube_namespace,
                                                          kube_fault_proxy):
    """Served versions are discovered once per router; a 404 (a CRD may have changed its
    versions) makes the next call discover them again."""
    seed(kube_cluster, kube_namespace, "istio/bookinfo-reviews-80-20.yaml")
    api = kube_cluster.api_client(host=kube_fault_proxy.url)
    cfg = {**SUBSETS, "virtualService": "reviews", "destinationRule": "reviews"}
    router = build_router(make_policy(cfg, namespace=kube_namespace), api_client=api)
    for w in (10, 20, 30):
        router.set_weight(w)
    group = [r for r in kube_fault_proxy.requests if r.path == "/apis/networking.istio.io"]
    assert len(group) == 1
    missing = build_router(make_policy({**cfg, "virtualService": "gone"},
                                       namespace=kube_namespace), api_client=api)
    for _ in range(2):
        with pytest.raises(RouterError, match="does not exist"):
            missing.get_weight()
    group = [r for r in kube_fault_proxy.requests if r.path == "/apis/networking.istio.io"]
    assert len(group) == 3
