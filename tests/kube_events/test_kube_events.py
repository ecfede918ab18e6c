"""Decisions become Kubernetes Events on the routed object (through the real client, against
the API server test double), and a failing API server never blocks or breaks a tick."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from analyzer.daemon.kube_events import FanOut, KubeEventRecorder, event_body, involved_object
from analyzer.daemon.notify import Notice
from analyzer.policy import load_policy
from tests.support.kube_api_double import KubeApiDouble

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def api():
    with KubeApiDouble() as double:
        yield double


def test_every_kubernetes_provider_has_an_involved_object() -> None:
    for f in sorted((ROOT / "policies").glob("*.yaml")):
        policy = load_policy(f)
        obj = involved_object(policy)
        if policy.spec.router.provider in ("nginx", "dry-run"):
            assert obj is None
        else:
            assert obj is not None and obj["name"] and obj["namespace"] == \
                policy.spec.target.namespace


def test_rollback_is_recorded_as_a_warning_event(api: KubeApiDouble) -> None:
    policy = load_policy(ROOT / "policies" / "istio-canary.yaml")
    recorder = KubeEventRecorder(api.api_client())
    notice = Notice(rollout=policy.name, kind="rollback",
                    text="error-rate ratio 2.3 [1.6, 3.4] exceeds tolerance 1.25")
    assert recorder.notify(policy, notice) == 1
    assert recorder.drain(10)
    recorder.close()
    assert recorder.sent == 1
    posts = [r for r in api.requests if r.method == "POST"]
    assert posts and posts[0].path == "/api/v1/namespaces/shop/events"
    assert posts[0].status == 201


def test_failing_api_server_is_counted_not_raised(api: KubeApiDouble) -> None:
    policy = load_policy(ROOT / "policies" / "knative.yaml")
    api.inject(500, count=None)
    recorder = FanOut(KubeEventRecorder(api.api_client()))
    recorder.notify(policy, Notice(rollout=policy.name, kind="promote", text="ok"))
    assert recorder.drain(10)
    recorder.close()
    assert recorder.sinks[0].failed == 1 and recorder.sinks[0].sent == 0


def test_event_body_shape() -> None:
    policy = load_policy(ROOT / "policies" / "seldon.yaml")
    body = event_body(policy, Notice(rollout="x", kind="succeeded", text="done"),
                      datetime(2026, 1, 1, tzinfo=UTC))
    assert body is not None
    assert body["involvedObject"]["kind"] == "SeldonDeployment"
    assert body["type"] == "Normal" and body["reason"] == "CanarySucceeded"
    assert body["firstTimestamp"] == "2026-01-01T00:00:00Z"
