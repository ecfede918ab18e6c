"""Decisions become Kubernetes Events on the routed object, created on the real API server by
the engine's ServiceAccount (deploy/'s `canary-analyzer-events` ClusterRole, by impersonation)
and read back with the client and with `kubectl describe`; a failing API server never blocks or
breaks a tick."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from analyzer.core.rollout import Phase
from analyzer.daemon.engine import Engine, run_rollout
from analyzer.daemon.kube_events import FanOut, KubeEventRecorder, event_body, involved_object
from analyzer.daemon.notify import Notice
from analyzer.daemon.store import Store
from analyzer.policy import Policy, load_policy, parse_policy
from analyzer.routers.factory import build_router
from tests.engine.conftest import T0, policy_yaml
from tests.routers.conftest import DESTINATION_RULE, VIRTUAL_SERVICE
from tests.support.fault_proxy import FaultProxy
from tests.support.kube_cluster import KubeCluster
from tests.support.kube_deploy import EngineRbac, role_without, wait_for_access
from tests.support.kube_objects import ClusterObjects

ROOT = Path(__file__).resolve().parents[2]


def policy_in(name: str, namespace: str) -> Policy:
    """A reference policy from policies/, targeting the test's namespace."""
    policy = load_policy(ROOT / "policies" / f"{name}.yaml")
    target = policy.spec.target.model_copy(update={"namespace": namespace})
    return policy.model_copy(update={"spec": policy.spec.model_copy(update={"target": target})})


@pytest.fixture
def recorders() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for r in made:
        r.close()


def test_every_kubernetes_provider_has_an_involved_object() -> None:
    for f in sorted((ROOT / "policies").glob("*.yaml")):
        policy = load_policy(f)
        obj = involved_object(policy)
        if policy.spec.router.provider in ("nginx", "dry-run"):
            assert obj is None
        else:
            assert obj is not None and obj["name"] and obj["namespace"] == \
                policy.spec.target.namespace


