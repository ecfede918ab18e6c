"""The RolloutPolicy CRD is generated from the policy model: structural (no $ref, one type per
node, preserve-unknown-fields only where a node has two JSON types), defaults written as the
policy writes them, and deploy/ ships exactly what `canary crd` prints.

Its acceptance by the real API server and what the server refuses: tests/kube_controller/."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from analyzer.policy.crd import CRD_NAME, PRINTER_COLUMNS, crd, crd_yaml
from tests.engine.conftest import CANARY

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "deploy" / "kustomize" / "base" / "crd-rolloutpolicies.yaml"


def _schema() -> dict[str, Any]:
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(node: Any, path: str = "") -> Any:
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def test_deploy_ships_what_canary_crd_prints() -> None:
    assert SHIPPED.read_text() == crd_yaml(), (
        "deploy/kustomize/base/crd-rolloutpolicies.yaml is stale: regenerate it with "
        "`canary crd > deploy/kustomize/base/crd-rolloutpolicies.yaml`")
    out = subprocess.run([*CANARY, "crd"], capture_output=True, text=True, check=True,
                         timeout=60)
    assert out.stdout == crd_yaml()
    assert yaml.safe_load(out.stdout)["metadata"]["name"] == CRD_NAME


def test_schema_is_structural() -> None:
    text = json.dumps(_schema())
    assert "$ref" not in text and "$defs" not in text and "anyOf" not in text
    assert "oneOf" not in text and '"const"' not in text and '"title"' not in text
    untyped = []
    for path, node in _walk(_schema()):
        if not path.endswith(("properties", "x-kubernetes-validations")) and \
                ("properties" in node or "items" in node) and "type" not in node:
            untyped.append(path)
        if node.get("x-kubernetes-preserve-unknown-fields"):
            untyped.append(path)
    # the only nodes without a type: a strategy step (a weight or {pause: ...}) and a router
    # field whose type depends on the provider
    assert sorted(untyped) == [".properties.spec.properties.router.properties.stickySessions",
                               ".properties.spec.properties.strategy.properties.steps.items"]


def test_defaults_are_the_models_in_the_policy_s_words() -> None:
    spec = _schema()["properties"]["spec"]["properties"]
    analysis = spec["analysis"]
    assert analysis["default"] == {}  # the server fills the block's fields in
    assert analysis["properties"]["interval"]["default"] == "30s"
    assert analysis["properties"]["maxStepDuration"]["default"] == "30m"
    assert spec["decision"]["properties"]["alpha"]["default"] == 0.01
    assert "default" not in spec["target"]["properties"]["namespace"]  # the object's own
    # a union's field keeps a default only when every branch has it alike
    metrics = spec["metrics"]["properties"]
    assert "default" not in metrics["allowSimulatedMetrics"]
    assert metrics["source"]["enum"] == ["prometheus", "simulate"]
    assert spec["router"]["required"] == ["provider"]


def test_union_rules_say_what_each_branch_needs() -> None:
    router = _schema()["properties"]["spec"]["properties"]["router"]
    rules = {r["message"]: r["rule"] for r in router["x-kubernetes-validations"]}
    assert rules["virtualService applies to provider istio only"] == \
        "!has(self.virtualService) || self.provider in ['istio']"
    assert rules["provider istio needs virtualService"] == \
        "self.provider != 'istio' || (has(self.virtualService))"


def test_status_and_printer_columns() -> None:
    version = crd()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in PRINTER_COLUMNS if not c.get("priority")] == [
        "Phase", "Weight", "Step", "Canary", "Last Decision", "Age"]
    status = _schema()["properties"]["status"]["properties"]
    assert set(status["conditions"]["items"]["properties"]) == {
        "type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"}
    assert status["conditions"]["items"]["properties"]["type"]["enum"] == [
        "Ready", "Progressing", "Promoted", "RolledBack", "Paused"]
