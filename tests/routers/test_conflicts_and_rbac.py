"""On the real API server: 409 Conflicts from real concurrent writers (retried with a fresh
read, foreign changes never lost), conflict storms, and RBAC for real: every router runs as
deploy/'s ServiceAccount (impersonation) with exactly the ClusterRole deploy/ grants, the calls
it makes equal its declared PERMISSIONS, and each granted verb is needed (without it the router
fails with a clear 403)."""

from __future__ import annotations

import copy
import importlib
import threading
from collections.abc import Callable
from typing import Any

import pytest

from analyzer.routers.base import Router, RouterError
from analyzer.routers.factory import KUBE_ROUTERS
from analyzer.routers.kube.objects import ObjectRef
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
    Kube,
    deployment,
)
from tests.support.kube_deploy import EngineRbac, role_without, rules_of, wait_for_access

VS = ("networking.istio.io/v1", "VirtualService", "checkout")


def primary_weights(kube: Kube) -> list[int]:
    vs = kube.get(*VS)
    return [d["weight"] for d in next(r for r in vs["spec"]["http"]
                                      if r["name"] == "primary")["route"]]


def write_after_each_read(router: Router, kind: str, write: Callable[[int], Any],
                          times: int | None = None) -> list[int]:
    """Make a second writer change the object right after the router reads it (between its
    read and its write), `times` times (None: always). Returns the list of writes done."""
    done: list[int] = []
    read = router.objects.read  # type: ignore[attr-defined]

    def racing_read(ref: ObjectRef, **kw: Any) -> Any:
        obj = read(ref, **kw)
        if ref.kind == kind and (times is None or len(done) < times):
            write(len(done))
            done.append(len(done))
        return obj

    router.objects.read = racing_read  # type: ignore[attr-defined]
    return done


def real_conflicts(kube: Kube) -> int:
    """409s the SERVER gave (not injected by the proxy)."""
    return sum(1 for r in kube.proxy.requests if r.status == 409 and r.fault is None)


def test_real_conflict_is_retried_with_a_fresh_read(istio: Kube) -> None:
    router = istio.router(ISTIO)
    foreign = write_after_each_read(router, "VirtualService", lambda i: istio.modify(
        *VS, lambda o: o["metadata"]["annotations"].update({f"foreign-{i}": "yes"})), times=2)
    router.set_weight(20)
    assert foreign == [0, 1]
    assert istio.writes() == [("PATCH", "checkout", 409), ("PATCH", "checkout", 409),
                               ("PATCH", "checkout", 200)]
    assert real_conflicts(istio) == 2
    vs = istio.get(*VS)
    assert vs["metadata"]["annotations"]["foreign-0"] == "yes"
    assert vs["metadata"]["annotations"]["foreign-1"] == "yes"
    assert primary_weights(istio) == [80, 20]


def test_endless_real_conflicts_give_up_and_leave_the_previous_weight(istio: Kube) -> None:
    router = istio.router(ISTIO, conflict_retries=3)
    router.set_weight(10)
    write_after_each_read(router, "VirtualService", lambda i: istio.modify(
        *VS, lambda o: o["metadata"].setdefault("labels", {}).update({"round": str(i)})))
    with pytest.raises(RouterError,
                       match=rf"VirtualService {istio.ns}/checkout.*4 conflicting writes"):
        router.set_weight(90)
    assert real_conflicts(istio) == 4
    assert primary_weights(istio) == [90, 10]


def test_injected_409_storm_is_retried_with_a_fresh_read(istio: Kube) -> None:
    istio.proxy.inject(409, count=5, method="PATCH")
    r = istio.router(ISTIO)
    r.set_weight(20)
    assert r.get_weight().canary_weight == 20
    patches = [q for q in istio.proxy.requests if q.method == "PATCH"]
    assert [q.status for q in patches] == [409] * 5 + [200]
    vs_gets = [q for q in istio.proxy.requests
               if q.method == "GET" and "virtualservices" in q.path]
    assert len(vs_gets) >= 6 + 1  # one fresh read per attempt, plus the read-back


