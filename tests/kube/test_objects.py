"""The tests' own access to the real server (tests/support/kube_objects.py): objects seeded
and read back as raw JSON, a foreign writer guarded by resourceVersion, and a watch that keeps
every version the server stored (the fault suite reads the weights the server held from it)."""

from __future__ import annotations

import pytest

from tests.support.kube_cluster import KubeApiError, KubeCluster
from tests.support.kube_objects import ClusterObjects

pytestmark = pytest.mark.kube

VS = ("networking.istio.io/v1", "VirtualService", "checkout")


def virtual_service(weight: int) -> dict:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "checkout", "namespace": "elsewhere"},
            "spec": {"hosts": ["checkout"], "http": [{"name": "primary", "route": [
                {"destination": {"host": "checkout", "subset": "stable"}, "weight": 100 - weight},
                {"destination": {"host": "checkout", "subset": "canary"}, "weight": weight}]}]}}


def weight_of(vs: dict) -> int:
    return int(vs["spec"]["http"][0]["route"][1]["weight"])


def test_seed_get_modify_delete(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    objects = ClusterObjects(kube_cluster, kube_namespace)
    assert objects.get(*VS) is None
    stored = objects.seed(virtual_service(10))
    assert stored["metadata"]["namespace"] == kube_namespace  # the seed's own is replaced
    assert objects.path(*VS) == (f"/apis/networking.istio.io/v1/namespaces/{kube_namespace}/"
                                 "virtualservices/checkout")
    assert objects.path("v1", "Event") == f"/api/v1/namespaces/{kube_namespace}/events"
    changed = objects.modify(*VS, lambda o: o["spec"]["http"][0]["route"][1].update(weight=20))
    assert weight_of(changed) == 20 and weight_of(objects.get(*VS)) == 20
    # the foreign writer is guarded: a stale replace is the server's 409
    stale = dict(stored)
    with pytest.raises(KubeApiError) as exc:
        kube_cluster.request("PUT", objects.path(*VS), stale)
    assert exc.value.status == 409
    objects.delete(*VS)
    objects.delete(*VS)  # absent is fine
    assert objects.get(*VS) is None
    with pytest.raises(KeyError, match="serves no namespaced Nope"):
        objects.path("networking.istio.io/v1", "Nope")


def test_history_keeps_every_stored_version(kube_cluster: KubeCluster,
                                            kube_namespace: str) -> None:
    objects = ClusterObjects(kube_cluster, kube_namespace)
    objects.seed(virtual_service(0))
    history = objects.watch(*VS)
    try:
        for w in (5, 10, 10, 50):  # writing 10 again stores nothing new
            objects.modify(*VS, lambda o, w=w: o["spec"]["http"][0]["route"][1].update(weight=w))
        versions = history.versions()
        assert [weight_of(v) for v in versions] == [0, 5, 10, 50]
        assert len({v["metadata"]["resourceVersion"] for v in versions}) == 4
    finally:
        history.stop()
    assert not history.watching
