"""Least privilege on the real API server: each router, run as a ServiceAccount that has only its
provider's ClusterRole from deploy/kustomize/components/<provider>/rbac.yaml, does a whole
rollout on a real-world object. API discovery (served versions) needs nothing more: the
`system:discovery` ClusterRole grants it to every authenticated client; the Gateway API mirror's
server-side dry run is a patch."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from analyzer.routers.base import RouterError
from analyzer.routers.factory import build_router
from tests.routers.conftest import make_policy
from tests.routers.realworld import seed

pytestmark = pytest.mark.kube

COMPONENTS = Path(__file__).resolve().parents[2] / "deploy" / "kustomize" / "components"


def grant(cluster, namespace: str, component: str) -> str:
    """The component's ClusterRole (renamed per test), bound in `namespace` to a ServiceAccount
    user; returns that user."""
    docs = yaml.safe_load_all((COMPONENTS / component / "rbac.yaml").read_text())
    role = next(d for d in docs if d and d["kind"] == "ClusterRole")
    name = f"{role['metadata']['name']}-{namespace}"
    cluster.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                    {**role, "metadata": {"name": name}})
    user = f"system:serviceaccount:{namespace}:canary-analyzer"
    cluster.request("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/"
                            "rolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "canary-analyzer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": "canary-analyzer",
                      "namespace": namespace}]})
    return user


@pytest.mark.parametrize(("component", "rel", "router", "target", "mirror"), [
    ("istio", "istio/bookinfo-reviews-80-20.yaml",
     {"provider": "istio", "virtualService": "reviews", "destinationRule": "reviews",
      "stableSubset": "v1", "canarySubset": "v2", "stickySessions": {}}, {}, 20),
    ("gateway-api", "gateway-api/gateway-api-request-mirroring.yaml",
     {"provider": "gateway-api", "httpRoute": "http-filter-mirror", "stableService": "foo-v1",
      "canaryService": "foo-v3", "stickySessions": {}}, {}, 25),
    ("nginx-ingress", "nginx-ingress/ingress-nginx-affinity-cookie.yaml",
     {"provider": "nginx-ingress", "ingress": "nginx-test", "canaryService": "http-svc-2",
      "stickySessions": True}, {"service": "http-svc"}, None),
    ("seldon-v2", "seldon-v2/ab-default-model.yaml",
     {"provider": "seldon-v2", "experiment": "experiment-sample"},
     {"stable": "iris", "canary": "iris2"}, 10),
])
def test_a_rollout_with_the_components_role_only(kube_cluster, kube_namespace, component, rel,
                                                 router, target, mirror):
    seed(kube_cluster, kube_namespace, rel)
    policy = make_policy(router, namespace=kube_namespace, **target)
    user = f"system:serviceaccount:{kube_namespace}:canary-analyzer"
    with pytest.raises(RouterError, match="not allowed"):  # nothing granted yet
        build_router(policy, api_client=kube_cluster.api_client(user=user)).get_weight()
    assert grant(kube_cluster, kube_namespace, component) == user
    r = build_router(policy, api_client=kube_cluster.api_client(user=user))
    r.get_weight()
    for w in (10, 50):
        r.set_weight(w)
        assert r.get_weight().canary_weight == w
    if component != "seldon-v2":
        r.set_header_route({"header": "x-canary", "value": "1"})
    r.reset()
    if mirror is not None:
        r.set_mirror(mirror)
        assert r.get_weight().mirror_percent == mirror
    r.reset()
    assert r.get_weight().canary_weight == 0
