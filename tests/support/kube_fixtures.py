"""Pytest fixtures for the real-API-server tier (registered by tests/conftest.py).

- `kube_cluster` (session): ONE etcd + kube-apiserver per pytest session, started lazily by the
  first test that asks for it, with every CRD of `<repo>/../shared/schemas/*.crd.yaml`
  installed and Established. A missing binary fails the test with the command to run.
- `kube_namespace` (function): a fresh namespace name for one test (deleted afterwards; it
  stays Terminating, no namespace controller runs).
- `kube_api` (function): an admin `kubernetes.client.ApiClient`, closed afterwards.
- `kube_fault_proxy` (function): a started FaultProxy in front of the cluster, stopped after.
- `kube_engine_rbac` (session): deploy/'s Namespace, ServiceAccount and every ClusterRole and
  binding applied to the cluster once (tests/support/kube_deploy.py); run code as
  `kube_engine_rbac.user` (impersonation) to hold exactly what deploy/ grants.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.support.fault_proxy import FaultProxy
from tests.support.kube_cluster import KubeCluster, crd_files
from tests.support.kube_deploy import EngineRbac, apply_engine_rbac

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


_summary: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "kube: runs against the real kube-apiserver + etcd test cluster")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line on what the session's cluster cost, when one was started."""
    for line in _summary:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    """The session's real API server with the shared CRDs installed (see module docstring)."""
    cluster = KubeCluster()
    try:
        cluster.start()
        cluster.install_crds(*crd_files())
    except BaseException:
        cluster.stop()
        raise
    t = cluster.timings
    try:
        yield cluster
    finally:
        peak = cluster.rss_mb(peak=True)
        _summary.append(
            f"kube test cluster {cluster.version}: etcd ready in {t.etcd_ready:.1f} s, "
            f"/readyz in {t.apiserver_ready:.1f} s, {len(t.crds)} CRDs in "
            f"{t.crd_install:.1f} s (+{t.certs:.1f} s of certificates); peak RSS "
            f"kube-apiserver {peak['kube-apiserver']:.0f} MB, etcd {peak['etcd']:.0f} MB")
        cluster.stop()


def _namespace_name(node_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", node_name.lower()).strip("-")
    return f"t-{slug[:48].rstrip('-')}-{secrets.token_hex(3)}"


@pytest.fixture
def kube_namespace(kube_cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new namespace (name derived from the test's) for one test; deleted afterwards."""
    name = kube_cluster.create_namespace(_namespace_name(request.node.name))
    try:
        yield name
    finally:
        kube_cluster.delete_namespace(name)


@pytest.fixture
def kube_api(kube_cluster: KubeCluster) -> Iterator[ApiClient]:
    """An admin ApiClient for the session cluster (verifying its CA)."""
    api = kube_cluster.api_client()
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def kube_fault_proxy(kube_cluster: KubeCluster) -> Iterator[FaultProxy]:
    """A FaultProxy (TLS, certificate from the cluster CA) in front of the session cluster.

    Point a client at it with `kube_cluster.api_client(host=kube_fault_proxy.url)`.
    """
    proxy = kube_cluster.fault_proxy()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="session")
def kube_engine_rbac(kube_cluster: KubeCluster,
                     tmp_path_factory: pytest.TempPathFactory) -> EngineRbac:
    """deploy/'s ServiceAccount and ClusterRoles on the session cluster (applied once)."""
    return apply_engine_rbac(kube_cluster, tmp_path_factory.mktemp("engine-rbac"))
