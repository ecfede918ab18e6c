"""Istio router through the real kubernetes client against the real API server: objects istio
by the admin, read back from the server after every change."""

from __future__ import annotations

import copy

import pytest

from analyzer.routers.base import RouterError
from analyzer.routers.factory import build_router
from tests.routers.conftest import DESTINATION_RULE, ISTIO, VIRTUAL_SERVICE, Kube, make_policy

VS = ("networking.istio.io/v1", "VirtualService", "checkout")


def http(kube: Kube) -> dict[str, dict]:
    return {r["name"]: r for r in kube.get(*VS)["spec"]["http"]}


def test_set_weight_reads_back_and_leaves_foreign_routes_untouched(istio: Kube) -> None:
    before = istio.get(*VS)
    router = istio.router(ISTIO)
    assert router.get_weight().canary_weight == 0
    for w in (5, 20, 100, 0, 37):
        router.set_weight(w)
        assert router.get_weight().canary_weight == w
        primary = http(istio)["primary"]["route"]
        assert [(d["destination"]["subset"], d["weight"]) for d in primary] == [
            ("stable", 100 - w), ("canary", w)]
    after = istio.get(*VS)
    for name in ("admin", "legacy"):
        assert http(istio)[name] == next(r for r in before["spec"]["http"] if r["name"] == name)
    assert after["metadata"]["annotations"] == before["metadata"]["annotations"]
    assert after["metadata"]["labels"] == before["metadata"]["labels"]
    assert after["spec"]["hosts"] == before["spec"]["hosts"]
    assert after["spec"]["gateways"] == before["spec"]["gateways"]
    # The managed route keeps its own other fields (retries) and its entry's headers.
    assert http(istio)["primary"]["retries"] == {"attempts": 3, "perTryTimeout": "2s"}
    assert http(istio)["primary"]["route"][0]["headers"] == {
        "response": {"set": {"x-served-by": "checkout"}}}
    assert router.last_applied and router.last_applied[0]["kind"] == "VirtualService"
    # what the router wrote is what the server stored
    assert router.last_applied[0]["metadata"]["resourceVersion"] == \
        after["metadata"]["resourceVersion"]


def test_same_weight_twice_writes_nothing(istio: Kube) -> None:
    router = istio.router(ISTIO)
    router.set_weight(10)
    stored = istio.get(*VS)["metadata"]
    router.set_weight(10)
    assert istio.writes() == [("PATCH", "checkout", 200)]
    assert router.last_applied == []
    assert istio.get(*VS)["metadata"]["resourceVersion"] == stored["resourceVersion"]


def test_header_route_sits_before_its_route_and_is_removable(istio: Kube) -> None:
    router = istio.router(ISTIO, strategy={"type": "ab", "match": {
        "header": {"name": "X-Canary", "value": "always"}}})
    router.set_header_route({"header": "X-Canary", "value": "always"})
    routes = istio.get(*VS)["spec"]["http"]
    assert [r["name"] for r in routes] == [
        "admin", "canary-analyzer-ab-primary", "primary", "legacy"]
    assert routes[1]["match"] == [{"headers": {"x-canary": {"exact": "always"}}}]
    assert routes[1]["route"] == [{"destination": {"host": "checkout", "subset": "canary"},
                                   "headers": {"response": {"set": {"x-served-by": "checkout"}}}}]
    assert router.get_weight().header_route == {"header": "x-canary", "value": "always"}
    assert router.get_weight().canary_weight == 0
    router.set_header_route({"header": "X-Canary", "value": "always"})  # idempotent
    assert [r["name"] for r in istio.get(*VS)["spec"]["http"]].count(
        "canary-analyzer-ab-primary") == 1
    router.set_header_route(None)
    assert [r["name"] for r in istio.get(*VS)["spec"]["http"]] == ["admin", "primary", "legacy"]
    assert router.get_weight().header_route is None


def test_cookie_route(istio: Kube) -> None:
    router = istio.router(ISTIO)
    router.set_header_route({"cookie": "canary_user"})
    ab = http(istio)["canary-analyzer-ab-primary"]
    assert "canary_user=always" in ab["match"][0]["headers"]["cookie"]["regex"]
    assert router.get_weight().header_route == {"cookie": "canary_user"}


def test_mirror_set_read_and_removed(istio: Kube) -> None:
    router = istio.router(ISTIO)
    router.set_mirror(50)
    primary = http(istio)["primary"]
    assert primary["mirror"] == {"host": "checkout", "subset": "canary"}
    assert primary["mirrorPercentage"] == {"value": 50.0}
    assert router.get_weight().mirror_percent == 50.0
    assert router.get_weight().canary_weight == 0
    router.set_mirror(None)
    assert "mirror" not in http(istio)["primary"]
    assert "mirrorPercentage" not in http(istio)["primary"]


