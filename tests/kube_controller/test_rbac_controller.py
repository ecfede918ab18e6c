"""deploy/'s RBAC for the controller, asked of the real API server for the engine's
ServiceAccount: every call the controller makes is allowed (the flows of test_controller.py
run as that account and pass), and nothing more on RolloutPolicies and canaryRef kinds."""

from __future__ import annotations

from analyzer.daemon.controller.kube import PERMISSIONS
from tests.support.kube_cluster import KubeCluster
from tests.support.kube_deploy import EngineRbac, can


def test_the_engine_account_holds_what_the_controller_calls(
        kube_cluster: KubeCluster, kube_engine_rbac: EngineRbac, kube_namespace: str) -> None:
    user = kube_engine_rbac.user
    for group, resource, verbs in PERMISSIONS:
        for verb in verbs:
            assert can(kube_cluster, user, verb, group, resource, kube_namespace), \
                (group, resource, verb)
    for group, resource, verb in [
        ("canary-analyzer.io", "rolloutpolicies", "delete"),
        ("canary-analyzer.io", "rolloutpolicies", "update"),
        ("canary-analyzer.io", "rolloutpolicies", "create"),
        ("canary-analyzer.io", "rolloutpolicies/status", "update"),
        ("apps", "deployments", "list"),  # canaryRefs are watched by name, never listed
        ("serving.knative.dev", "services", "list"),
        ("mlops.seldon.io", "models", "patch"),
    ]:
        assert not can(kube_cluster, user, verb, group, resource, kube_namespace), \
            (group, resource, verb)