def test_concurrent_writers_converge_without_lost_updates(istio: Kube) -> None:
    """N routers each own one route of the same VirtualService, while a foreign writer keeps
    adding annotations; the routers' reads are slowed so writers collide on the real server.
    Every write must land."""
    n = 6
    istio.modify(*VS, lambda o: o["spec"].update(http=[
        {"name": f"r{i}", "match": [{"uri": {"prefix": f"/p{i}"}}],
         "route": [{"destination": {"host": "checkout", "subset": "stable"}}]}
        for i in range(n)]))
    istio.proxy.inject(None, delay=0.03, method="GET", path="virtualservices", count=None)
    routers = [istio.router({**ISTIO, "routes": [f"r{i}"]}) for i in range(n)]
    start = threading.Barrier(n + 1)
    failures: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            start.wait()
            for w in (i + 1, 10 * (i + 1)):
                routers[i].set_weight(w)
        except BaseException as e:
            failures.append(e)

    def foreign() -> None:
        try:
            start.wait()
            for k in range(5):
                while True:
                    try:
                        istio.modify(*VS, lambda o, k=k: o["metadata"]["annotations"].update(
                            {f"f{k}": "x"}))
                        break
                    except Exception as e:  # a 409 for the foreign writer too: retry
                        if "409" not in str(e):
                            raise
                threading.Event().wait(0.02)
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
    threads.append(threading.Thread(target=foreign))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert failures == []
    final = istio.get(*VS)
    weights = {r["name"]: [d["weight"] for d in r["route"]] for r in final["spec"]["http"]}
    assert weights == {f"r{i}": [100 - 10 * (i + 1), 10 * (i + 1)] for i in range(n)}
    for k in range(5):
        assert final["metadata"]["annotations"][f"f{k}"] == "x"
    assert final["metadata"]["annotations"]["team"] == "payments"
    assert real_conflicts(istio) > 0  # the server really refused stale writes


# ------------------------------------------------------------------------------ RBAC

# provider -> (objects to seed, spec.router, target service, tries A/B, tries mirror)
SCENARIOS: dict[str, tuple[list[dict], dict, str, bool, bool]] = {
    "istio": ([VIRTUAL_SERVICE, DESTINATION_RULE], ISTIO, "checkout", True, True),
    "nginx-ingress": ([STABLE_INGRESS], NGINX_INGRESS, "frontend", True, False),
    "knative": ([KNATIVE_SERVICE], KNATIVE, "checkout", False, False),
    "seldon": ([SELDON_DEPLOYMENT], SELDON, "checkout", False, True),
    "kubernetes": ([deployment("api-v1", "v1", 8), deployment("api-v2", "v2", 2)],
                   KUBERNETES, "checkout", False, False),
    "gateway-api": ([HTTP_ROUTE], GATEWAY, "checkout", True, False),
    "smi": ([TRAFFIC_SPLIT], SMI, "checkout", False, False),
    "seldon-v2": ([{"apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Experiment",
                    "metadata": {"name": "iris", "namespace": NS},
                    "spec": {"default": "v1", "candidates": [{"name": "v1", "weight": 100}]}}],
                  {"provider": "seldon-v2", "experiment": "iris"}, "checkout", False, True),
}


def run_scenario(kube: Kube, provider: str, user: str) -> None:
    """Everything the engine does with a router, as `user`: read, weight, A/B, mirror, reset."""
    seeds, cfg, service, header, mirror = SCENARIOS[provider]
    for obj in seeds:
        kube.seed(obj)
    r = kube.router(cfg, user=user, service=service)
    r.get_weight()
    r.set_weight(20)
    if header:
        r.set_header_route({"header": "x-canary", "value": "1"})
    if mirror:
        r.reset()
        r.set_mirror(100)
    r.reset()


