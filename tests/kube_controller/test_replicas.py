"""Several replicas: each RolloutPolicy is driven by exactly one controller (PostgreSQL advisory
locks, fair share), each writes only its own policies' status, and when one replica stops the
other takes its policies over. Real PostgreSQL, real API server; passes are run by hand."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from analyzer.daemon.controller import Controller, store_name
from analyzer.daemon.store import Store
from tests.engine.conftest import PG_URL
from tests.kube_controller.conftest import rollout_policy, wait_for
from tests.support.clock import EPOCH
from tests.support.kube_cluster import KubeCluster
from tests.support.kube_deploy import EngineRbac
from tests.support.kube_objects import ClusterObjects

NAMES = [f"p{i}" for i in range(4)]


@pytest.fixture
def controllers(rolloutpolicy_crd: KubeCluster, kube_namespace: str,
                kube_engine_rbac: EngineRbac, pg_schema: str) -> Iterator[list[Controller]]:
    objects = ClusterObjects(rolloutpolicy_crd, kube_namespace)
    for name in NAMES:
        objects.seed(rollout_policy(name, target={"service": "api", "stable": "v1",
                                                  "canary": "v2"},
                                    router={"provider": "dry-run"}))
    made = []
    for replica in ("replica-a", "replica-b"):
        store = Store(PG_URL, schema=pg_schema)
        api = rolloutpolicy_crd.api_client(user=kube_engine_rbac.user)
        made.append(Controller(store, api, namespace=kube_namespace, replica=replica,
                               status_interval=0.05, watch_timeout=20,
                               clock=lambda: EPOCH).start(loop=False))
    for c in made:
        wait_for("the policy list", lambda c=c: len(c.objects) == len(NAMES))
        c.ownership.live_replicas()  # both present before the first pass
    yield made
    for c in made:
        if c.running:
            c.stop()
        c.store.dispose()


def test_each_policy_has_exactly_one_owner(controllers: list[Controller],
                                           rolloutpolicy_crd: KubeCluster,
                                           kube_namespace: str) -> None:
    a, b = controllers
    for _ in range(4):  # fair share converges within a few passes (one hand-back per pass)
        a.reconcile(EPOCH)
        b.reconcile(EPOCH)
    assert len(a.owned) == len(b.owned) == 2
    assert a.owned.isdisjoint(b.owned)
    assert a.owned | b.owned == {f"{kube_namespace}/{n}" for n in NAMES}
    for c in (a, b):
        assert c.writer.flush(10)
    objects = ClusterObjects(rolloutpolicy_crd, kube_namespace)
    for name in NAMES:
        key = f"{kube_namespace}/{name}"
        owner = a if key in a.owned else b
        status = objects.get("canary-analyzer.io/v1alpha1", "RolloutPolicy", name)["status"]
        assert status["controller"] == owner.replica
        # one run per policy, started by its owner only
        assert owner.store.generations(store_name(kube_namespace, name)) == [1]

    a.stop()  # its locks are released: b takes everything over
    for _ in range(2):
        b.reconcile(EPOCH)
    assert len(b.owned) == len(NAMES)
    for name in NAMES:
        assert b.store.generations(store_name(kube_namespace, name)) == [1]
