"""NGINX Ingress router on the real API server: the canary Ingress, created when absent,
annotations only after."""

from __future__ import annotations

from typing import Any

import pytest

from analyzer.routers.base import RouterError
from analyzer.routers.kube.nginx_ingress import (
    BY_COOKIE,
    BY_HEADER,
    BY_HEADER_VALUE,
    CANARY,
    WEIGHT,
)
from tests.routers.conftest import NGINX_INGRESS, STABLE_INGRESS, Kube, _ingress

ING = ("networking.k8s.io/v1", "Ingress")


@pytest.fixture
def seeded(kube: Kube) -> Kube:
    kube.seed(STABLE_INGRESS)
    return kube


def router(kube: Kube, **cfg: Any) -> Any:
    return kube.router({**NGINX_INGRESS, **cfg}, service="frontend")


def test_canary_ingress_created_from_stable_and_stable_untouched(seeded: Kube) -> None:
    stable_before = seeded.get(*ING, "frontend")
    r = router(seeded)
    assert r.get_weight().canary_weight == 0
    r.set_weight(20)
    canary = seeded.get(*ING, "frontend-canary")
    ann = canary["metadata"]["annotations"]
    assert ann[CANARY] == "true" and ann[WEIGHT] == "20"
    paths = canary["spec"]["rules"][0]["http"]["paths"]
    # Only the target service's path moves to the canary service; the rest is copied as is.
    assert paths[0]["backend"]["service"] == {"name": "frontend-canary", "port": {"number": 80}}
    assert paths[1] == stable_before["spec"]["rules"][0]["http"]["paths"][1]
    assert canary["spec"]["ingressClassName"] == "nginx"
    assert canary["spec"]["tls"] == STABLE_INGRESS["spec"]["tls"]
    assert canary["metadata"]["labels"] == STABLE_INGRESS["metadata"]["labels"]
    assert seeded.get(*ING, "frontend") == stable_before
    assert r.get_weight().canary_weight == 20
    r.set_weight(60)
    assert r.get_weight().canary_weight == 60
    # one create, then annotation patches; the stable Ingress is never written
    assert seeded.writes() == [("POST", "ingresses", 201), ("PATCH", "frontend-canary", 200)]


def test_existing_canary_only_owned_annotations_change(seeded: Kube) -> None:
    before = seeded.seed(_ingress("frontend-canary", "frontend-canary", {
        CANARY: "true", WEIGHT: "5", "nginx.ingress.kubernetes.io/canary-weight-total": "100",
        "example.com/owner": "team-web"}))
    r = router(seeded)
    r.set_weight(30)
    r.set_header_route({"header": "X-Canary", "value": "always"})
    after = seeded.get(*ING, "frontend-canary")
    ann = after["metadata"]["annotations"]
    assert ann["example.com/owner"] == "team-web"
    assert ann["nginx.ingress.kubernetes.io/canary-weight-total"] == "100"
    assert ann[WEIGHT] == "30" and ann[BY_HEADER] == "X-Canary" and ann[BY_HEADER_VALUE] == "always"
    assert after["spec"] == before["spec"] and after["metadata"]["labels"] == \
        before["metadata"]["labels"]
    assert r.get_weight().header_route == {"header": "X-Canary", "value": "always"}


def test_header_only_creates_the_canary_at_weight_zero(seeded: Kube) -> None:
    r = router(seeded)
    r.set_header_route({"header": "x-beta", "value": "yes"})
    ann = seeded.get(*ING, "frontend-canary")["metadata"]["annotations"]
    assert ann[WEIGHT] == "0" and ann[BY_HEADER] == "x-beta"


def test_cookie_route_and_reset(seeded: Kube) -> None:
    r = router(seeded)
    r.set_weight(50)
    r.set_header_route({"cookie": "canary"})
    assert r.get_weight().header_route == {"cookie": "canary"}
    ann = seeded.get(*ING, "frontend-canary")["metadata"]["annotations"]
    assert ann[BY_COOKIE] == "canary" and BY_HEADER not in ann
    r.reset()
    ann = seeded.get(*ING, "frontend-canary")["metadata"]["annotations"]
    assert ann[WEIGHT] == "0" and BY_COOKIE not in ann
    split = r.get_weight()
    assert (split.canary_weight, split.header_route) == (0, None)


def test_reset_without_canary_ingress_creates_nothing(seeded: Kube) -> None:
    router(seeded).reset()
    assert seeded.get(*ING, "frontend-canary") is None
    assert seeded.writes() == []


def test_mirror_refused(seeded: Kube) -> None:
    with pytest.raises(RouterError, match="cannot mirror"):
        router(seeded).set_mirror(50)
    router(seeded).set_mirror(None)  # removing what cannot exist is fine


def test_existing_canary_pointing_elsewhere_refused(seeded: Kube) -> None:
    seeded.seed(_ingress("frontend-canary", "something-else", {CANARY: "true"}))
    with pytest.raises(RouterError, match="sends no path to canaryService"):
        router(seeded).set_weight(10)


def test_missing_stable_ingress_is_a_clear_404(kube: Kube) -> None:
    with pytest.raises(RouterError, match=rf"Ingress {kube.ns}/frontend .*does not exist"):
        router(kube).set_weight(10)


def test_concurrent_creator_wins_then_we_update(seeded: Kube) -> None:
    # Someone creates the canary Ingress between our read and our create: the real server
    # answers AlreadyExists, then the router updates theirs instead of failing.
    theirs = _ingress("frontend-canary", "frontend-canary", {"example.com/by": "them"})
    r = router(seeded)
    create = r.objects.create

    def racing_create(ref: Any, body: dict) -> Any:
        seeded.seed(theirs)  # the other writer, as the admin, straight to the server
        return create(ref, body)

    r.objects.create = racing_create  # type: ignore[method-assign]
    r.set_weight(10)
    ann = seeded.get(*ING, "frontend-canary")["metadata"]["annotations"]
    assert ann == {"example.com/by": "them", CANARY: "true", WEIGHT: "10"}
    assert seeded.writes() == [("POST", "ingresses", 409), ("PATCH", "frontend-canary", 200)]


def test_500_on_create_leaves_no_canary(seeded: Kube) -> None:
    seeded.proxy.inject(500, method="POST")
    with pytest.raises(RouterError, match=rf"cannot create Ingress {seeded.ns}/frontend-canary"):
        router(seeded).set_weight(10)
    assert seeded.get(*ING, "frontend-canary") is None
    assert router(seeded).get_weight().canary_weight == 0


def test_invalid_canary_service_name_refused_by_the_server(seeded: Kube) -> None:
    """The server's own validation (not a CRD): a backend Service name must be a DNS-1035
    label; the policy's pattern (a DNS-1123 subdomain) lets a dot through."""
    r = router(seeded, canaryService="frontend.canary")
    with pytest.raises(RouterError) as exc:
        r.set_weight(10)
    message = str(exc.value)
    assert f"cannot create Ingress {seeded.ns}/frontend-canary" in message
    assert "HTTP 422" in message and '"frontend.canary"' in message
    assert ('spec.rules[0].http.paths[0].backend.service.name: Invalid value: '
            '"frontend.canary": must not contain dots') in message
    assert seeded.get(*ING, "frontend-canary") is None


def test_dry_run_shows_the_created_canary(seeded: Kube) -> None:
    r = seeded.router(NGINX_INGRESS, service="frontend", dry_run=True)
    r.set_weight(10)
    assert seeded.get(*ING, "frontend-canary") is None
    assert seeded.writes() == []
    (obj,) = r.last_applied
    assert obj["metadata"]["annotations"][WEIGHT] == "10"
