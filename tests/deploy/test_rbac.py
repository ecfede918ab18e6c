"""Least privilege: each provider's ClusterRole grants exactly what its router calls.

Three sources must agree per provider: the ClusterRole in deploy/kustomize/components/<p>/,
the router's declared `PERMISSIONS`, and a static scan of the code (rbac_scan.py: router module
-> KubeObjects methods -> kubernetes client calls -> RBAC verbs).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from tests.deploy import rbac_scan
from tests.deploy.conftest import COMPONENTS, KUSTOMIZE

ROUTERS = rbac_scan.ROUTERS


def _role(component: str) -> dict:
    docs = yaml.safe_load_all((KUSTOMIZE / "components" / component / "rbac.yaml").read_text())
    roles = [d for d in docs if d and d["kind"] == "ClusterRole"]
    assert len(roles) == 1
    return roles[0]


def _module_path(component: str) -> Path:
    module = {"kubernetes": "replicas"}.get(component, component.replace("-", "_"))
    return ROUTERS / f"{module}.py"


@pytest.fixture(scope="module")
def kube_scan() -> rbac_scan.KubeScan:
    return rbac_scan.scan_kube()


def test_every_router_module_exists() -> None:
    missing = [c for c in COMPONENTS if not _module_path(c).is_file()]
    assert not missing, f"router modules missing for components: {missing}"


@pytest.mark.parametrize("component", COMPONENTS)
def test_role_equals_declared_permissions(component: str) -> None:
    mod = importlib.import_module(f"analyzer.routers.kube.{_module_path(component).stem}")
    declared = rbac_scan.rules_of_permissions(mod.PERMISSIONS)
    granted = rbac_scan.rules_of_clusterrole(_role(component))
    assert granted == declared, (
        f"ClusterRole canary-analyzer-{component} != PERMISSIONS of {mod.__name__}: "
        f"extra {sorted(granted - declared)}, missing {sorted(declared - granted)}")


@pytest.mark.parametrize("component", COMPONENTS)
def test_role_equals_what_the_code_calls(component: str, kube_scan: rbac_scan.KubeScan) -> None:
    called = rbac_scan.scan_router(_module_path(component), kube_scan)
    granted = rbac_scan.rules_of_clusterrole(_role(component))
    # granted - called: privilege nobody uses; called - granted: a 403 in the cluster
    assert granted == called, (
        f"{component}: granted but never called {sorted(granted - called)}; "
        f"called but not granted {sorted(called - granted)}")


@pytest.mark.parametrize("component", COMPONENTS)
def test_the_client_can_issue_every_call(component: str,
                                         kube_scan: rbac_scan.KubeScan) -> None:
    """kube.py sends built-in kinds through typed APIs and the rest through CustomObjectsApi:
    each scanned rule maps to a client call kube.py really makes."""
    typed = {(c.group, c.resource, c.verb) for c in kube_scan.client_calls
             if c.group != "{group}"}
    typed_groups = {g for g, _, _ in typed}
    custom = {c.verb for c in kube_scan.client_calls if c.group == "{group}"}
    for g, res, verb in rbac_scan.scan_router(_module_path(component), kube_scan):
        if g in typed_groups:
            assert (g, res, verb) in typed, (component, g, res, verb)
        else:
            assert verb in custom, (component, g, res, verb)


def test_roles_are_narrow() -> None:
    """No wildcards, no verbs outside the issue's list, create only on ingresses."""
    allowed = {"get", "list", "watch", "patch", "update", "create"}
    for c in COMPONENTS:
        for g, res, verb in rbac_scan.rules_of_clusterrole(_role(c)):
            assert "*" not in (g, res, verb), c
            assert verb in allowed, (c, verb)
            if verb == "create":
                assert (g, res) == ("networking.k8s.io", "ingresses"), c
    for r in _role("nginx-ingress")["rules"]:
        assert "resourceNames" not in r  # create cannot be limited by name (docs/deploy.md)


def test_events_role() -> None:
    docs = yaml.safe_load_all((KUSTOMIZE / "base" / "rbac-events.yaml").read_text())
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    granted = rbac_scan.rules_of_clusterrole(role)
    assert granted == {("", "events", "create")}
    used = rbac_scan.event_calls()
    assert used, "the scan found no Event creation in analyzer/ (daemon/kube_events.py makes them)"
    assert used <= granted, f"code creates events through {used - granted}; update the role"


def test_scan_detects_an_extra_call(tmp_path: Path, kube_scan: rbac_scan.KubeScan) -> None:
    """The scan is not blind: a router that also writes a DestinationRule shows up."""
    src = _module_path("istio").read_text()
    extra = src + (
        "\n\nclass _Extra(SingleObjectRouter):\n"
        "    def f(self, ns: str) -> None:\n"
        "        self.x = ObjectRef(API_VERSION, 'DestinationRule', 'destinationrules', ns, 'n')\n"
        "        self.objects.update(self.x, lambda o: None)\n")
    p = tmp_path / "istio.py"
    p.write_text(extra)
    called = rbac_scan.scan_router(p, kube_scan)
    assert ("networking.istio.io", "destinationrules", "patch") in called
    assert ("networking.istio.io", "destinationrules", "patch") not in \
        rbac_scan.scan_router(_module_path("istio"), kube_scan)


def test_client_call_mapping() -> None:
    cc = rbac_scan.client_call
    assert (cc("read_namespaced_deployment_scale").resource,
            cc("read_namespaced_deployment_scale").verb) == ("deployments/scale", "get")
    assert cc("replace_namespaced_deployment").verb == "update"
    assert cc("list_namespaced_ingress").verb == "list"
    assert cc("create_namespaced_event").group in ("", "events.k8s.io")
    assert cc("patch_namespaced_custom_object").group == "{group}"
    assert cc("not_a_client_method") is None


def test_controller_role_equals_its_declared_permissions() -> None:
    """The RolloutPolicy controller's ClusterRole (plus the base's Event role) grants exactly
    PERMISSIONS of analyzer/daemon/controller/kube.py: read and watch RolloutPolicies, patch
    them and their status, get and watch each canaryRef kind, create Events."""
    from analyzer.daemon.controller.kube import PERMISSIONS

    declared = {(g, r, v) for g, r, verbs in PERMISSIONS for v in verbs}
    granted = set()
    for f in ("rbac-controller.yaml", "rbac-events.yaml"):
        docs = yaml.safe_load_all((KUSTOMIZE / "base" / f).read_text())
        role = next(d for d in docs if d["kind"] == "ClusterRole")
        granted |= rbac_scan.rules_of_clusterrole(role)
    assert granted == declared, (f"extra {sorted(granted - declared)}, "
                                 f"missing {sorted(declared - granted)}")
    assert not any(v in ("delete", "update", "create", "*") for g, r, v in granted
                   if r != "events")
