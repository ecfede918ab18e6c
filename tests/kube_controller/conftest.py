"""The RolloutPolicy controller against the real API server, on a simulated clock.

`ControllerHarness` puts deploy/'s CRD, two Deployments (stable and canary, replica router) and a
RolloutPolicy on the session's kube-apiserver, and runs the controller's watches and status
writer for real, as deploy/'s ServiceAccount (impersonated: it holds exactly deploy/'s RBAC).
Time is simulated: `sync()` waits (bounded) until the controller's watches have delivered the
objects' current versions, then runs one controller pass at `now`; `tick()` runs one engine
tick of the active run at `now` and moves `now` on by the analysis interval. Assertions are on
simulated time, counts and what the server holds, never on the wall clock.

The test cluster has no controller-manager: Deployments get no pods or status (the replica
router only reads and writes spec.replicas), and a deleted RolloutPolicy stays until our
finalizer is removed, exactly as in a real cluster.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from analyzer.daemon.controller import Controller, store_name
from analyzer.daemon.engine import Engine
from analyzer.daemon.store import RolloutRecord, Store
from analyzer.policy import CANARY_REF_API_VERSIONS
from analyzer.routers.factory import build_router
from tests.support.clock import EPOCH
from tests.support.kube_cluster import KubeCluster, kubectl_binary
from tests.support.kube_deploy import EngineRbac
from tests.support.kube_objects import ClusterObjects

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "deploy" / "kustomize" / "base" / "crd-rolloutpolicies.yaml"
RP = ("canary-analyzer.io/v1alpha1", "RolloutPolicy")
INTERVAL = timedelta(seconds=10)
TOTAL_REPLICAS = 10


def deployment(name: str, image: str, replicas: int) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": image}]}}}}


def rollout_policy(name: str = "api", **spec: Any) -> dict[str, Any]:
    """A RolloutPolicy whose canaryRef is the canary Deployment (image tag = version), moving
    replicas between `api-stable` and `api-canary`; healthy simulated traffic decides fast."""
    body: dict[str, Any] = {
        "target": {"service": "api", "canaryRef": {"kind": "Deployment", "name": "api-canary"}},
        "router": {"provider": "kubernetes", "stableDeployment": "api-stable",
                   "canaryDeployment": "api-canary", "totalReplicas": TOTAL_REPLICAS},
        "strategy": {"steps": [20, 50, 100]},
        "analysis": {"interval": "10s", "minStepDuration": "20s", "baselineWindow": "1m"},
        "metrics": {"source": "simulate", "allowSimulatedMetrics": True, "rps": 2000,
                    "seed": 7},
        "checks": [{"type": "error-rate", "tolerance": 0.5}],
        "decision": {"alpha": 0.05, "minSamples": 100},
    }
    body.update(spec)
    return {"apiVersion": RP[0], "kind": RP[1], "metadata": {"name": name}, "spec": body}


@pytest.fixture(scope="session")
def rolloutpolicy_crd(kube_cluster: KubeCluster) -> KubeCluster:
    """deploy/'s RolloutPolicy CRD installed on the session cluster."""
    assert kube_cluster.install_crds(CRD_FILE) == ["rolloutpolicies.canary-analyzer.io"]
    return kube_cluster


