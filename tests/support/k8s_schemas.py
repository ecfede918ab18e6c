"""Validate Kubernetes objects against the real upstream schemas in ../shared/schemas/ (and
the CRDs kept as fixtures in tests/fixtures/crds/).

For objects no server sees: the output of `canary route --dry-run --current FILE` (offline).
Everything written to the real test API server is validated by the server itself (schemas,
CEL rules, defaulting, pruning), which is the authority.

CRDs: the `openAPIV3Schema` of the served version named by the object's apiVersion.
Built-in kinds (Ingress, Deployment): the Kubernetes OpenAPI v3 documents, `$ref`s resolved
inside the document through a `referencing` registry.

`strict=True` (the default) also refuses fields the schema does not declare wherever the schema
lists `properties` and neither allows extra keys nor sets `x-kubernetes-preserve-unknown-fields`:
a real API server would silently prune such a field, so a misspelt field would be lost there.

Not checked: CEL rules (`x-kubernetes-validations`), `format`s, int-or-string subtleties.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.support.kube_cluster import REPO, schema_dir

FIXTURE_CRDS = REPO / "tests" / "fixtures" / "crds"

# (group, kind) -> CRD file in the schema directory (or a Path: a fixture of this repository)
CRD_FILES: dict[tuple[str, str], str | Path] = {
    ("networking.istio.io", "VirtualService"): "istio-networking-virtualservice.crd.yaml",
    ("networking.istio.io", "DestinationRule"): "istio-networking-destinationrule.crd.yaml",
    ("serving.knative.dev", "Service"): "knative-serving-service.crd.yaml",
    ("serving.knative.dev", "Route"): "knative-serving-route.crd.yaml",
    ("machinelearning.seldon.io", "SeldonDeployment"): "seldon-core-v1-seldondeployment.crd.yaml",
    ("gateway.networking.k8s.io", "HTTPRoute"): "gateway-api-httproute.crd.yaml",
    ("split.smi-spec.io", "TrafficSplit"): "smi-trafficsplit.crd.yaml",
    ("monitoring.coreos.com", "ServiceMonitor"):
        FIXTURE_CRDS / "monitoring.coreos.com_servicemonitors.yaml",
}
BUILTIN = {
    ("networking.k8s.io/v1", "Ingress"): ("kubernetes-networking-v1.openapi.json",
                                          "io.k8s.api.networking.v1.Ingress"),
    ("apps/v1", "Deployment"): ("kubernetes-apps-v1.openapi.json",
                                "io.k8s.api.apps.v1.Deployment"),
}


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@functools.cache
def _crd_schemas(file: str | Path) -> dict[tuple[str, str], dict[str, Any]]:
    """openAPIV3Schema per (apiVersion, kind) of every served version in one CRD file."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    path = file if isinstance(file, Path) else schema_dir() / file
    crd = yaml.load(path.read_text(), Loader=loader)
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    return {(f"{group}/{v['name']}", kind): v["schema"]["openAPIV3Schema"]
            for v in crd["spec"]["versions"] if v.get("served")}


@functools.cache
def validator_for(api_version: str, kind: str, strict: bool = True) -> Draft202012Validator:
    if (api_version, kind) in BUILTIN:
        file, name = BUILTIN[(api_version, kind)]
        doc = json.loads((schema_dir() / file).read_text())
        if strict:
            doc = _strict(doc)
        uri = f"urn:k8s:{file}"
        registry: Registry = Registry().with_resource(
            uri, Resource.from_contents(doc, default_specification=DRAFT202012))
        schema = {"$ref": f"{uri}#/components/schemas/{name}"}
        return Draft202012Validator(schema, registry=registry)
    file = CRD_FILES.get((api_version.rpartition("/")[0], kind))
    schemas = _crd_schemas(file) if file else {}
    if (api_version, kind) not in schemas:
        raise KeyError(f"no schema for {kind} {api_version} in {schema_dir()}")
    schema = copy.deepcopy(schemas[(api_version, kind)])
    # The API server always accepts these at the root, whether or not the CRD lists them.
    props = schema.setdefault("properties", {})
    props.setdefault("apiVersion", {"type": "string"})
    props.setdefault("kind", {"type": "string"})
    props.setdefault("metadata", {"type": "object"})
    return Draft202012Validator(_strict(schema) if strict else schema)


def errors(obj: dict[str, Any], strict: bool = True) -> list[str]:
    v = validator_for(obj.get("apiVersion", ""), obj.get("kind", ""), strict)
    return [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in v.iter_errors(obj)]


def validate(obj: dict[str, Any]) -> None:
    """Raise ValueError listing every schema violation of `obj`."""
    problems = errors(obj)
    if problems:
        raise ValueError("; ".join(problems[:5]))
