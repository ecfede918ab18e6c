"""NGINX Ingress router on real-world Ingresses (tests/fixtures/realworld/nginx-ingress/), on the
real API server: weight, header A/B, mirror (refused), reset and sticky sessions (session
affinity), read back from the server.

Defect 4 of issue 18 (canary-weight-total ignored) is covered here, with the custom annotation
prefix and canary-by-header-pattern.
"""

from __future__ import annotations

import pytest

from analyzer.routers.base import RouterError
from tests.routers.realworld import every_operation, get, live, seed, without_meta

pytestmark = pytest.mark.kube

P = "nginx.ingress.kubernetes.io/"


def annotations(cluster, ns, obj) -> dict:
    return get(cluster, obj, ns)["metadata"].get("annotations", {})


def test_weight_total_of_argo_is_honoured(kube_cluster, kube_namespace):
    """Defect 4: Argo's canary Ingress with canary-weight-total 1000 and weight 15 is 1.5 %;
    it used to read as 15 % and 20 % was written as "20", i.e. 2 %."""
    _, canary = seed(kube_cluster, kube_namespace, "nginx-ingress/argo-canary-weight-total.yaml")
    router = live(kube_cluster, {"provider": "nginx-ingress", "ingress": "stable-ingress",
                                 "canaryIngress": "rollout-stable-ingress-canary",
                                 "canaryService": "canary-service"}, kube_namespace,
                  service="stable-service")
    assert router.get_weight().canary_weight == 2  # 1.5 %, rounded half up
    router.set_weight(20)
    ann = annotations(kube_cluster, kube_namespace, canary)
    assert (ann[P + "canary-weight"], ann[P + "canary-weight-total"]) == ("200", "1000")
    assert router.get_weight().canary_weight == 20
    router.set_header_route({"header": "x-canary", "value": "always"})
    router.reset()
    ann = annotations(kube_cluster, kube_namespace, canary)
    assert ann == {P + "canary": "true", P + "canary-weight": "0",
                   P + "canary-weight-total": "1000"}


def test_custom_annotation_prefix(kube_cluster, kube_namespace):
    """Argo's Ingress for a controller run with --annotations-prefix
    customingress.nginx.ingress.kubernetes.io: with the default prefix the router used to read
    0 % and write keys that controller ignores; now it refuses naming the prefix, and with
    annotationPrefix set it reads and writes that prefix only."""
    stable, canary = seed(kube_cluster, kube_namespace,
                          "nginx-ingress/argo-custom-annotation-prefix.yaml")
    cfg = {"provider": "nginx-ingress", "ingress": "primary-ingress",
           "canaryService": "canary-service"}
    with pytest.raises(RouterError,
                       match=r"prefix 'customingress\.nginx\.ingress\.kubernetes\.io'"):
        live(kube_cluster, cfg, kube_namespace, service="stable-service").get_weight()
    custom = "customingress.nginx.ingress.kubernetes.io"
    router = live(kube_cluster, {**cfg, "annotationPrefix": custom}, kube_namespace,
                  service="stable-service")
    split = router.get_weight()
    assert (split.canary_weight, split.header_route) == (20, {"header": "X-Canary",
                                                               "value": "iwantsit"})
    router.set_weight(30)
    router.reset()
    ann = annotations(kube_cluster, kube_namespace, canary)
    assert ann == {f"{custom}/canary": "true", f"{custom}/canary-weight": "0",
                   "my-custom-annotation.mygroup.com/key": "value"}
    assert without_meta(get(kube_cluster, stable, kube_namespace)) == without_meta(stable)


def test_header_pattern_read_replaced_and_removed(kube_cluster, kube_namespace):
    """Flagger's canary Ingress for a regex match (canary-by-header-pattern): it used to read as
    the header with value "always", and the pattern stayed after reset."""
    _, canary = seed(kube_cluster, kube_namespace, "nginx-ingress/flagger-header-pattern.yaml")
    router = live(kube_cluster, {"provider": "nginx-ingress", "ingress": "podinfo",
                                 "canaryService": "podinfo-canary"}, kube_namespace,
                  service="podinfo", strategy={"type": "ab", "match": {
                      "header": {"name": "x-user-type", "regex": "test"}}})
    assert router.get_weight().header_route == {"header": "x-user-type", "pattern": "test"}
    router.set_header_route({"header": "x-user-type", "value": "beta"})
    ann = annotations(kube_cluster, kube_namespace, canary)
    assert P + "canary-by-header-pattern" not in ann
    assert ann[P + "canary-by-header-value"] == "beta"
    router.set_header_route({"header": "x-user-type", "pattern": "b.*"})
    ann = annotations(kube_cluster, kube_namespace, canary)
    assert (ann[P + "canary-by-header-pattern"], P + "canary-by-header-value" in ann) == (
        "b.*", False)
    router.reset()
    ann = annotations(kube_cluster, kube_namespace, canary)
    assert not [k for k in ann if "canary-by" in k]
    assert ann["kubernetes.io/ingress.class"] == "nginx"


