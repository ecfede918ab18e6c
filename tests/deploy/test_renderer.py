"""The Python renderer (render.py) against kubectl's kustomize, and its own behaviour."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import KUBECTL, KUSTOMIZE, OVERLAYS, kubectl_kustomize
from tests.deploy.render import RenderError, configmap_hash, render

needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")


def _by_key(objs: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
            for o in objs}


def _write(d: Path, files: dict[str, Any]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        text = content if isinstance(content, str) else yaml.safe_dump_all(
            content if isinstance(content, list) else [content])
        (d / name).write_text(text)
    return d


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renderer_equals_kubectl_on_overlays(overlay: str) -> None:
    d = KUSTOMIZE / "overlays" / overlay
    assert _by_key(render(d)) == _by_key(kubectl_kustomize(d))


@needs_kubectl
def test_renderer_equals_kubectl_on_components(component_overlays: dict) -> None:
    for d in component_overlays.values():
        assert _by_key(render(d)) == _by_key(kubectl_kustomize(d))


def _feature_tree(tmp_path: Path) -> Path:
    """A kustomization using every feature the renderer claims, with awkward data for the
    hash (characters Go's JSON escapes)."""
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app"},
              "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
                  "metadata": {"labels": {"a": "b"}},
                  "spec": {"containers": [{"name": "c", "image": "repo/img:1", "env": [
                      {"name": "A", "value": "1"}]}],
                           "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}}]}}}}
    _write(tmp_path / "base", {
        "kustomization.yaml": {"resources": ["deploy.yaml", "sa.yaml"],
                               "configMapGenerator": [{"name": "cfg",
                                                       "literals": ["x=<a & b>"]}]},
        "deploy.yaml": deploy,
        "sa.yaml": [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}},
                    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                     "metadata": {"name": "crb"},
                     "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                 "kind": "ClusterRole", "name": "r"},
                     "subjects": [{"kind": "ServiceAccount", "name": "sa"}]},
                    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "gone"},
                     "spec": {"ports": [{"port": 1}]}}],
    })
    _write(tmp_path / "comp", {
        "kustomization.yaml": {"apiVersion": "kustomize.config.k8s.io/v1alpha1",
                               "kind": "Component", "resources": ["role.yaml"]},
        "role.yaml": {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                      "metadata": {"name": "r"}, "rules": []},
    })
    _write(tmp_path / "data", {"f.yaml": "k: v\n"})
    return _write(tmp_path / "overlay", {
        "kustomization.yaml": {
            "namespace": "ns", "resources": ["../base"], "components": ["../comp"],
            "labels": [{"pairs": {"team": "x"}, "includeSelectors": False}],
            "images": [{"name": "repo/img", "newTag": "2"}],
            "configMapGenerator": [{"name": "cfg", "behavior": "merge",
                                    "files": ["../data/f.yaml"]}],
            "patches": [{"path": "patch.yaml"}, {"path": "delete.yaml"}],
        },
        "patch.yaml": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app"},
                       "spec": {"replicas": 2, "template": {"spec": {"containers": [
                           {"name": "c", "env": [{"name": "B", "value": "2"},
                                                 {"name": "A", "value": "3"}]}]}}}},
        "delete.yaml": {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "gone"},
                        "$patch": "delete"},
    })


def test_renderer_features(tmp_path: Path) -> None:
    objs = _by_key(render(_feature_tree(tmp_path)))
    cm_key = next(k for k in objs if k[0] == "ConfigMap")
    cm = objs[cm_key]
    assert cm["data"] == {"x": "<a & b>", "f.yaml": "k: v\n"}
    assert cm_key == ("ConfigMap", "ns", f"cfg-{configmap_hash(cm)}")
    dep = objs[("Deployment", "ns", "app")]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "repo/img:2"
    assert c["env"] == [{"name": "B", "value": "2"}, {"name": "A", "value": "3"}]
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == cm_key[2]
    assert dep["metadata"]["labels"] == {"team": "x"}
    assert objs[("ClusterRoleBinding", "", "crb")]["subjects"][0]["namespace"] == "ns"
    assert ("ClusterRole", "", "r") in objs
    assert not [k for k in objs if k[0] == "Service"]


@needs_kubectl
def test_renderer_features_equal_kubectl(tmp_path: Path) -> None:
    d = _feature_tree(tmp_path)
    assert _by_key(render(d)) == _by_key(kubectl_kustomize(d))


def test_configmap_hash_matches_kustomize() -> None:
    # Recorded from kubectl v1.32 (kustomize v5.5.0): `configMapGenerator: [{name: x,
    # literals: [a=b]}]` renders as ConfigMap x-4h2mbtbbt6.
    assert configmap_hash({"metadata": {"name": "x"}, "data": {"a": "b"}}) == "4h2mbtbbt6"
    assert configmap_hash({"metadata": {"name": "x"}, "data": {"a": "c"}}) != "4h2mbtbbt6"


def test_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    _write(tmp_path, {"kustomization.yaml": {"namePrefix": "x-", "resources": []}})
    with pytest.raises(RenderError, match="namePrefix"):
        render(tmp_path)
    _write(tmp_path, {"kustomization.yaml": {"patches": [{"patch": "{}", "target": {}}]}})
    with pytest.raises(RenderError, match="patches"):
        render(tmp_path)
    _write(tmp_path, {"kustomization.yaml": {"resources": ["missing.yaml"]}})
    with pytest.raises(RenderError, match=r"missing\.yaml"):
        render(tmp_path)
