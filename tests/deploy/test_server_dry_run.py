"""Every overlay passes `kubectl apply -k deploy/kustomize/overlays/<each> --dry-run=server`
against the real API server: the server runs its own validation, defaulting and admission on
every object (the ServiceMonitor against the Prometheus Operator's CRD, kept in
tests/fixtures/crds/), and stores nothing. The namespace exists first (the session applies the
base's Namespace, ServiceAccount and RBAC for real: `kube_engine_rbac`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import KUSTOMIZE, OVERLAYS
from tests.support.k8s_schemas import FIXTURE_CRDS
from tests.support.kube_cluster import KubeCluster
from tests.support.kube_deploy import ENGINE_NAMESPACE, EngineRbac

pytestmark = pytest.mark.kube


@pytest.fixture(scope="module")
def cluster(kube_cluster: KubeCluster, kube_engine_rbac: EngineRbac) -> KubeCluster:
    """The session cluster with the ServiceMonitor CRD and deploy/'s namespace."""
    assert kube_cluster.install_crds(FIXTURE_CRDS) == ["servicemonitors.monitoring.coreos.com"]
    return kube_cluster


def _resource(obj: dict[str, Any]) -> str:
    """How kubectl names an object in its output: `deployment.apps/canary-analyzer`."""
    group = obj["apiVersion"].rpartition("/")[0]
    kind = obj["kind"].lower()
    return f"{kind}.{group}/{obj['metadata']['name']}" if group else \
        f"{kind}/{obj['metadata']['name']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_server_dry_run(cluster: KubeCluster, rendered: dict,
                                       overlay: str) -> None:
    proc = cluster.kubectl("apply", "-k", str(KUSTOMIZE / "overlays" / overlay),
                           "--dry-run=server", check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert all(line.endswith("(server dry run)") for line in lines), lines
    named = {line.split()[0] for line in lines}
    assert named == {_resource(o) for o in rendered[overlay]}
    # a dry run stores nothing
    got = cluster.kubectl("get", "deployments,servicemonitors,configmaps", "-n",
                          ENGINE_NAMESPACE, "-o", "name")
    assert got.stdout.strip() == ""


def test_server_dry_run_is_not_blind(cluster: KubeCluster, tmp_path: Path) -> None:
    """An overlay whose ServiceMonitor interval is not a duration: the CRD's pattern refuses
    it, and kubectl names the object and the field."""
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(KUSTOMIZE / "overlays" / "single", tmp_path)],
        "patches": [{"target": {"kind": "ServiceMonitor"}, "patch": yaml.safe_dump([
            {"op": "replace", "path": "/spec/endpoints/0/interval", "value": "30 seconds"}])}],
    }))
    proc = cluster.kubectl("apply", "-k", str(tmp_path), "--dry-run=server", check=False)
    assert proc.returncode != 0
    assert 'The ServiceMonitor "canary-analyzer" is invalid' in proc.stderr
    assert "spec.endpoints[0].interval" in proc.stderr and "30 seconds" in proc.stderr
