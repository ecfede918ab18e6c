"""Kubernetes Events for decisions: `kubectl describe` on the routed object shows the rollout.

Like Flagger and Argo Rollouts, the engine records an Event on the object its router changes
(the VirtualService, Ingress, Knative Service, ...) for every decision that changes weight or
state, carrying the decision's sentence. Events are sent from a background thread with a
bounded queue: an API server that is slow or down never blocks a tick, and a lost Event loses
nothing (the decision is in the store). Permissions: `create` on core `events`
(deploy/kustomize/base/rbac-events.yaml), and `get` on the routed object, which the provider's
ClusterRole already grants: the Event names the object's uid, without which `kubectl describe`
does not list it (kubectl selects Events by involvedObject uid). When that read fails the Event
is still created, without the uid (`kubectl get events` shows it).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from datetime import UTC, datetime
from typing import Any

from analyzer.daemon.notify import Notice
from analyzer.policy import Policy

log = logging.getLogger("analyzer.daemon.kube_events")

# provider -> (apiVersion, kind, resource, the router field naming the object)
_INVOLVED: dict[str, tuple[str, str, str, str]] = {
    "istio": ("networking.istio.io/v1", "VirtualService", "virtualservices", "virtualService"),
    "nginx-ingress": ("networking.k8s.io/v1", "Ingress", "ingresses", "ingress"),
    "knative": ("serving.knative.dev/v1", "Service", "services", "knativeService"),
    "seldon": ("machinelearning.seldon.io/v1", "SeldonDeployment", "seldondeployments",
               "seldonDeployment"),
    "seldon-v2": ("mlops.seldon.io/v1alpha1", "Experiment", "experiments", "experiment"),
    "kubernetes": ("apps/v1", "Deployment", "deployments", "canaryDeployment"),
    "gateway-api": ("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes", "httpRoute"),
    "smi": ("split.smi-spec.io/v1alpha4", "TrafficSplit", "trafficsplits", "trafficSplit"),
}
# (apiVersion, kind) -> resource, to read the object for its uid (all in a named API group)
_RESOURCES = {(api_version, kind): resource for api_version, kind, resource, _ in
              _INVOLVED.values()}
_WARNING_KINDS = {"rollback", "failed", "pause"}


def involved_object(policy: Policy) -> dict[str, str] | None:
    """The object an Event about this policy's rollout is attached to (None off Kubernetes)."""
    router = policy.spec.router
    found = _INVOLVED.get(router.provider)
    if found is None:
        return None
    api_version, kind, _, field = found
    return {"apiVersion": api_version, "kind": kind,
            "name": getattr(router, field), "namespace": policy.spec.target.namespace}


def event_body(policy: Policy, notice: Notice, now: datetime) -> dict[str, Any] | None:
    obj = involved_object(policy)
    if obj is None:
        return None
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "generateName": f"{obj['name']}.canary-",
            "namespace": obj["namespace"],
            "labels": {"app.kubernetes.io/managed-by": "canary-analyzer"},
        },
        "involvedObject": obj,
        "reason": f"Canary{notice.kind.capitalize()}",
        "message": f"{policy.name}: {notice.text}"[:1024],
        "type": "Warning" if notice.kind in _WARNING_KINDS else "Normal",
        "source": {"component": "canary-analyzer"},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class KubeEventRecorder:
    """A notifier sink: `notify(policy, notice)` queues an Event; never blocks, never raises."""

    def __init__(self, api_client: Any = None, *, queue_size: int = 500) -> None:
        from kubernetes import client, config

        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api_client = client.ApiClient()
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(queue_size)
        self.sent = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._work, name="kube-events", daemon=True)
        self._thread.start()

    def notify(self, policy: Policy, notice: Notice) -> int:
        body = event_body(policy, notice, datetime.now(UTC))
        if body is None:
            return 0
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            self.failed += 1
            return 0
        return 1

    def drain(self, timeout: float = 10.0) -> bool:
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.start()
        try:
            while self._queue.unfinished_tasks and not deadline.is_set():
                deadline.wait(0.02)
            return self._queue.unfinished_tasks == 0
        finally:
            timer.cancel()

    def close(self, timeout: float = 5.0) -> None:
        self.drain(timeout)
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout=1)

    def _work(self) -> None:
        while True:
            body = self._queue.get()
            try:
                if body is None:
                    return
                ns = body["metadata"]["namespace"]
                self._add_uid(body["involvedObject"])
                self._core.create_namespaced_event(ns, body, _request_timeout=5)
                self.sent += 1
            except Exception as e:  # the API server's problems must not reach a tick
                self.failed += 1
                log.warning("could not record a Kubernetes Event: %s", str(e).splitlines()[0])
            finally:
                self._queue.task_done()

    def _add_uid(self, ref: dict[str, str]) -> None:
        """Put the object's uid into the reference (kubectl describe selects Events by it)."""
        group, _, version = ref["apiVersion"].rpartition("/")
        try:
            obj = self._custom.get_namespaced_custom_object(
                group, version, ref["namespace"], _RESOURCES[(ref["apiVersion"], ref["kind"])],
                ref["name"],
                _request_timeout=5)
            ref["uid"] = obj["metadata"]["uid"]
        except Exception as e:  # the Event is still worth sending without it
            log.info("Event for %s %s/%s without its uid: %s", ref["kind"], ref["namespace"],
                     ref["name"], str(e).splitlines()[0])


class FanOut:
    """Several notifier sinks behind the Notifier interface the engine calls."""

    def __init__(self, *sinks: Any) -> None:
        self.sinks = [s for s in sinks if s is not None]

    def notify(self, policy: Policy, notice: Notice) -> int:
        return sum(s.notify(policy, notice) for s in self.sinks)

    def drain(self, timeout: float = 10.0) -> bool:
        return all(s.drain(timeout) for s in self.sinks)

    def close(self, timeout: float = 5.0) -> None:
        for s in self.sinks:
            s.close(timeout)