def test_reset_is_one_write_back_to_all_stable(istio: Kube) -> None:
    router = istio.router(ISTIO)
    router.set_weight(40)
    router.set_header_route({"header": "x-canary", "value": "1"})
    router.set_mirror(10)
    generation = istio.get(*VS)["metadata"]["generation"]
    writes = len(istio.writes())
    router.reset()
    assert len(istio.writes()) == writes + 1
    assert istio.get(*VS)["metadata"]["generation"] == generation + 1
    split = router.get_weight()
    assert (split.canary_weight, split.header_route, split.mirror_percent) == (0, None, None)
    assert [r["name"] for r in istio.get(*VS)["spec"]["http"]] == ["admin", "primary", "legacy"]


def test_named_routes_only(istio: Kube) -> None:
    router = istio.router({**ISTIO, "routes": ["primary"]})
    router.set_weight(25)
    assert router.get_weight().canary_weight == 25


def test_route_not_found_names_the_object(istio: Kube) -> None:
    router = istio.router({**ISTIO, "routes": ["nope"]})
    with pytest.raises(RouterError, match=rf"VirtualService {istio.ns}/checkout.*nope not found"):
        router.set_weight(10)


def test_missing_subset_refused_before_any_write(kube: Kube) -> None:
    kube.seed(VIRTUAL_SERVICE)
    dr = copy.deepcopy(DESTINATION_RULE)
    dr["spec"]["subsets"] = dr["spec"]["subsets"][:1]
    kube.seed(dr)
    with pytest.raises(RouterError,
                       match=rf"DestinationRule {kube.ns}/checkout.*canary missing"):
        kube.router(ISTIO).set_weight(10)
    assert kube.writes() == []


def test_route_with_foreign_destination_refused(istio: Kube) -> None:
    istio.modify(*VS, lambda o: o["spec"]["http"][1]["route"].append(
        {"destination": {"host": "other"}, "weight": 0}))
    with pytest.raises(RouterError, match="only to stable/canary"):
        istio.router(ISTIO).set_weight(10)


def test_missing_virtual_service_is_a_clear_404(kube: Kube) -> None:
    kube.seed(DESTINATION_RULE)
    with pytest.raises(RouterError, match=rf"VirtualService {kube.ns}/checkout.*does not exist"):
        kube.router(ISTIO).set_weight(10)


def test_api_500_leaves_previous_weight(istio: Kube) -> None:
    router = istio.router(ISTIO)
    router.set_weight(10)
    istio.proxy.inject(500, method="PATCH", message="etcdserver: request timed out")
    with pytest.raises(RouterError, match=r"HTTP 500.*etcdserver: request timed out"):
        router.set_weight(50)
    assert router.get_weight().canary_weight == 10


def test_slow_api_times_out_cleanly(istio: Kube) -> None:
    router = istio.router(ISTIO)
    router.objects.request_timeout = (1.0, 0.5)
    # the PATCH is held 1.5 s, then dropped unsent: the client gives up after 0.5 s
    istio.proxy.inject(drop="before", delay=1.5, method="PATCH")
    with pytest.raises(RouterError, match=rf"VirtualService {istio.ns}/checkout.*unreachable"):
        router.set_weight(30)
    assert router.get_weight().canary_weight == 0


def test_two_host_mode(kube: Kube) -> None:
    vs = copy.deepcopy(VIRTUAL_SERVICE)
    vs["spec"]["http"][1]["route"] = [{"destination": {"host": "checkout-blue"}}]
    kube.seed(vs)
    router = kube.router({"provider": "istio", "virtualService": "checkout",
                          "stableHost": "checkout-blue", "canaryHost": "checkout-green"})
    router.set_weight(30)
    assert http(kube)["primary"]["route"] == [
        {"destination": {"host": "checkout-blue"}, "weight": 70},
        {"destination": {"host": "checkout-green"}, "weight": 30}]
    assert router.get_weight().canary_weight == 30
    router.set_mirror(100)
    assert http(kube)["primary"]["mirror"] == {"host": "checkout-green"}


def test_dry_run_writes_nothing_and_shows_the_object(istio: Kube) -> None:
    before = istio.get(*VS)
    router = istio.router(ISTIO, dry_run=True)
    router.set_weight(20)
    assert istio.writes() == []
    assert istio.get(*VS) == before
    (obj,) = router.last_applied
    primary = next(r for r in obj["spec"]["http"] if r["name"] == "primary")
    assert primary["route"][1]["weight"] == 20


def test_current_object_is_offline(kube: Kube) -> None:
    # No API at all: nothing is istio, and reads come from the given objects (in `shop`).
    router = build_router(make_policy(ISTIO), api_client=kube.api_client(),
                          current_object=[VIRTUAL_SERVICE, DESTINATION_RULE])
    router.set_weight(15)
    assert kube.proxy.requests == []
    assert router.get_weight().canary_weight == 15  # reads see the pending object
    assert router.last_applied[0]["metadata"]["annotations"] == \
        VIRTUAL_SERVICE["metadata"]["annotations"]


def test_invalid_weight_refused(istio: Kube) -> None:
    router = istio.router(ISTIO)
    for bad in (-1, 101, 2.5, True):
        with pytest.raises(RouterError, match="weight must be an integer"):
            router.set_weight(bad)
