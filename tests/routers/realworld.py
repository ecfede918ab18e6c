"""Helpers for the router tests on real-world objects (tests/fixtures/realworld/<provider>/, each
file headed by its source) run on the real API server of tests/support/kube_cluster.py: seed the
objects with the admin client, build the router as the engine does, read back from the server.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from analyzer.routers.base import Router
from analyzer.routers.factory import build_router
from analyzer.routers.kube.inputs import load_objects
from tests.routers.conftest import make_policy
from tests.support.kube_cluster import KubeApiError, KubeCluster

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "realworld"

# (group, kind) -> plural of every kind the test cluster has a CRD (or a built-in) for.
PLURALS = {
    ("networking.istio.io", "VirtualService"): "virtualservices",
    ("networking.istio.io", "DestinationRule"): "destinationrules",
    ("gateway.networking.k8s.io", "HTTPRoute"): "httproutes",
    ("split.smi-spec.io", "TrafficSplit"): "trafficsplits",
    ("serving.knative.dev", "Service"): "services",
    ("machinelearning.seldon.io", "SeldonDeployment"): "seldondeployments",
    ("mlops.seldon.io", "Experiment"): "experiments",
    ("networking.k8s.io", "Ingress"): "ingresses",
}


def fixture(rel: str) -> list[dict[str, Any]]:
    """The objects of one fixture file (its header comment is YAML comment)."""
    path = FIXTURES / rel
    return load_objects(path.read_text(encoding="utf-8"), str(path))


def path_of(obj: dict[str, Any], namespace: str | None = None) -> str:
    group, _, version = obj["apiVersion"].rpartition("/")
    plural = PLURALS[(group, obj["kind"])]
    ns = namespace or obj["metadata"].get("namespace") or "default"
    return f"/apis/{group}/{version}/namespaces/{ns}/{plural}/{obj['metadata']['name']}"


def seed(cluster: KubeCluster, namespace: str, rel: str, *,
         kinds: tuple[str, ...] | None = None, api_version: dict[str, str] | None = None
         ) -> list[dict[str, Any]]:
    """Create the fixture's objects in `namespace` (as written, in their own apiVersion); kinds
    the cluster has no CRD for (an Istio Gateway, an HTTPRouteGroup) are skipped. Returns the
    objects as the server stored them.

    api_version: {kind: apiVersion} to seed some kinds in another version (a fixture in a
    version the cluster does not serve; each use says why)."""
    stored = []
    for obj in fixture(rel):
        obj = copy.deepcopy(obj)
        if api_version and obj["kind"] in api_version:
            obj["apiVersion"] = api_version[obj["kind"]]
        group = obj["apiVersion"].rpartition("/")[0]
        if (group, obj["kind"]) not in PLURALS or (kinds and obj["kind"] not in kinds):
            continue
        obj["metadata"]["namespace"] = namespace
        path = path_of(obj).rpartition("/")[0]
        stored.append(cluster.request("POST", path, obj))
    return stored


def get(cluster: KubeCluster, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The object as the server has it now (read in the version `obj` names)."""
    answer: dict[str, Any] = cluster.request("GET", path_of(obj, namespace))
    return answer


def set_status(cluster: KubeCluster, obj: dict[str, Any], namespace: str,
               status: dict[str, Any]) -> None:
    """What a controller would report (nothing reconciles in the test cluster)."""
    current = get(cluster, obj, namespace)
    current["status"] = status
    cluster.request("PUT", path_of(obj, namespace) + "/status", current)


def exists(cluster: KubeCluster, obj: dict[str, Any], namespace: str) -> bool:
    try:
        get(cluster, obj, namespace)
    except KubeApiError as e:
        if e.status == 404:
            return False
        raise
    return True


def live(cluster: KubeCluster, router: dict[str, Any], namespace: str, **policy: Any) -> Router:
    """The router on the real server, built as the engine builds it."""
    return build_router(make_policy(router, namespace=namespace, **policy),
                        api_client=cluster.api_client())


def offline(rel: str, router: dict[str, Any], **policy: Any) -> Router:
    """The router on the fixture's objects only (`canary route --current`): for objects a real
    server refuses (their headers say so)."""
    objs = fixture(rel)
    ns = next((o["metadata"]["namespace"] for o in objs if o["metadata"].get("namespace")),
              "default")
    return build_router(make_policy(router, namespace=ns, **policy), current_object=objs)


def written(router: Router, kind: str) -> dict[str, Any]:
    """The last object of `kind` the router wrote (or would write)."""
    return next(o for o in reversed(router.last_applied) if o.get("kind") == kind)


def without_meta(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without server bookkeeping (resourceVersion, generation, managedFields)."""
    obj = copy.deepcopy(obj)
    meta = obj.get("metadata", {})
    for key in ("resourceVersion", "generation", "managedFields", "creationTimestamp", "uid"):
        meta.pop(key, None)
    return obj


def every_operation(router: Router, *, header: dict[str, str] | None,
                    mirror: float | None, header_read_back: bool = True) -> None:
    """Reset, weight, header A/B, reset, mirror, reset on one router, each read back from the
    server. header/mirror None: the provider cannot, and says so with a RouterError."""
    from analyzer.routers.base import RouterError

    router.reset()
    assert router.get_weight().canary_weight == 0
    router.set_weight(30)
    assert router.get_weight().canary_weight == 30
    if header is None:
        try:
            router.set_header_route({"header": "x-canary", "value": "1"})
        except RouterError as e:
            assert "cannot" in str(e) or "only via" in str(e), e
        else:
            raise AssertionError("a header route was accepted by a provider that has none")
    else:
        router.set_header_route(header)
        if header_read_back:
            assert router.get_weight().header_route == header
    router.reset()
    split = router.get_weight()
    assert (split.canary_weight, split.header_route, split.mirror_percent) == (0, None, None)
    if mirror is None:
        try:
            router.set_mirror(10)
        except RouterError as e:
            assert "cannot mirror" in str(e), e
        else:
            raise AssertionError("mirroring was accepted by a provider that cannot")
    else:
        router.set_mirror(mirror)
        assert router.get_weight().mirror_percent == mirror
    router.reset()
    split = router.get_weight()
    assert (split.canary_weight, split.mirror_percent) == (0, None)
