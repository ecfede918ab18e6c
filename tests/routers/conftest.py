"""Fixtures for the router tests: the real API server (tests/support/kube_cluster.py), one fresh
namespace per test, policies per provider and realistic seed objects.

    def test_x(kube):                       # a Kube: namespace, objects, proxy, routers
        kube.seed(VIRTUAL_SERVICE)          # created by the admin in kube.ns (defaults applied)
        router = kube.router(ISTIO)         # the router under test, through kube.proxy
        router.set_weight(20)
        kube.get(*VS)                       # read back from the server, as the admin
        kube.modify(*VS, fn)                # a foreign writer
        kube.proxy.requests                 # what the router sent (and the server answered)

The seed objects name the namespace `shop` (NS): `kube.seed()` puts them in the test's own
namespace, and `--current` files (offline, no server) keep `shop`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from analyzer.policy import Policy
from analyzer.routers.base import Router
from analyzer.routers.factory import build_router
from tests.support.fault_proxy import FaultProxy
from tests.support.kube_cluster import KubeCluster
from tests.support.kube_objects import ClusterObjects, Obj

NS = "shop"


def make_policy(router: dict[str, Any], *, strategy: dict[str, Any] | None = None,
                service: str = "checkout", stable: str = "v1", canary: str = "v2",
                namespace: str = NS) -> Policy:
    return Policy.model_validate({
        "metadata": {"name": "test"},
        "spec": {
            "target": {"namespace": namespace, "service": service, "stable": stable,
                       "canary": canary},
            "router": router,
            "strategy": strategy or {"steps": [10, 50]},
            # routers do not read metrics; invented traffic is allowed next to them here only
            "metrics": {"source": "simulate", "allowSimulatedMetrics": True},
        },
    })


POLICY_ARGS = ("strategy", "service", "stable", "canary")
ROUTER_ARGS = ("dry_run", "current_object", "conflict_retries")


class Kube:
    """One test's view of the real API server: its namespace, the admin's raw objects there,
    a FaultProxy the routers talk through (its request log shows what they sent), and routers
    built for the namespace, as the admin or as an impersonated user."""

    def __init__(self, cluster: KubeCluster, namespace: str, proxy: FaultProxy) -> None:
        self.cluster = cluster
        self.ns = namespace
        self.proxy = proxy
        self.objects = ClusterObjects(cluster, namespace)
        self._clients: list[Any] = []

    def seed(self, obj: Obj) -> Obj:
        return self.objects.seed(obj)

    def get(self, api_version: str, kind: str, name: str) -> Obj | None:
        return self.objects.get(api_version, kind, name)

    def modify(self, api_version: str, kind: str, name: str, change: Any) -> Obj:
        return self.objects.modify(api_version, kind, name, change)

    def policy(self, router: dict[str, Any], **kw: Any) -> Policy:
        return make_policy(router, namespace=self.ns, **kw)

    def api_client(self, *, user: str | None = None) -> Any:
        """A client through the proxy, as the admin or impersonating user."""
        api = self.cluster.api_client(user=user, host=self.proxy.url)
        self._clients.append(api)
        return api

    def router(self, router: dict[str, Any], *, user: str | None = None, **kw: Any) -> Router:
        """build_router for `router` (a policy's spec.router) in this namespace. Policy fields
        (strategy, service, stable, canary) and build_router's (dry_run, current_object,
        conflict_retries) pass through."""
        policy = self.policy(router, **{k: v for k, v in kw.items() if k in POLICY_ARGS})
        return build_router(policy, api_client=self.api_client(user=user),
                            **{k: v for k, v in kw.items() if k in ROUTER_ARGS})

    def writes(self) -> list[tuple[str, str, int | None]]:
        """(method, last path segment, status) of every write the routers sent via the proxy."""
        return [(r.method, r.path.rsplit("/", 1)[1], r.status) for r in self.proxy.requests
                if r.method in ("POST", "PUT", "PATCH", "DELETE")]

    def close(self) -> None:
        for api in self._clients:
            api.close()


@pytest.fixture
def kube(kube_cluster: KubeCluster, kube_namespace: str,
         kube_fault_proxy: FaultProxy) -> Iterator[Kube]:
    k = Kube(kube_cluster, kube_namespace, kube_fault_proxy)
    try:
        yield k
    finally:
        k.close()


@pytest.fixture
def istio(kube: Kube) -> Kube:
    """`kube` with the VirtualService and DestinationRule below seeded."""
    kube.seed(VIRTUAL_SERVICE)
    kube.seed(DESTINATION_RULE)
    return kube


# ---------------------------------------------------------------------------- seed objects

VIRTUAL_SERVICE: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {
        "name": "checkout", "namespace": NS,
        "labels": {"app": "checkout"},
        "annotations": {"team": "payments", "ops.example.com/ticket": "OPS-1234"},
    },
    "spec": {
        "hosts": ["checkout", "checkout.example.com"],
        "gateways": ["mesh", "shop/public"],
        "http": [
            {"name": "admin", "match": [{"uri": {"prefix": "/admin"}}],
             "route": [{"destination": {"host": "checkout-admin", "port": {"number": 8080}}}],
             "timeout": "5s"},
            {"name": "primary", "retries": {"attempts": 3, "perTryTimeout": "2s"},
             "route": [{"destination": {"host": "checkout", "subset": "stable"}, "weight": 100,
                        "headers": {"response": {"set": {"x-served-by": "checkout"}}}}]},
            {"name": "legacy", "route": [{"destination": {"host": "checkout-legacy"}}]},
        ],
    },
}

DESTINATION_RULE: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "DestinationRule",
    "metadata": {"name": "checkout", "namespace": NS},
    "spec": {"host": "checkout", "subsets": [
        {"name": "stable", "labels": {"version": "v1"}},
        {"name": "canary", "labels": {"version": "v2"}},
    ]},
}

ISTIO = {"provider": "istio", "virtualService": "checkout", "destinationRule": "checkout",
         "stableSubset": "stable", "canarySubset": "canary"}


def _ingress(name: str, service: str, annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": "frontend"},
                     "annotations": annotations},
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}],
            "rules": [{"host": "shop.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": service, "port": {"number": 80}}}},
                {"path": "/static", "pathType": "Prefix",
                 "backend": {"service": {"name": "static", "port": {"name": "http"}}}},
            ]}}],
        },
    }


STABLE_INGRESS = _ingress("frontend", "frontend",
                          {"nginx.ingress.kubernetes.io/proxy-body-size": "8m"})
NGINX_INGRESS = {"provider": "nginx-ingress", "ingress": "frontend",
                 "canaryService": "frontend-canary"}

KNATIVE_SERVICE: dict[str, Any] = {
    "apiVersion": "serving.knative.dev/v1", "kind": "Service",
    "metadata": {"name": "hello", "namespace": NS, "annotations": {"owner": "web"}},
    "spec": {
        "template": {"metadata": {"name": "hello-v2"},
                     "spec": {"containers": [{"image": "ghcr.io/example/hello:2"}]}},
        "traffic": [
            {"latestRevision": True, "percent": 100},
            {"revisionName": "hello-v0", "tag": "old", "percent": 0},
        ],
    },
}
KNATIVE = {"provider": "knative", "knativeService": "hello", "stableRevision": "hello-v1",
           "canaryRevision": "hello-v2"}

SELDON_DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "machinelearning.seldon.io/v1", "kind": "SeldonDeployment",
    "metadata": {"name": "iris", "namespace": NS, "annotations": {"seldon.io/engine": "x"}},
    "spec": {"name": "iris", "predictors": [
        {"name": "v1", "replicas": 2, "traffic": 100,
         "graph": {"name": "classifier", "implementation": "SKLEARN_SERVER",
                   "modelUri": "gs://models/iris/v1"}},
        {"name": "v2", "replicas": 1, "traffic": 0,
         "graph": {"name": "classifier", "implementation": "SKLEARN_SERVER",
                   "modelUri": "gs://models/iris/v2"}},
        {"name": "explainer-test", "replicas": 1, "traffic": 0,
         "graph": {"name": "e", "type": "MODEL"}},
    ]},
}
SELDON = {"provider": "seldon", "seldonDeployment": "iris"}


def deployment(name: str, version: str, replicas: int) -> dict[str, Any]:
    labels = {"app": "api", "version": version}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "annotations": {"deploy/by": "ci"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "api",
                                                       "image": f"example/api:{version}"}]}}},
    }


KUBERNETES = {"provider": "kubernetes", "stableDeployment": "api-v1",
              "canaryDeployment": "api-v2"}

HTTP_ROUTE: dict[str, Any] = {
    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
    "metadata": {"name": "store", "namespace": NS, "annotations": {"a": "b"}},
    "spec": {
        "parentRefs": [{"name": "public-gw"}],
        "hostnames": ["store.example.com"],
        "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
             "backendRefs": [{"name": "store-v1", "port": 8080, "weight": 1}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/docs"}}],
             "backendRefs": [{"name": "docs", "port": 80}]},
        ],
    },
}
GATEWAY = {"provider": "gateway-api", "httpRoute": "store", "stableService": "store-v1",
           "canaryService": "store-v2", "port": 8080}

TRAFFIC_SPLIT: dict[str, Any] = {
    "apiVersion": "split.smi-spec.io/v1alpha4", "kind": "TrafficSplit",
    "metadata": {"name": "podinfo", "namespace": NS, "annotations": {"x": "y"}},
    "spec": {"service": "podinfo", "backends": [
        {"service": "podinfo-primary", "weight": 100},
        {"service": "podinfo-old", "weight": 0},
    ]},
}
SMI = {"provider": "smi", "trafficSplit": "podinfo", "rootService": "podinfo",
       "stableService": "podinfo-primary", "canaryService": "podinfo-canary"}
