"""Every overlay renders, every object validates, and the security and HA settings the issue
asks for are really in the rendered output."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.deploy.conftest import COMPONENTS, KUSTOMIZE, OVERLAYS, kubectl_kustomize
from tests.deploy.k8s_validate import validate

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def _one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _engine(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return _one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def test_overlays_exist() -> None:
    assert {"single", "ha"} <= set(OVERLAYS)
    assert set(COMPONENTS) == {"istio", "nginx-ingress", "knative", "seldon", "seldon-v2",
                               "kubernetes", "gateway-api", "smi"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates(rendered: dict, overlay: str) -> None:
    methods = set()
    for obj in rendered[overlay]:
        method, errors = validate(obj)
        methods.add(method)
        assert not errors, f"{overlay}: {obj['kind']} {obj['metadata']['name']}: {errors}"
    assert "openapi" in methods  # the Deployment at least goes through the upstream schema
    assert "crd" in methods  # the ServiceMonitor through the Prometheus Operator's CRD


def test_servicemonitor_schema_is_not_blind(rendered: dict) -> None:
    sm = copy.deepcopy(_one(rendered["single"], "ServiceMonitor"))
    sm["spec"]["endpoints"][0]["intervall"] = "30s"
    sm["spec"]["endpoints"][0]["port"] = 8080
    method, errors = validate(sm)
    assert method == "crd"
    assert any("'intervall' was unexpected" in e for e in errors), errors
    assert any("port: 8080 is not of type 'string'" in e for e in errors), errors


def test_components_render_and_validate(component_overlays: dict) -> None:
    for name, d in component_overlays.items():
        objs = kubectl_kustomize(d)
        roles = [o for o in objs if o["kind"] == "ClusterRole"
                 and o["metadata"]["name"] == f"canary-analyzer-{name}"]
        assert len(roles) == 1, name
        for obj in objs:
            assert not validate(obj)[1], (name, obj["kind"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_namespaces_labels_and_references(rendered: dict, overlay: str) -> None:
    objs = rendered[overlay]
    for o in objs:
        meta = o["metadata"]
        assert meta["labels"]["app.kubernetes.io/name"] == "canary-analyzer", o["kind"]
        if o["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta
        else:
            assert meta["namespace"] == "canary-analyzer", (o["kind"], meta["name"])
    sa = _one(objs, "ServiceAccount")["metadata"]
    for b in (o for o in objs if o["kind"] == "ClusterRoleBinding"):
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"],
                                  "namespace": sa["namespace"]}]
        roles = {o["metadata"]["name"] for o in objs if o["kind"] == "ClusterRole"}
        assert b["roleRef"]["name"] in roles
    pod = _one(objs, "Deployment")["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == sa["name"]
    cms = {o["metadata"]["name"] for o in objs if o["kind"] == "ConfigMap"}
    claims = {o["metadata"]["name"] for o in objs if o["kind"] == "PersistentVolumeClaim"}
    for v in pod["spec"]["volumes"]:
        if "configMap" in v:
            assert v["configMap"]["name"] in cms
        if "persistentVolumeClaim" in v:
            assert v["persistentVolumeClaim"]["claimName"] in claims
    # Service, NetworkPolicy, PDB and ServiceMonitor select the engine's pods
    labels = pod["metadata"]["labels"]
    selectors = [_one(objs, "Service")["spec"]["selector"],
                 _one(objs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"]]
    selectors += [o["spec"]["selector"]["matchLabels"] for o in objs
                  if o["kind"] == "PodDisruptionBudget"]
    for s in selectors:
        assert s.items() <= labels.items(), s
    svc_labels = _one(objs, "Service")["metadata"]["labels"]
    assert _one(objs, "ServiceMonitor")["spec"]["selector"]["matchLabels"].items() \
        <= svc_labels.items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_security_context_and_probes(rendered: dict, overlay: str) -> None:
    objs = rendered[overlay]
    pod = _one(objs, "Deployment")["spec"]["template"]["spec"]
    c = _engine(objs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert isinstance(pod["securityContext"]["runAsUser"], int)
    assert pod["securityContext"]["runAsUser"] > 0
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    port = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert port["http"] == 8080
    assert c["args"][c["args"].index("--listen") + 1] == "0.0.0.0:8080"
    # read-only root: every path the engine writes is a mounted volume
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert "/tmp" in mounts
    assert mounts[c["args"][c["args"].index("--policies") + 1]]["readOnly"] is True
    svc = _one(objs, "Service")
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    sm = _one(objs, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]
    env = {e["name"]: e for e in c["env"]}
    assert env["CANARY_API_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "token"


def test_single_overlay(rendered: dict) -> None:
    objs = rendered["single"]
    dep = _one(objs, "Deployment")["spec"]
    assert dep["replicas"] == 1
    assert dep["strategy"] == {"type": "Recreate"}
    env = {e["name"]: e for e in _engine(objs)["env"]}
    url = env["CANARY_DB"]["value"]
    assert url.startswith("sqlite:////")
    db_dir = url.removeprefix("sqlite:///").rsplit("/", 1)[0]
    mounts = {m["mountPath"]: m["name"] for m in _engine(objs)["volumeMounts"]}
    vols = {v["name"]: v for v in dep["template"]["spec"]["volumes"]}
    pvc = _one(objs, "PersistentVolumeClaim")
    assert vols[mounts[db_dir]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert not [o for o in objs if o["kind"] == "PodDisruptionBudget"]


def test_ha_overlay(rendered: dict) -> None:
    objs = rendered["ha"]
    dep = _one(objs, "Deployment")["spec"]
    assert dep["replicas"] == 3
    env = {e["name"]: e for e in _engine(objs)["env"]}
    ref = env["CANARY_DB"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] and ref["key"] and not ref.get("optional")
    assert "value" not in env["CANARY_DB"]
    # no SQLite volume in HA: the store is PostgreSQL
    assert not [o for o in objs if o["kind"] == "PersistentVolumeClaim"]
    pdb = _one(objs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] == 1
    anti = dep["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() \
        <= dep["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_policies_configmap_holds_valid_policies(rendered: dict, overlay: str,
                                                 tmp_path: Any) -> None:
    from analyzer.policy import load_policies

    cm = _one(rendered[overlay], "ConfigMap")
    assert cm["metadata"]["name"].startswith("canary-analyzer-policies-")  # content hash
    assert cm.get("data"), "no policies in the ConfigMap"
    for name, text in cm["data"].items():
        (tmp_path / name).write_text(text)
    policies = load_policies(tmp_path)
    providers = {p.spec.router.provider for p in policies}
    roles = {o["metadata"]["name"].removeprefix("canary-analyzer-")
             for o in rendered[overlay] if o["kind"] == "ClusterRole"}
    # every provider a shipped policy uses has its component (ClusterRole) in the overlay
    assert providers <= roles, f"{overlay}: add components for {providers - roles}"


def test_overlay_policies_equal_the_repository_examples() -> None:
    """Each overlay keeps its policy files inside its own tree (so `kubectl apply -k` works
    without `--load-restrictor`); they are copies of policies/, kept equal here."""
    repo = KUSTOMIZE.parents[1]
    for overlay in OVERLAYS:
        files = sorted((KUSTOMIZE / "overlays" / overlay / "policies").glob("*.yaml"))
        assert files, f"overlay {overlay} has no policies/ directory"
        for f in files:
            original = repo / "policies" / f.name
            assert original.is_file(), f"{f} has no counterpart in policies/"
            assert f.read_bytes() == original.read_bytes(), (
                f"{f} differs from {original}: copy it again "
                f"(cp {original.relative_to(repo)} {f.relative_to(repo)})")
