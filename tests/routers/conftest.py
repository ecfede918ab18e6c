"""Fixtures for the router tests: the Kubernetes API test double (validating every write
against the real schemas), policies per provider and realistic seed objects."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from analyzer.policy import Policy
from analyzer.routers.factory import build_router
from tests.support.k8s_schemas import errors, validate
from tests.support.kube_api_double import KubeApiDouble

NS = "shop"


@pytest.fixture
def double() -> Iterator[KubeApiDouble]:
    with KubeApiDouble(validator=validate) as d:
        yield d
        # Belt and braces: the double refuses invalid writes, and every stored write is valid.
        for obj in d.written:
            assert errors(obj) == [], (obj["kind"], errors(obj))


def make_policy(router: dict[str, Any], *, strategy: dict[str, Any] | None = None,
                service: str = "checkout", stable: str = "v1", canary: str = "v2") -> Policy:
    return Policy.model_validate({
        "metadata": {"name": "test"},
        "spec": {
            "target": {"namespace": NS, "service": service, "stable": stable, "canary": canary},
            "router": router,
            "strategy": strategy or {"steps": [10, 50]},
            # routers do not read metrics; invented traffic is allowed next to them here only
            "metrics": {"source": "simulate", "allowSimulatedMetrics": True},
        },
    })


def router_for(double: KubeApiDouble, router: dict[str, Any], **kw: Any) -> Any:
    return build_router(make_policy(router, **{k: v for k, v in kw.items()
                                              if k in ("strategy", "service", "stable",
                                                       "canary")}),
                        api_client=double.api_client(),
                        **{k: v for k, v in kw.items() if k in ("dry_run", "current_object",
                                                                  "conflict_retries")})


def without(obj: dict[str, Any], *paths: str) -> dict[str, Any]:
    """A copy of obj without the dotted paths (to compare everything a router must not touch)."""
    obj = copy.deepcopy(obj)
    for path in paths:
        node = obj
        parts = path.split(".")
        for p in parts[:-1]:
            node = node[int(p)] if isinstance(node, list) else node.get(p, {})
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    return obj


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
