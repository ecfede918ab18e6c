"""Validation of rendered Kubernetes objects, strongest available check per kind.

1. Kinds defined in the upstream OpenAPI documents in ../shared/schemas/ (apps/v1 Deployment,
   networking.k8s.io/v1 NetworkPolicy, core/v1 PersistentVolumeClaim, ...): jsonschema against
   `components.schemas`, with $refs resolved inside the document, apiVersion/kind checked
   against `x-kubernetes-group-version-kind`, and made strict: objects with `properties` get
   `additionalProperties: false`, so a misspelt field fails (the API server would drop it).
2. Other built-in kinds (core/v1 Service, ServiceAccount, ConfigMap, Namespace; rbac/v1;
   policy/v1 PodDisruptionBudget): the `kubernetes` Python client's generated models (pydantic,
   `extra="forbid"`, generated from the same upstream OpenAPI spec): unknown fields, types and
   required fields. Weaker than the schema (no enums, no formats), and said so in docs/deploy.md.
3. ServiceMonitor (monitoring.coreos.com/v1): the Prometheus Operator's own CRD schema
   (tests/fixtures/crds/, strict as in 1.) through tests/support/k8s_schemas.py.

The authority is the real API server: tests/deploy/test_server_dry_run.py applies every overlay
with `kubectl apply -k ... --dry-run=server`; these offline checks are quicker and name the field.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

import jsonschema

from tests.support import k8s_schemas
from tests.support.kube_cluster import schema_dir

OPENAPI_FILES = ("kubernetes-apps-v1.openapi.json", "kubernetes-networking-v1.openapi.json")


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@functools.cache
def openapi_kinds() -> dict[tuple[str, str], tuple[str, str]]:
    """(apiVersion, kind) -> (file, schema name) for every top-level kind in the documents."""
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for f in OPENAPI_FILES:
        schemas = json.loads((schema_dir() / f).read_text())["components"]["schemas"]
        for name, s in schemas.items():
            for gvk in s.get("x-kubernetes-group-version-kind", []):
                api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
                out.setdefault((api_version, gvk["kind"]), (f, name))
    return out


@functools.cache
def _components(file: str) -> dict[str, Any]:
    doc = json.loads((schema_dir() / file).read_text())
    return _strict(copy.deepcopy(doc["components"]))


def validate_openapi(obj: dict[str, Any]) -> list[str]:
    file, name = openapi_kinds()[(obj["apiVersion"], obj["kind"])]
    schema = {"$ref": f"#/components/schemas/{name}", "components": _components(file)}
    v = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}"
            for e in v.iter_errors(obj)]


def _model_for(obj: dict[str, Any]) -> Any:
    from kubernetes import client

    version = obj["apiVersion"].rpartition("/")[2]
    name = f"{version.capitalize()}{obj['kind']}"
    return getattr(client, name, None)


def validate_client_model(obj: dict[str, Any]) -> list[str]:
    import pydantic

    model = _model_for(obj)
    if model is None:
        return [f"no kubernetes client model for {obj['apiVersion']} {obj['kind']}"]
    try:
        model.model_validate(obj)
    except pydantic.ValidationError as e:
        return [f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
    return []


def validate(obj: dict[str, Any]) -> tuple[str, list[str]]:
    """(method used, errors) for one object."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in openapi_kinds():
        return "openapi", validate_openapi(obj)
    if key == ("monitoring.coreos.com/v1", "ServiceMonitor"):
        return "crd", k8s_schemas.errors(obj)
    return "client-model", validate_client_model(obj)