def test_users_canary_ingress_patched_in_place(kube_cluster, kube_namespace):
    """ingress-nginx's canary example: the user's own canary Ingress `canary` at 50 %."""
    _, canary = seed(kube_cluster, kube_namespace,
                     "nginx-ingress/ingress-nginx-canary-example.yaml")
    router = live(kube_cluster, {"provider": "nginx-ingress", "ingress": "production",
                                 "canaryIngress": "canary", "canaryService": "canary"},
                  kube_namespace, service="production")
    assert router.get_weight().canary_weight == 50
    router.set_weight(10)
    with pytest.raises(RouterError, match="cannot mirror"):
        router.set_mirror(10)
    router.reset()
    after = get(kube_cluster, canary, kube_namespace)
    assert after["spec"] == canary["spec"]
    assert after["metadata"]["annotations"] == {P + "canary": "true", P + "canary-weight": "0"}


def test_sticky_sessions_use_the_stable_ingress_affinity(kube_cluster, kube_namespace):
    """ingress-nginx's cookie-affinity example as the stable Ingress: with stickySessions the
    canary Ingress (created from it) says affinity-canary-behavior sticky while it has weight,
    legacy after a rollback (affinity would otherwise keep canary users there at weight 0)."""
    (stable,) = seed(kube_cluster, kube_namespace,
                     "nginx-ingress/ingress-nginx-affinity-cookie.yaml")
    cfg = {"provider": "nginx-ingress", "ingress": "nginx-test", "canaryService": "http-svc-2"}
    router = live(kube_cluster, {**cfg, "stickySessions": True}, kube_namespace,
                  service="http-svc")
    router.set_weight(20)
    canary = {**stable, "metadata": {"name": "nginx-test-canary"}}
    ann = annotations(kube_cluster, kube_namespace, canary)
    assert ann[P + "affinity-canary-behavior"] == "sticky"
    assert router.get_weight().sticky == "ingress-nginx session affinity"
    router.reset()
    assert annotations(kube_cluster, kube_namespace, canary)[
        P + "affinity-canary-behavior"] == "legacy"
    # Without stickySessions, affinity on the stable Ingress must not make the canary sticky.
    live(kube_cluster, cfg, kube_namespace, service="http-svc").set_weight(20)
    assert annotations(kube_cluster, kube_namespace, canary)[
        P + "affinity-canary-behavior"] == "legacy"


def test_sticky_sessions_need_affinity_on_the_stable_ingress(kube_cluster, kube_namespace):
    seed(kube_cluster, kube_namespace, "nginx-ingress/ingress-nginx-canary-example.yaml")
    router = live(kube_cluster, {"provider": "nginx-ingress", "ingress": "production",
                                 "canaryIngress": "canary", "canaryService": "canary",
                                 "stickySessions": True}, kube_namespace, service="production")
    with pytest.raises(RouterError, match=r"add the annotations nginx.ingress.kubernetes.io/"
                                          r"affinity: cookie"):
        router.set_weight(10)


# ---------------------------------------------------------------------------- every object

def nginx(ingress: str, canary_service: str, **extra) -> dict:
    return {"provider": "nginx-ingress", "ingress": ingress, "canaryService": canary_service,
            **extra}


EVERY = [
    ("nginx-ingress/argo-canary-weight-total.yaml",
     nginx("stable-ingress", "canary-service", canaryIngress="rollout-stable-ingress-canary"),
     "stable-service"),
    ("nginx-ingress/argo-custom-annotation-prefix.yaml",
     nginx("primary-ingress", "canary-service",
           annotationPrefix="customingress.nginx.ingress.kubernetes.io"), "stable-service"),
    ("nginx-ingress/flagger-header-pattern.yaml", nginx("podinfo", "podinfo-canary"), "podinfo"),
    ("nginx-ingress/ingress-nginx-affinity-cookie.yaml",
     nginx("nginx-test", "http-svc-2", stickySessions=True), "http-svc"),
    ("nginx-ingress/ingress-nginx-canary-example.yaml",
     nginx("production", "canary", canaryIngress="canary"), "production"),
]


@pytest.mark.parametrize(("rel", "cfg", "service"), EVERY, ids=[e[0] for e in EVERY])
def test_weight_header_mirror_reset_on_every_object(kube_cluster, kube_namespace, rel, cfg,
                                                    service):
    """Every real-world Ingress: each operation read back (a regex header too); mirroring is
    refused; the stable Ingress is never written."""
    seeded = seed(kube_cluster, kube_namespace, rel)
    router = live(kube_cluster, cfg, kube_namespace, service=service)
    every_operation(router, header={"header": "x-canary", "pattern": "beta-.*"}, mirror=None)
    stable = next(o for o in seeded if o["metadata"]["name"] == cfg["ingress"])
    assert without_meta(get(kube_cluster, stable, kube_namespace)) == without_meta(stable)
