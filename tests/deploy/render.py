"""A minimal kustomize, used to render deploy/kustomize when `kubectl` is absent.

It implements only the subset our own kustomizations use, and refuses anything else with an
error naming the file and the field (so a new feature in deploy/ fails loudly here instead of
rendering something different from kubectl):

- `resources` (YAML files and kustomization directories), `components` (kind: Component)
- `configMapGenerator` (name, files, literals, behavior create/merge/replace), with kustomize's
  content-hash name suffix and the references to it (ConfigMap volumes, envFrom, env valueFrom)
- `patches` given as `path:` (strategic merge, list merge keys for the pod spec lists we use;
  `$patch: delete` removes an object)
- `namespace` (namespaced kinds only, plus ServiceAccount subjects of (Cluster)RoleBindings, as
  kustomize does), `labels` with includeSelectors false, `images` (newName/newTag/digest)

Files are read without kustomize's load restrictor (like `--load-restrictor
LoadRestrictionsNone`). The test suite compares its output with `kubectl kustomize` whenever
kubectl is installed.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

# Kinds kustomize treats as cluster-scoped among those we may ship (no namespace set on them).
CLUSTER_SCOPED = frozenset({
    "Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
    "CustomResourceDefinition", "PriorityClass", "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration", "APIService", "IngressClass",
})

# Strategic-merge keys of the lists our patches touch (from the Kubernetes API's
# x-kubernetes-patch-merge-key); other lists are replaced, as with strategic merge.
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
    "volumeMounts": "mountPath", "ports": "containerPort", "imagePullSecrets": "name",
}

KNOWN_FIELDS = frozenset({
    "apiVersion", "kind", "resources", "components", "patches", "configMapGenerator",
    "namespace", "labels", "images", "generatorOptions",
})


class RenderError(Exception):
    """The kustomization uses something this renderer does not implement, or is invalid."""


@dataclass
class _Res:
    obj: dict[str, Any]
    generated: bool = False  # a generator's ConfigMap: gets the hash suffix at the end
    behavior_origin: str = ""


@dataclass
class _Acc:
    resources: list[_Res] = field(default_factory=list)

    def find(self, kind: str, name: str) -> _Res | None:
        for r in self.resources:
            if r.obj.get("kind") == kind and r.obj.get("metadata", {}).get("name") == name:
                return r
        return None


def _load_kustomization(directory: Path) -> tuple[Path, dict[str, Any]]:
    for n in KUSTOMIZATION_FILES:
        p = directory / n
        if p.is_file():
            data = yaml.safe_load(p.read_text()) or {}
            unknown = sorted(set(data) - KNOWN_FIELDS)
            if unknown:
                raise RenderError(f"{p}: field(s) {', '.join(unknown)} not supported by this "
                                  "renderer; render with `kubectl kustomize` or extend render.py")
            return p, data
    raise RenderError(f"{directory}: no kustomization.yaml")


def _load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _strategic_merge(base: Any, patch: Any, key: str | None = None) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = _strategic_merge(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        mk = MERGE_KEYS[key]
        out_list = [copy.deepcopy(x) for x in base]
        added: list[Any] = []
        for item in patch:
            idx = next((i for i, b in enumerate(out_list)
                        if isinstance(b, dict) and isinstance(item, dict)
                        and b.get(mk) == item.get(mk)), None)
            if isinstance(item, dict) and item.get("$patch") == "delete":
                if idx is not None:
                    out_list.pop(idx)
            elif idx is None:
                added.append(copy.deepcopy(item))
            else:
                out_list[idx] = _strategic_merge(out_list[idx], item, None)
        # kustomize's strategic merge puts the patch's new items before the existing ones
        return added + out_list
    return copy.deepcopy(patch)


def _go_json(obj: Any) -> str:
    """json.Marshal of Go: sorted keys, no spaces, HTML-escaped <, >, &."""
    s = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return (s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def configmap_hash(cm: dict[str, Any]) -> str:
    """kustomize's name suffix for a generated ConfigMap (api/hasher: sha256 of the JSON of
    kind/name/data, first 10 hex digits with 0,1,3,a,e replaced so it never looks numeric).
    kustomize 5 hashes the object before it has a name, so "name" is empty (checked against
    `kubectl kustomize` in the tests), and an empty data map is encoded as ""."""
    m: dict[str, Any] = {"kind": "ConfigMap", "name": "", "data": cm.get("data") or ""}
    if cm.get("binaryData"):
        m["binaryData"] = cm["binaryData"]
    digest = hashlib.sha256(_go_json(m).encode()).hexdigest()[:10]
    return digest.translate(str.maketrans({"0": "g", "1": "h", "3": "k", "a": "m", "e": "t"}))


def _generate(acc: _Acc, kfile: Path, gens: list[dict[str, Any]], opts: dict[str, Any]) -> None:
    for g in gens:
        unknown = sorted(set(g) - {"name", "files", "literals", "behavior", "options"})
        if unknown:
            raise RenderError(f"{kfile}: configMapGenerator field(s) {', '.join(unknown)} "
                              "not supported")
        data: dict[str, str] = {}
        for f in g.get("files", []):
            key, _, src = f.partition("=") if "=" in f else (Path(f).name, "", f)
            p = (kfile.parent / src).resolve()
            if not p.is_file():
                raise RenderError(f"{kfile}: configMapGenerator {g['name']}: no file {src}")
            data[key] = p.read_text()
        for lit in g.get("literals", []):
            k, _, v = lit.partition("=")
            data[k] = v
        behavior = g.get("behavior", "create")
        existing = acc.find("ConfigMap", g["name"])
        if behavior == "create":
            if existing is not None:
                raise RenderError(f"{kfile}: ConfigMap {g['name']} exists; use behavior merge")
            cm: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap",
                                  "metadata": {"name": g["name"]}}
            if data:
                cm["data"] = data
            no_hash = bool(opts.get("disableNameSuffixHash")
                           or g.get("options", {}).get("disableNameSuffixHash"))
            acc.resources.append(_Res(cm, generated=not no_hash))
        elif behavior in ("merge", "replace"):
            if existing is None:
                raise RenderError(f"{kfile}: ConfigMap {g['name']} to {behavior} not found")
            old = existing.obj.get("data") or {}
            new = {**old, **data} if behavior == "merge" else data
            if new:
                existing.obj["data"] = new
            else:
                existing.obj.pop("data", None)
        else:
            raise RenderError(f"{kfile}: configMapGenerator behavior {behavior!r} unknown")


def _patch(acc: _Acc, kfile: Path, patches: list[dict[str, Any]]) -> None:
    for p in patches:
        if set(p) != {"path"}:
            raise RenderError(f"{kfile}: only `patches: - path: FILE` is supported, got {p}")
        for doc in _load_yaml_docs((kfile.parent / p["path"]).resolve()):
            kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
            target = acc.find(kind, name)
            if target is None:
                raise RenderError(f"{kfile}: patch {p['path']}: no {kind} {name} to patch")
            if doc.get("$patch") == "delete":
                acc.resources.remove(target)
                continue
            target.obj = _strategic_merge(target.obj, doc)


def _set_namespace(acc: _Acc, ns: str) -> None:
    sa_names = {r.obj["metadata"]["name"] for r in acc.resources
                if r.obj.get("kind") == "ServiceAccount"}
    for r in acc.resources:
        kind = r.obj.get("kind")
        if kind not in CLUSTER_SCOPED:
            r.obj.setdefault("metadata", {})["namespace"] = ns
        if kind in ("RoleBinding", "ClusterRoleBinding"):
            for s in r.obj.get("subjects", []):
                if (s.get("kind") == "ServiceAccount" and s.get("name") in sa_names
                        and s.get("namespace") in (None, "default")):
                    s["namespace"] = ns


def _set_labels(acc: _Acc, kfile: Path, specs: list[dict[str, Any]]) -> None:
    for spec in specs:
        if spec.get("includeSelectors") or spec.get("includeTemplates"):
            raise RenderError(f"{kfile}: labels with includeSelectors/includeTemplates "
                              "not supported")
        for r in acc.resources:
            r.obj.setdefault("metadata", {}).setdefault("labels", {}).update(spec["pairs"])


def _set_images(acc: _Acc, images: list[dict[str, Any]]) -> None:
    for r in acc.resources:
        spec = r.obj.get("spec", {}).get("template", {}).get("spec", {})
        for c in [*spec.get("containers", []), *spec.get("initContainers", [])]:
            ref = c.get("image", "")
            repo = ref.split("@")[0]
            if ":" in repo.rsplit("/", 1)[-1]:
                repo = repo.rsplit(":", 1)[0]
            for im in images:
                if im["name"] != repo:
                    continue
                new = im.get("newName", repo)
                if "digest" in im:
                    c["image"] = f"{new}@{im['digest']}"
                elif "newTag" in im:
                    c["image"] = f"{new}:{im['newTag']}"
                else:
                    c["image"] = new + ref[len(repo):]


def _accumulate(directory: Path, acc: _Acc | None, component: bool) -> _Acc:
    kfile, k = _load_kustomization(directory)
    want = "Component" if component else "Kustomization"
    if k.get("kind", "Kustomization") != want:
        raise RenderError(f"{kfile}: kind {k.get('kind')!r} where {want} was expected")
    acc = acc if acc is not None else _Acc()
    for res in k.get("resources", []):
        p = (directory / res).resolve()
        if p.is_dir():
            acc.resources.extend(_accumulate(p, None, component=False).resources)
        elif p.is_file():
            acc.resources.extend(_Res(d) for d in _load_yaml_docs(p))
        else:
            raise RenderError(f"{kfile}: resource {res} not found")
    for comp in k.get("components", []):
        _accumulate((directory / comp).resolve(), acc, component=True)
    _generate(acc, kfile, k.get("configMapGenerator", []), k.get("generatorOptions", {}))
    _patch(acc, kfile, k.get("patches", []))
    if "namespace" in k:
        _set_namespace(acc, k["namespace"])
    _set_labels(acc, kfile, k.get("labels", []))
    _set_images(acc, k.get("images", []))
    return acc


def _rename_configmap_refs(obj: Any, renames: dict[str, str]) -> None:
    """Rewrite references to generated ConfigMaps in pod specs (volumes, envFrom, env)."""
    if isinstance(obj, dict):
        cm = obj.get("configMap")
        if isinstance(cm, dict) and cm.get("name") in renames:
            cm["name"] = renames[cm["name"]]
        for ref_key in ("configMapRef", "configMapKeyRef"):
            ref = obj.get(ref_key)
            if isinstance(ref, dict) and ref.get("name") in renames:
                ref["name"] = renames[ref["name"]]
        for v in obj.values():
            _rename_configmap_refs(v, renames)
    elif isinstance(obj, list):
        for v in obj:
            _rename_configmap_refs(v, renames)


def render(directory: str | Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize --load-restrictor LoadRestrictionsNone DIR` would print
    (order may differ; compare by kind/namespace/name)."""
    acc = _accumulate(Path(directory).resolve(), None, component=False)
    renames: dict[str, str] = {}
    for r in acc.resources:
        if r.generated:
            old = r.obj["metadata"]["name"]
            renames[old] = f"{old}-{configmap_hash(r.obj)}"
            r.obj["metadata"]["name"] = renames[old]
    for r in acc.resources:
        if not r.generated:
            _rename_configmap_refs(r.obj.get("spec"), renames)
    return [r.obj for r in acc.resources]
