"""The API server test double itself, driven through the real kubernetes client, and the schema
validation it applies (so a router writing a wrongly shaped object cannot pass)."""

from __future__ import annotations

import copy
import json

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.routers.conftest import NS, VIRTUAL_SERVICE, deployment
from tests.support.k8s_schemas import errors
from tests.support.kube_api_double import json_patch, merge_patch

G, V, P = "networking.istio.io", "v1", "virtualservices"


def test_get_put_patch_create_and_conflicts(double):
    api = client.CustomObjectsApi(double.api_client())
    double.seed(VIRTUAL_SERVICE)
    obj = api.get_namespaced_custom_object(G, V, NS, P, "checkout")
    rv = obj["metadata"]["resourceVersion"]
    obj["spec"]["hosts"].append("extra")
    put = api.replace_namespaced_custom_object(G, V, NS, P, "checkout", obj)
    assert int(put["metadata"]["resourceVersion"]) > int(rv)
    assert put["metadata"]["generation"] == 2
    with pytest.raises(ApiException) as stale:
        api.replace_namespaced_custom_object(G, V, NS, P, "checkout", obj)  # old rv
    assert stale.value.status == 409
    assert "has been modified" in json.loads(stale.value.body)["message"]
    patched = api.patch_namespaced_custom_object(
        G, V, NS, P, "checkout", [{"op": "replace", "path": "/spec/hosts/0", "value": "x"}],
        _content_type="application/json-patch+json")
    assert patched["spec"]["hosts"][0] == "x"
    patched = api.patch_namespaced_custom_object(
        G, V, NS, P, "checkout", {"metadata": {"annotations": {"team": None}}},
        _content_type="application/merge-patch+json")
    assert "team" not in patched["metadata"]["annotations"]
    with pytest.raises(ApiException) as missing:
        api.get_namespaced_custom_object(G, V, NS, P, "nope")
    assert missing.value.status == 404
    new = copy.deepcopy(VIRTUAL_SERVICE)
    new["metadata"] = {"name": "other"}
    api.create_namespaced_custom_object(G, V, NS, P, new)
    with pytest.raises(ApiException) as exists:
        api.create_namespaced_custom_object(G, V, NS, P, new)
    assert (exists.value.status, json.loads(exists.value.body)["reason"]) == (409, "AlreadyExists")
    listed = api.list_namespaced_custom_object(G, V, NS, P)
    assert sorted(i["metadata"]["name"] for i in listed["items"]) == ["checkout", "other"]


def test_invalid_objects_are_refused_with_422(double):
    api = client.CustomObjectsApi(double.api_client())
    double.seed(VIRTUAL_SERVICE)
    with pytest.raises(ApiException) as bad:
        api.patch_namespaced_custom_object(
            G, V, NS, P, "checkout",
            {"spec": {"http": [{"route": [{"destination": {"host": "a"}, "weight": "20"}]}]}},
            _content_type="application/merge-patch+json")
    assert bad.value.status == 422
    assert double.get("networking.istio.io/v1", "VirtualService", NS, "checkout")["spec"] == \
        VIRTUAL_SERVICE["spec"]


def test_deployment_scale_subresource_and_faults(double):
    apps = client.AppsV1Api(double.api_client())
    double.seed(deployment("api-v1", "v1", 3))
    scale = apps.read_namespaced_deployment_scale("api-v1", NS)
    assert scale.spec.replicas == 3
    apps.patch_namespaced_deployment_scale("api-v1", NS, {"spec": {"replicas": 5}},
                                           _content_type="application/merge-patch+json")
    assert double.get("apps/v1", "Deployment", NS, "api-v1")["spec"]["replicas"] == 5
    fault = double.inject(503, count=2, method="GET")
    for _ in range(2):
        with pytest.raises(ApiException) as e:
            apps.read_namespaced_deployment("api-v1", NS)
        assert e.value.status == 503
    assert apps.read_namespaced_deployment("api-v1", NS).spec.replicas == 5
    assert fault.hits == 2


def test_patch_helpers():
    assert merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}) == {"a": {"c": 2,
                                                                                     "d": 3}}
    doc = {"l": [1, 2], "o": {"k": "v"}}
    out = json_patch(doc, [{"op": "add", "path": "/l/-", "value": 3},
                           {"op": "remove", "path": "/l/0"},
                           {"op": "copy", "from": "/o/k", "path": "/o/k2"},
                           {"op": "move", "from": "/o/k", "path": "/m"},
                           {"op": "test", "path": "/m", "value": "v"}])
    assert out == {"l": [2, 3], "o": {"k2": "v"}, "m": "v"}


def test_schema_validation_catches_misshapen_objects():
    vs = copy.deepcopy(VIRTUAL_SERVICE)
    assert errors(vs) == []
    vs["spec"]["http"][1]["mirrorPercentage"] = 50  # must be {value: 50}
    vs["spec"]["http"][1]["mirrorPrecent"] = 1      # would be pruned silently by the API server
    found = errors(vs)
    assert any("mirrorPercentage" in e and "object" in e for e in found)
    assert any("mirrorPrecent" in e for e in found)
    dep = deployment("a", "v1", 1)
    dep["spec"]["replicas"] = "2"
    assert any("replicas" in e for e in errors(dep))
