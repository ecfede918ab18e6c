"""Istio router through the real kubernetes client against the API test double."""

from __future__ import annotations

import json

import pytest

from analyzer.routers.base import RouterError
from tests.routers.conftest import (
    DESTINATION_RULE,
    ISTIO,
    NS,
    VIRTUAL_SERVICE,
    router_for,
)

VS = ("networking.istio.io/v1", "VirtualService", NS, "checkout")


@pytest.fixture
def seeded(double):
    double.seed(VIRTUAL_SERVICE)
    double.seed(DESTINATION_RULE)
    return double


def http(double) -> dict[str, dict]:
    return {r["name"]: r for r in double.get(*VS)["spec"]["http"]}


def canon(x) -> str:
    return json.dumps(x, sort_keys=False)


def test_set_weight_reads_back_and_leaves_foreign_routes_untouched(seeded):
    before = seeded.get(*VS)
    router = router_for(seeded, ISTIO)
    assert router.get_weight().canary_weight == 0
    for w in (5, 20, 100, 0, 37):
        router.set_weight(w)
        assert router.get_weight().canary_weight == w
        primary = http(seeded)["primary"]["route"]
        assert [(d["destination"]["subset"], d["weight"]) for d in primary] == [
            ("stable", 100 - w), ("canary", w)]
    after = seeded.get(*VS)
    for name in ("admin", "legacy"):
        assert canon(http(seeded)[name]) == canon(
            next(r for r in before["spec"]["http"] if r["name"] == name))
    assert after["metadata"]["annotations"] == before["metadata"]["annotations"]
    assert after["metadata"]["labels"] == before["metadata"]["labels"]
    assert after["spec"]["hosts"] == before["spec"]["hosts"]
    # The managed route keeps its own other fields (retries) and its entry's headers.
    assert http(seeded)["primary"]["retries"] == {"attempts": 3, "perTryTimeout": "2s"}
    assert router.last_applied and router.last_applied[0]["kind"] == "VirtualService"


def test_same_weight_twice_writes_nothing(seeded):
    router = router_for(seeded, ISTIO)
    router.set_weight(10)
    patches = sum(r.method == "PATCH" for r in seeded.requests)
    router.set_weight(10)
    assert sum(r.method == "PATCH" for r in seeded.requests) == patches
    assert router.last_applied == []


def test_header_route_is_first_and_removable(seeded):
    router = router_for(seeded, ISTIO, strategy={"type": "ab", "match": {
        "header": {"name": "X-Canary", "value": "always"}}})
    router.set_header_route({"header": "X-Canary", "value": "always"})
    routes = seeded.get(*VS)["spec"]["http"]
    assert routes[0]["name"] == "canary-analyzer-ab"
    assert routes[0]["match"] == [{"headers": {"x-canary": {"exact": "always"}}}]
    assert routes[0]["route"] == [{"destination": {"host": "checkout", "subset": "canary"}}]
    assert router.get_weight().header_route == {"header": "x-canary", "value": "always"}
    assert router.get_weight().canary_weight == 0
    router.set_header_route({"header": "X-Canary", "value": "always"})  # idempotent
    assert [r["name"] for r in seeded.get(*VS)["spec"]["http"]].count("canary-analyzer-ab") == 1
    router.set_header_route(None)
    assert [r["name"] for r in seeded.get(*VS)["spec"]["http"]] == ["admin", "primary", "legacy"]
    assert router.get_weight().header_route is None


def test_cookie_route(seeded):
    router = router_for(seeded, ISTIO)
    router.set_header_route({"cookie": "canary_user"})
    first = seeded.get(*VS)["spec"]["http"][0]
    assert "canary_user=always" in first["match"][0]["headers"]["cookie"]["regex"]
    assert router.get_weight().header_route == {"cookie": "canary_user"}


def test_mirror_set_read_and_removed(seeded):
    router = router_for(seeded, ISTIO)
    router.set_mirror(50)
    primary = http(seeded)["primary"]
    assert primary["mirror"] == {"host": "checkout", "subset": "canary"}
    assert primary["mirrorPercentage"] == {"value": 50.0}
    assert router.get_weight().mirror_percent == 50.0
    assert router.get_weight().canary_weight == 0
    router.set_mirror(None)
    assert "mirror" not in http(seeded)["primary"]
    assert "mirrorPercentage" not in http(seeded)["primary"]


