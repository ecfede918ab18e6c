"""deploy/kustomize on the real test API server: rendering, the engine's RBAC applied for real,
and access checks.

- `kubectl_kustomize(dir)`: the objects `kubectl kustomize dir` renders (cached per directory),
  exactly as a user renders them (no extra flags).
- `scratch_overlay(dir, components)`: a kustomization of the base plus provider components.
- `apply_engine_rbac(cluster, dir)`: renders the base with EVERY provider component and applies
  its Namespace, ServiceAccount, ClusterRoles and ClusterRoleBindings with `kubectl apply`, then
  waits until the server grants the ServiceAccount every rule (RBAC caches lag a write by a
  moment). Routers and the event recorder then run as `ENGINE_USER` by impersonation, holding
  exactly what deploy/ grants.
- `role_without(role, group, resource, verb)`: a copy of a ClusterRole missing one verb (to show
  the verb is needed: the router must fail with a clear 403).
- `can(cluster, user, verb, group, resource, namespace)`: a SubjectAccessReview.
"""

from __future__ import annotations

import copy
import functools
import os
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from tests.support.kube_cluster import REPO, ClusterError, KubeCluster, kubectl_binary

KUSTOMIZE = REPO / "deploy" / "kustomize"
COMPONENTS = sorted(p.name for p in (KUSTOMIZE / "components").iterdir() if p.is_dir())
ENGINE_NAMESPACE = "canary-analyzer"  # the base's namespace
ENGINE_SERVICE_ACCOUNT = "canary-analyzer"
ENGINE_USER = f"system:serviceaccount:{ENGINE_NAMESPACE}:{ENGINE_SERVICE_ACCOUNT}"
RBAC_KINDS = ("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding")

Rule = tuple[str, str, str]  # (API group, resource, verb)


def kubectl_kustomize(directory: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize directory` renders (a private copy)."""
    return copy.deepcopy(_kubectl_kustomize(Path(directory)))


@functools.cache  # several tests render the same directory; kubectl takes ~0.3 s a run
def _kubectl_kustomize(directory: Path) -> list[dict[str, Any]]:
    out = subprocess.run([str(kubectl_binary()), "kustomize", str(directory)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, f"kubectl kustomize {directory} failed:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def scratch_overlay(directory: Path, components: Iterable[str]) -> Path:
    """Write a kustomization in directory: the base plus the given provider components."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": ENGINE_NAMESPACE,
        # kustomize refuses absolute paths
        "resources": [os.path.relpath(KUSTOMIZE / "base", directory)],
        "components": [os.path.relpath(KUSTOMIZE / "components" / c, directory)
                       for c in components],
    }))
    return directory


def rules_of(role: dict[str, Any]) -> set[Rule]:
    """Every (group, resource, verb) a ClusterRole grants."""
    return {(g, r, v) for rule in role.get("rules", []) for g in rule.get("apiGroups", [])
            for r in rule.get("resources", []) for v in rule.get("verbs", [])}


def role_without(role: dict[str, Any], group: str, resource: str, verb: str,
                 name: str) -> dict[str, Any]:
    """A copy of role named `name` that does not grant `verb` on group/resource."""
    if (group, resource, verb) not in rules_of(role):
        raise ValueError(f"{role['metadata']['name']} does not grant {verb} on {resource}")
    out = copy.deepcopy(role)
    out["metadata"] = {"name": name}
    rules = []
    for rule in out["rules"]:
        if group in rule["apiGroups"] and resource in rule["resources"]:
            if len(rule["apiGroups"]) != 1 or len(rule["resources"]) != 1:
                raise ValueError(f"split the rule {rule} first")
            rule["verbs"] = [v for v in rule["verbs"] if v != verb]
        if rule["verbs"]:
            rules.append(rule)
    out["rules"] = rules
    return out


def can(cluster: KubeCluster, user: str, verb: str, group: str, resource: str,
        namespace: str) -> bool:
    """The server's answer to: may `user` do `verb` on group/resource in namespace?"""
    review = cluster.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "resourceAttributes": {
            "namespace": namespace, "verb": verb, "group": group, "resource": resource}}})
    return bool(review["status"].get("allowed"))


def wait_for_access(cluster: KubeCluster, user: str, expected: dict[Rule, bool],
                    namespace: str, timeout: float = 15.0) -> None:
    """Until the server answers every (group, resource, verb) for user as expected."""
    deadline = time.monotonic() + timeout
    pending = dict(expected)
    while pending:
        pending = {rule: want for rule, want in pending.items()
                   if can(cluster, user, rule[2], rule[0], rule[1], namespace) != want}
        if pending and time.monotonic() > deadline:
            raise ClusterError(f"RBAC for {user} not as expected after {timeout:g} s: {pending}")
        if pending:
            time.sleep(0.05)


class EngineRbac:
    """What `apply_engine_rbac` applied: the roles by name, the identity to impersonate."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects
        self.user = ENGINE_USER
        self.roles = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ClusterRole"}

    def role(self, component: str) -> dict[str, Any]:
        """The ClusterRole of a provider component (`istio`) or `events`."""
        return copy.deepcopy(self.roles[f"canary-analyzer-{component}"])

    def granted(self) -> set[Rule]:
        return set().union(*(rules_of(r) for r in self.roles.values()))


def apply_engine_rbac(cluster: KubeCluster, directory: Path) -> EngineRbac:
    """Apply deploy/'s Namespace, ServiceAccount and every ClusterRole/Binding (base plus all
    provider components) with kubectl; wait until the server grants them (see module doc)."""
    objects = [o for o in kubectl_kustomize(scratch_overlay(directory, COMPONENTS))
               if o["kind"] in RBAC_KINDS]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    rbac = EngineRbac(objects)
    bound = {b["roleRef"]["name"] for b in objects if b["kind"] == "ClusterRoleBinding"
             and any(s.get("kind") == "ServiceAccount" and s["name"] == ENGINE_SERVICE_ACCOUNT
                     and s.get("namespace") == ENGINE_NAMESPACE for s in b["subjects"])}
    if bound != set(rbac.roles):
        raise ClusterError(f"deploy/ binds {sorted(bound)} to the ServiceAccount but defines "
                           f"{sorted(rbac.roles)}")
    wait_for_access(cluster, ENGINE_USER, dict.fromkeys(rbac.granted(), True), "default")
    return rbac