def test_rollback_is_a_warning_event_on_the_routed_object(
        kube_cluster: KubeCluster, kube_namespace: str, kube_engine_rbac: EngineRbac,
        recorders: list[Any]) -> None:
    objects = ClusterObjects(kube_cluster, kube_namespace)
    vs = objects.seed(VIRTUAL_SERVICE)
    objects.seed(DESTINATION_RULE)
    policy = policy_in("istio-canary", kube_namespace)
    assert involved_object(policy)["name"] == vs["metadata"]["name"]
    recorder = KubeEventRecorder(kube_cluster.api_client(user=kube_engine_rbac.user))
    recorders.append(recorder)
    text = "error-rate ratio 2.3 [1.6, 3.4] exceeds tolerance 1.25"
    assert recorder.notify(policy, Notice(rollout=policy.name, kind="rollback", text=text)) == 1
    assert recorder.drain(10)
    assert (recorder.sent, recorder.failed) == (1, 0)
    (event,) = objects.list("v1", "Event")
    assert event["type"] == "Warning" and event["reason"] == "CanaryRollback"
    assert event["message"] == f"{policy.name}: {text}"
    assert event["source"] == {"component": "canary-analyzer"}
    assert event["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "canary-analyzer"}
    assert event["metadata"]["name"].startswith("checkout.canary-")
    assert {k: event["involvedObject"][k] for k in ("apiVersion", "kind", "name", "namespace")} \
        == {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "name": "checkout", "namespace": kube_namespace}
    assert event["involvedObject"]["uid"] == vs["metadata"]["uid"]
    # what an operator sees (kubectl selects the Events by the object's uid)
    described = kube_cluster.kubectl("describe", "virtualservice", "checkout", "-n",
                                     kube_namespace).stdout
    events = described.split("Events:", 1)[1]
    assert "Warning" in events and "CanaryRollback" in events and text in events


def test_a_rollout_leaves_one_event_per_decision_on_the_server(
        kube_cluster: KubeCluster, kube_namespace: str, kube_engine_rbac: EngineRbac,
        recorders: list[Any]) -> None:
    """The engine (simulated clock and metrics) rolls a canary out with the Istio router on the
    real server; router and recorder both act as deploy/'s ServiceAccount."""
    objects = ClusterObjects(kube_cluster, kube_namespace)
    vs = objects.seed(VIRTUAL_SERVICE)
    objects.seed(DESTINATION_RULE)
    policy = parse_policy(policy_yaml("checkout", steps="[20, 50, 100]").replace(
        "target: {service: demo, stable: v1, canary: v2}",
        f"target: {{namespace: {kube_namespace}, service: checkout, stable: v1, canary: v2}}",
    ).replace("router: {provider: dry-run}",
              "router: {provider: istio, virtualService: checkout, destinationRule: checkout, "
              "stableSubset: stable, canarySubset: canary}").replace(
        "source: simulate", "source: simulate\n    allowSimulatedMetrics: true"))
    as_engine = kube_cluster.api_client(user=kube_engine_rbac.user)
    recorder = KubeEventRecorder(as_engine)
    recorders.append(recorder)
    store = Store("sqlite://")
    engine = Engine(store, notifier=recorder,
                    router_factory=lambda p: build_router(p, api_client=as_engine))
    run = run_rollout(policy, store=store, engine=engine, start=T0)
    assert run.phase is Phase.SUCCEEDED
    assert recorder.drain(10) and recorder.failed == 0
    events = sorted(objects.list("v1", "Event"),
                    key=lambda e: int(e["metadata"]["resourceVersion"]))
    assert len(events) == recorder.sent
    changed = [t for t in run.ticks if (t.phase_before, t.step_before, t.weight_before) != (
        t.phase_after, t.step_after, t.weight_after)]
    assert len(events) == len(changed)
    assert [e["reason"] for e in events] == [
        "CanaryStep", "CanaryPromote", "CanaryPromote", "CanarySucceeded"]
    assert [e["type"] for e in events] == ["Normal"] * 4
    moves = [e["message"].rsplit("(weight ", 1)[1].split(",")[0] for e in events]
    assert moves == ["0% -> 20%", "20% -> 50%", "50% -> 100%", "100% -> 100%"]
    assert all(e["involvedObject"]["uid"] == vs["metadata"]["uid"] for e in events)
    final = objects.get("networking.istio.io/v1", "VirtualService", "checkout")
    assert [d["weight"] for d in next(r for r in final["spec"]["http"]
                                      if r["name"] == "primary")["route"]] == [0, 100]
    store.dispose()


def test_every_decision_kind_lands_with_its_type(kube_cluster: KubeCluster,
                                                 kube_namespace: str,
                                                 kube_engine_rbac: EngineRbac,
                                                 recorders: list[Any]) -> None:
    policy = policy_in("knative", kube_namespace)
    recorder = KubeEventRecorder(kube_cluster.api_client(user=kube_engine_rbac.user))
    recorders.append(recorder)
    kinds = ["promote", "step", "pause", "rollback", "succeeded", "failed"]
    for kind in kinds:
        recorder.notify(policy, Notice(rollout=policy.name, kind=kind, text=f"{kind} text"))
    assert recorder.drain(10) and (recorder.sent, recorder.failed) == (len(kinds), 0)
    events = ClusterObjects(kube_cluster, kube_namespace).list("v1", "Event")
    # the Knative Service does not exist: the Events are created all the same, without a uid
    assert not any("uid" in e["involvedObject"] for e in events)
    got = {e["reason"]: e["type"] for e in events}
    assert got == {"CanaryPromote": "Normal", "CanaryStep": "Normal", "CanaryPause": "Warning",
                   "CanaryRollback": "Warning", "CanarySucceeded": "Normal",
                   "CanaryFailed": "Warning"}


def test_without_create_on_events_the_recorder_counts_a_failure(
        kube_cluster: KubeCluster, kube_namespace: str, kube_engine_rbac: EngineRbac,
        recorders: list[Any], caplog: pytest.LogCaptureFixture) -> None:
    """deploy/'s events role minus `create`: the server says 403, the recorder counts it,
    logs one line, and never raises into the tick."""
    role = kube_engine_rbac.role("events")
    narrowed = role_without(role, "", "events", "create", name=f"{kube_namespace}-no-events")
    assert narrowed["rules"] == []  # create was its only verb: the account holds nothing
    user = f"system:serviceaccount:{kube_namespace}:engine"
    wait_for_access(kube_cluster, user, {("", "events", "create"): False}, kube_namespace)
    recorder = KubeEventRecorder(kube_cluster.api_client(user=user))
    recorders.append(recorder)
    policy = policy_in("istio-canary", kube_namespace)
    recorder.notify(policy, Notice(rollout=policy.name, kind="promote", text="ok"))
    assert recorder.drain(10)
    assert (recorder.sent, recorder.failed) == (0, 1)
    assert ClusterObjects(kube_cluster, kube_namespace).list("v1", "Event") == []
    assert any("could not record a Kubernetes Event" in r.message and "403" in r.message
               for r in caplog.records)


def test_failing_api_server_is_counted_not_raised(kube_cluster: KubeCluster,
                                                  kube_namespace: str,
                                                  kube_fault_proxy: FaultProxy,
                                                  recorders: list[Any]) -> None:
    policy = policy_in("knative", kube_namespace)
    kube_fault_proxy.inject(500, count=None)
    recorder = FanOut(KubeEventRecorder(kube_cluster.api_client(host=kube_fault_proxy.url)))
    recorders.append(recorder)
    recorder.notify(policy, Notice(rollout=policy.name, kind="promote", text="ok"))
    assert recorder.drain(10)
    assert recorder.sinks[0].failed == 1 and recorder.sinks[0].sent == 0
    # the object's uid could not be read, then the Event could not be created
    assert [(r.method, r.status) for r in kube_fault_proxy.requests] == [("GET", 500),
                                                                          ("POST", 500)]


def test_event_body_shape() -> None:
    policy = load_policy(ROOT / "policies" / "seldon.yaml")
    body = event_body(policy, Notice(rollout="x", kind="succeeded", text="done"),
                      datetime(2026, 1, 1, tzinfo=UTC))
    assert body is not None
    assert body["involvedObject"]["kind"] == "SeldonDeployment"
    assert body["type"] == "Normal" and body["reason"] == "CanarySucceeded"
    assert body["firstTimestamp"] == "2026-01-01T00:00:00Z"