def wait_for(what: str, pred: Callable[[], bool], timeout: float = 15.0) -> None:
    """A liveness bound (several times the normal milliseconds), not a timing assertion."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.02)


class ControllerHarness:
    def __init__(self, cluster: KubeCluster, namespace: str, user: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.objects = ClusterObjects(cluster, namespace)
        self.api = cluster.api_client(user=user)
        self.store = Store("sqlite://")
        self.engine = Engine(self.store,
                             router_factory=lambda p: build_router(p, api_client=self.api))
        self.now = EPOCH
        self.controller = Controller(self.store, self.api, namespace=namespace,
                                     status_interval=0.05, watch_timeout=20,
                                     clock=lambda: self.now).start(loop=False)

    def close(self) -> None:
        self.controller.stop()
        self.api.close()
        self.store.dispose()

    # -- the cluster ---------------------------------------------------------------------

    def setup(self, image: str = "registry.example/api:v1", **spec: Any) -> None:
        self.objects.seed(deployment("api-stable", image, TOTAL_REPLICAS))
        self.objects.seed(deployment("api-canary", image, 0))
        self.objects.seed(rollout_policy(**spec))
        self.sync()

    def set_image(self, tag: str) -> None:
        def change(d: dict[str, Any]) -> None:
            d["spec"]["template"]["spec"]["containers"][0]["image"] = f"registry.example/api:{tag}"
        self.objects.modify("apps/v1", "Deployment", "api-canary", change)

    def policy(self, name: str = "api") -> dict[str, Any] | None:
        return self.objects.get(*RP, name)

    def status(self, name: str = "api") -> dict[str, Any]:
        obj = self.policy(name)
        assert obj is not None
        return dict(obj.get("status") or {})

    def replicas(self) -> tuple[int, int]:
        """(stable, canary) spec.replicas as the server holds them."""
        get = self.objects.get
        return (get("apps/v1", "Deployment", "api-stable")["spec"]["replicas"],
                get("apps/v1", "Deployment", "api-canary")["spec"]["replicas"])

    def events(self, name: str = "api") -> list[dict[str, Any]]:
        evs = [e for e in self.objects.list("v1", "Event")
               if e["involvedObject"].get("kind") == "RolloutPolicy"
               and e["involvedObject"]["name"] == name]
        return sorted(evs, key=lambda e: int(e["metadata"]["resourceVersion"]))

    def kubectl_canary(self, *args: str, check: bool = True) -> Any:
        """`kubectl canary ARGS -n NS` through kubectl's plugin mechanism (a `kubectl-canary`
        on PATH runs this checkout's CLI), as the cluster admin (KUBECONFIG)."""
        env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig),
               "PATH": f"{plugin_dir()}:{os.environ.get('PATH', '')}"}
        proc = subprocess.run([str(kubectl_binary()), "canary", *args, "-n", self.namespace],
                              capture_output=True, text=True, env=env, timeout=120,
                              check=False)
        if check:
            assert proc.returncode == 0, f"kubectl canary {args}: {proc.stdout}{proc.stderr}"
        return proc

    # -- the controller and the engine ------------------------------------------------------

    def sync(self, name: str = "api") -> None:
        """Wait until the controller has seen the policy's and its canaryRef's current
        versions (bounded), then one pass at `now`, then flush status and Events."""
        key = f"{self.namespace}/{name}"
        c = self.controller
        obj = self.policy(name)
        if obj is not None:
            rv = obj["metadata"]["resourceVersion"]
            wait_for(f"the policy watch delivers {key} at {rv}", lambda: (
                c.objects.get(key, {}).get("metadata", {}).get("resourceVersion") == rv))
        else:
            wait_for(f"the policy watch delivers the deletion of {key}",
                     lambda: key not in c.objects)
        c.reconcile(self.now)
        ref_spec = ((obj or {}).get("spec", {}).get("target") or {}).get("canaryRef")
        if obj is not None and key in c.tracked and ref_spec:
            ref = self.objects.get(CANARY_REF_API_VERSIONS[ref_spec["kind"]], ref_spec["kind"],
                                   ref_spec["name"])
            rv = ref["metadata"]["resourceVersion"] if ref else None
            wait_for(f"the canaryRef watch of {key} delivers {ref_spec['name']} at {rv}",
                     lambda: (c.tracked[key].ref_object or {}).get("metadata", {}).get(
                         "resourceVersion") == rv)
            c.reconcile(self.now)
        assert c.writer.flush(15), "the status writer did not drain"

    def run(self, name: str = "api") -> RolloutRecord:
        return self.store.latest(store_name(self.namespace, name))

    def tick(self, name: str = "api") -> None:
        """One engine tick of the policy's newest run at `now`; then `now` += interval."""
        run = self.run(name)
        self.engine.tick(run.id, self.now)
        self.now += INTERVAL

    def tick_until(self, pred: Callable[[RolloutRecord], bool], limit: int = 60,
                   name: str = "api") -> int:
        """Tick (simulated) until pred(run); the number of ticks."""
        for n in range(1, limit + 1):
            self.tick(name)
            if pred(self.run(name)):
                return n
        raise AssertionError(f"not reached in {limit} ticks: {self.run(name).state}")


def plugin_dir() -> Path:
    """A directory with a `kubectl-canary` executable running this checkout's plugin."""
    import sys
    import tempfile

    d = Path(tempfile.gettempdir()) / f"canary-kubectl-plugin-{abs(hash(str(REPO)))}"
    d.mkdir(exist_ok=True)
    shim = d / "kubectl-canary"
    shim.write_text(f"#!/bin/sh\nexport PYTHONPATH={REPO}\n"
                    f"exec {sys.executable} -m analyzer.cli.kubectl_canary \"$@\"\n")
    shim.chmod(0o755)
    return d


@pytest.fixture
def harness(rolloutpolicy_crd: KubeCluster, kube_namespace: str,
            kube_engine_rbac: EngineRbac) -> Iterator[ControllerHarness]:
    h = ControllerHarness(rolloutpolicy_crd, kube_namespace, kube_engine_rbac.user)
    try:
        yield h
    finally:
        h.close()


from tests.engine.conftest import pg_schema  # noqa: E402,F401  (the PostgreSQL schema fixture)