def test_reset_is_one_write_back_to_all_stable(seeded):
    router = router_for(seeded, ISTIO)
    router.set_weight(40)
    router.set_header_route({"header": "x-canary", "value": "1"})
    router.set_mirror(10)
    patches = sum(r.method == "PATCH" for r in seeded.requests)
    router.reset()
    assert sum(r.method == "PATCH" for r in seeded.requests) == patches + 1
    split = router.get_weight()
    assert (split.canary_weight, split.header_route, split.mirror_percent) == (0, None, None)


def test_named_routes_only(seeded):
    router = router_for(seeded, {**ISTIO, "routes": ["primary"]})
    router.set_weight(25)
    assert router.get_weight().canary_weight == 25


def test_route_not_found_names_the_object(seeded):
    router = router_for(seeded, {**ISTIO, "routes": ["nope"]})
    with pytest.raises(RouterError, match=r"VirtualService shop/checkout.*nope not found"):
        router.set_weight(10)


def test_missing_subset_refused_before_any_write(double):
    double.seed(VIRTUAL_SERVICE)
    dr = json.loads(json.dumps(DESTINATION_RULE))
    dr["spec"]["subsets"] = dr["spec"]["subsets"][:1]
    double.seed(dr)
    with pytest.raises(RouterError, match=r"DestinationRule shop/checkout.*canary missing"):
        router_for(double, ISTIO).set_weight(10)
    assert not any(r.method == "PATCH" for r in double.requests)


def test_route_with_foreign_destination_refused(seeded):
    seeded.modify(*VS, lambda o: o["spec"]["http"][1]["route"].append(
        {"destination": {"host": "other"}, "weight": 0}))
    with pytest.raises(RouterError, match="only to stable/canary"):
        router_for(seeded, ISTIO).set_weight(10)


def test_missing_virtual_service_is_a_clear_404(double):
    double.seed(DESTINATION_RULE)
    with pytest.raises(RouterError, match=r"VirtualService shop/checkout.*does not exist"):
        router_for(double, ISTIO).set_weight(10)


def test_api_500_leaves_previous_weight(seeded):
    router = router_for(seeded, ISTIO)
    router.set_weight(10)
    seeded.inject(500, method="PATCH", message="etcdserver: request timed out")
    with pytest.raises(RouterError, match=r"HTTP 500.*etcdserver: request timed out"):
        router.set_weight(50)
    assert router.get_weight().canary_weight == 10


def test_slow_api_times_out_cleanly(seeded):
    router = router_for(seeded, ISTIO)
    router.objects.request_timeout = (1.0, 0.5)
    seeded.inject(None, delay=1.5, method="PATCH")
    with pytest.raises(RouterError, match="VirtualService shop/checkout"):
        router.set_weight(30)
    assert router.get_weight().canary_weight == 0


def test_two_host_mode(double):
    vs = json.loads(json.dumps(VIRTUAL_SERVICE))
    vs["spec"]["http"][1]["route"] = [{"destination": {"host": "checkout-blue"}}]
    double.seed(vs)
    router = router_for(double, {"provider": "istio", "virtualService": "checkout",
                                 "stableHost": "checkout-blue", "canaryHost": "checkout-green"})
    router.set_weight(30)
    assert http(double)["primary"]["route"] == [
        {"destination": {"host": "checkout-blue"}, "weight": 70},
        {"destination": {"host": "checkout-green"}, "weight": 30}]
    assert router.get_weight().canary_weight == 30
    router.set_mirror(100)
    assert http(double)["primary"]["mirror"] == {"host": "checkout-green"}


def test_dry_run_writes_nothing_and_shows_the_object(seeded):
    router = router_for(seeded, ISTIO, dry_run=True)
    router.set_weight(20)
    assert not any(r.method in ("PATCH", "PUT", "POST") for r in seeded.requests)
    (obj,) = router.last_applied
    primary = next(r for r in obj["spec"]["http"] if r["name"] == "primary")
    assert primary["route"][1]["weight"] == 20


def test_current_object_is_offline(double):
    # No API at all: the double is not even seeded, and reads come from the given objects.
    router = router_for(double, ISTIO, current_object=[VIRTUAL_SERVICE, DESTINATION_RULE])
    router.set_weight(15)
    assert double.requests == []
    assert router.get_weight().canary_weight == 15  # reads see the pending object
    assert router.last_applied[0]["metadata"]["annotations"] == \
        VIRTUAL_SERVICE["metadata"]["annotations"]


def test_invalid_weight_refused(seeded):
    router = router_for(seeded, ISTIO)
    for bad in (-1, 101, 2.5, True):
        with pytest.raises(RouterError, match="weight must be an integer"):
            router.set_weight(bad)
