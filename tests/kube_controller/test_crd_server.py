"""deploy/'s RolloutPolicy CRD on the real API server: accepted (structural, every CEL rule
compiles within the cost budget), every reference policy in policies/ is a valid RolloutPolicy,
and the broken-policy corpus is refused: by kubectl or the server where OpenAPI and CEL can
say it, by the controller otherwise (the list below is what docs/engine.md names as
controller-only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from analyzer.daemon.controller.policies import parse
from analyzer.policy import read_yaml
from tests.support.kube_cluster import KubeCluster

REPO = Path(__file__).resolve().parents[2]
POLICIES = sorted((REPO / "policies").glob("*.yaml"))
BROKEN = sorted((REPO / "tests" / "policy" / "broken").glob("*.yaml"))

#: refused by `canary validate` but accepted by the CRD: checked by the controller alone
CONTROLLER_ONLY = {
    "bad-pause",  # steps: an untyped node, CEL cannot see it
    "steps-not-increasing",
    "weight-over-100",
    "huge-duration",  # duration bounds: a duration is a string to OpenAPI
    "interval-too-long",
    "envoy-gateway-per-rule",  # metrics_fit_problems and the Envoy Gateway rules
    "nginx-ingress-version-label",
    "seldon-v2-latency",
    "window-overlaps-interval",  # duration comparison: durations are strings to OpenAPI
    "severe-ratio-within-tolerance",  # against each check's tolerance or its model default
}


@pytest.fixture(scope="module")
def cluster(rolloutpolicy_crd: KubeCluster) -> KubeCluster:
    return rolloutpolicy_crd


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.stem)
def test_every_reference_policy_is_a_valid_rolloutpolicy(cluster: KubeCluster,
                                                         kube_namespace: str,
                                                         path: Path) -> None:
    proc = cluster.kubectl("apply", "--dry-run=server", "-n", kube_namespace, "-f", str(path),
                           check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("created (server dry run)")


def test_the_corpus_is_refused_by_the_server_or_the_controller(cluster: KubeCluster,
                                                              kube_namespace: str) -> None:
    accepted = set()
    for path in BROKEN:
        proc = cluster.kubectl("apply", "--dry-run=server", "-n", kube_namespace, "-f",
                               str(path), check=False)
        if proc.returncode == 0:
            accepted.add(path.stem)
            # the controller refuses what the server let through, naming the field
            raw = read_yaml(path.read_text())
            raw["metadata"]["namespace"] = kube_namespace
            policy, problem = parse(raw)
            assert policy is None and problem, path.stem
        else:
            assert "created" not in proc.stdout, path.stem
    assert accepted == CONTROLLER_ONLY


@pytest.mark.parametrize(("change", "expected"), [
    ({"router": {"provider": "istio", "virtualService": "vs", "canaryDeployment": "x"}},
     "canaryDeployment applies to provider kubernetes only"),
    ({"strategy": {"type": "mirror"}}, "a mirror strategy needs mirrorPercent"),
    ({"target": {"service": "api", "canaryRef": {"kind": "SeldonDeployment", "name": "m"}}},
     "predictor is required for a SeldonDeployment canaryRef"),
    ({"analysis": {"interval": "30 seconds"}}, "spec.analysis.interval"),
])
def test_the_server_refuses_a_bad_object_naming_the_rule(cluster: KubeCluster,
                                                         kube_namespace: str, change: dict,
                                                         expected: str) -> None:
    import yaml

    from tests.kube_controller.conftest import rollout_policy

    obj = rollout_policy()
    obj["spec"].update(change)
    proc = cluster.kubectl("apply", "--dry-run=server", "-n", kube_namespace, "-f", "-",
                           input=yaml.safe_dump(obj), check=False)
    assert proc.returncode != 0
    assert 'The RolloutPolicy "api" is invalid' in proc.stderr and expected in proc.stderr


def test_status_is_a_subresource(cluster: KubeCluster, kube_namespace: str) -> None:
    """A user's write of the object does not touch status (only the controller's patch of
    /status does): `kubectl apply` of the whole object never erases where a rollout is."""
    from tests.kube_controller.conftest import RP, rollout_policy
    from tests.support.kube_objects import ClusterObjects

    objects = ClusterObjects(cluster, kube_namespace)
    obj = rollout_policy()
    obj["status"] = {"phase": "Succeeded"}
    stored = objects.seed(obj)
    assert "status" not in stored
    path = objects.path(*RP, "api") + "/status"
    cluster.request("PATCH", path, {"status": {"phase": "Progressing", "weight": 20}},
                    content_type="application/merge-patch+json")
    got = objects.get(*RP, "api")
    assert got["status"] == {"phase": "Progressing", "weight": 20}
    table = cluster.kubectl("get", "rpol", "api", "-n", kube_namespace).stdout.split()
    assert table[:8] == ["NAME", "PHASE", "WEIGHT", "STEP", "CANARY", "LAST", "DECISION", "AGE"]
    assert table[8:11] == ["api", "Progressing", "20"]
