"""The version a canaryRef workload carries now, read from the object (pure: no I/O).

One function per kind (analyzer/policy/canary_ref.py says what each reads); `read_version`
picks it. A version is None while the object does not say yet (a Knative Service before its
first revision) or when the named container or predictor is missing; `detail` then says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analyzer.policy import CanaryRef

Obj = dict[str, Any]


@dataclass(frozen=True)
class WorkloadVersion:
    """What a canaryRef object runs: `version` (None when unknown) and where it was read."""

    version: str | None
    detail: str


def image_tag(image: str) -> str:
    """The version in an image reference: its tag (`registry:5000/app:v2` -> `v2`), else its
    digest (`app@sha256:ab...` -> `sha256:ab...`), else `latest` as a container runtime reads it."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        return last.rsplit(":", 1)[1]
    return digest or "latest"


def read_version(ref: CanaryRef, obj: Obj) -> WorkloadVersion:
    kind = ref.kind
    if kind == "Deployment":
        return _deployment(ref, obj)
    if kind == "Service":
        rev = (obj.get("status") or {}).get("latestCreatedRevisionName")
        return WorkloadVersion(rev or None, f"Knative Service {ref.name}: latest created revision"
                               + ("" if rev else " not reported yet (status."
                                  "latestCreatedRevisionName)"))
    if kind == "SeldonDeployment":
        return _seldon_predictor(ref, obj)
    uri = (obj.get("spec") or {}).get("storageUri")
    return WorkloadVersion(uri or None, f"Model {ref.name}: spec.storageUri"
                           + ("" if uri else " missing"))


def _deployment(ref: CanaryRef, obj: Obj) -> WorkloadVersion:
    template = (obj.get("spec") or {}).get("template") or {}
    if ref.versionFrom == "label":
        value = ((template.get("metadata") or {}).get("labels") or {}).get(ref.label)
        return WorkloadVersion(value or None, f"Deployment {ref.name}: pod template label "
                               f"{ref.label}" + ("" if value else " missing"))
    containers = (template.get("spec") or {}).get("containers") or []
    if ref.container is not None:
        found = [c for c in containers if c.get("name") == ref.container]
    else:
        found = containers[:1]
    if not found or not found[0].get("image"):
        what = f"container {ref.container}" if ref.container else "a container"
        return WorkloadVersion(None, f"Deployment {ref.name}: no {what} with an image in its "
                               "pod template")
    image = str(found[0]["image"])
    return WorkloadVersion(image_tag(image), f"Deployment {ref.name}: image {image} of "
                           f"container {found[0].get('name')}")


def _seldon_predictor(ref: CanaryRef, obj: Obj) -> WorkloadVersion:
    predictors = (obj.get("spec") or {}).get("predictors") or []
    match = [p for p in predictors if p.get("name") == ref.predictor]
    if not match:
        return WorkloadVersion(None, f"SeldonDeployment {ref.name}: no predictor "
                               f"{ref.predictor}")
    pred = match[0]
    uri = (pred.get("graph") or {}).get("modelUri")
    if uri:
        return WorkloadVersion(str(uri), f"SeldonDeployment {ref.name}: predictor "
                               f"{ref.predictor} graph.modelUri")
    for spec in pred.get("componentSpecs") or []:
        for c in (spec.get("spec") or {}).get("containers") or []:
            if c.get("image"):
                return WorkloadVersion(image_tag(str(c["image"])), f"SeldonDeployment "
                                       f"{ref.name}: predictor {ref.predictor} image {c['image']}")
    return WorkloadVersion(None, f"SeldonDeployment {ref.name}: predictor {ref.predictor} has "
                           "neither graph.modelUri nor a container image")