def declared(provider: str) -> set[tuple[str, str, str]]:
    module = importlib.import_module(KUBE_ROUTERS[provider][0])
    return {(g, res, verb) for g, res, verbs in module.PERMISSIONS for verb in verbs}


def test_every_provider_has_a_scenario() -> None:
    assert set(SCENARIOS) == set(KUBE_ROUTERS)


@pytest.mark.parametrize("provider", sorted(SCENARIOS))
def test_router_runs_as_the_service_account_with_exactly_its_role(
        kube: Kube, kube_engine_rbac: EngineRbac, provider: str) -> None:
    run_scenario(kube, provider, user=kube_engine_rbac.user)
    refused = [(r.method, r.path, r.status) for r in kube.proxy.requests
               if r.status in (401, 403)]
    assert refused == []
    # the calls made, the module's declared PERMISSIONS and deploy/'s ClusterRole are one set
    assert kube.proxy.calls() == declared(provider) == rules_of(
        kube_engine_rbac.role(provider))


def _cases() -> list[tuple[str, tuple[str, str, str]]]:
    return [(p, rule) for p in sorted(SCENARIOS) for rule in sorted(declared(p))]


@pytest.mark.parametrize(("provider", "rule"), _cases(),
                         ids=[f"{p}-{r[1]}-{r[2]}" for p, r in _cases()])
def test_a_verb_missing_from_the_role_is_a_clear_403(
        kube: Kube, kube_engine_rbac: EngineRbac, provider: str,
        rule: tuple[str, str, str]) -> None:
    """deploy/'s ClusterRole for the provider minus one verb, bound to a ServiceAccount of the
    test's namespace: the scenario fails with a RouterError naming the object, the verb, the
    server's message and where the RBAC lives."""
    group, resource, verb = rule
    role = role_without(kube_engine_rbac.role(provider), group, resource, verb,
                        name=f"{kube.ns}-without-{verb}-{resource}")
    sa = "engine"
    user = f"system:serviceaccount:{kube.ns}:{sa}"
    cluster = kube.cluster
    cluster.request("POST", f"/api/v1/namespaces/{kube.ns}/serviceaccounts",
                    {"metadata": {"name": sa}})
    cluster.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", role)
    try:
        cluster.request(
            "POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{kube.ns}/rolebindings", {
                "metadata": {"name": "engine"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": role["metadata"]["name"]},
                "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": kube.ns}]})
        expected = dict.fromkeys(rules_of(role), True)
        expected[rule] = False
        wait_for_access(cluster, user, expected, kube.ns)
        with pytest.raises(RouterError) as exc:
            run_scenario(kube, provider, user=user)
    finally:
        cluster.request("DELETE", "/apis/rbac.authorization.k8s.io/v1/clusterroles/"
                        + role["metadata"]["name"])
    message = str(exc.value)
    action = {"get": "read", "patch": "update", "create": "create"}[verb]
    assert message.startswith(f"cannot {action} ")
    assert f" {kube.ns}/" in message and "HTTP 403, not allowed" in message
    assert (f'User "{user}" cannot {verb} resource "{resource}" in API group "{group}" in the '
            f'namespace "{kube.ns}"') in message
    assert "grant the RBAC in deploy/" in message
    forbidden = [r for r in kube.proxy.requests if r.status == 403]
    assert len(forbidden) == 1 and forbidden[0].fault is None


def test_nginx_local_needs_no_kubernetes_rbac() -> None:
    from analyzer.routers import nginx_file

    assert nginx_file.PERMISSIONS == ()


def test_role_without_refuses_a_verb_the_role_lacks(kube_engine_rbac: EngineRbac) -> None:
    role = copy.deepcopy(kube_engine_rbac.role("istio"))
    with pytest.raises(ValueError, match="does not grant delete"):
        role_without(role, "networking.istio.io", "virtualservices", "delete", name="x")
