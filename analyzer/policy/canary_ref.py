"""`spec.target.canaryRef`: the workload that carries the canary version (controller mode).

When a RolloutPolicy names a canaryRef, `canary run --kubernetes` watches that object and starts a
rollout whenever its version changes (analyzer/daemon/controller/). What "its version" is, per
kind:

- apps/v1 Deployment: the tag of a container image of its pod template (`versionFrom: image`,
  the container named `container`, default the first one), or the value of a pod template label
  (`versionFrom: label`, `label`, default app.kubernetes.io/version);
- serving.knative.dev/v1 Service: `status.latestCreatedRevisionName` (the revision Knative made
  from the last template change);
- machinelearning.seldon.io/v1 SeldonDeployment: the predictor `predictor`'s model (its graph's
  `modelUri`, else the image of its first container);
- mlops.seldon.io/v1alpha1 Model (Seldon Core 2): `spec.storageUri`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from analyzer.policy.base import K8sName, Model

#: kind -> the apiVersion the controller reads it with
CANARY_REF_API_VERSIONS = {
    "Deployment": "apps/v1",
    "Service": "serving.knative.dev/v1",
    "SeldonDeployment": "machinelearning.seldon.io/v1",
    "Model": "mlops.seldon.io/v1alpha1",
}


class CanaryRef(Model):
    """The object whose new versions start rollouts, and how the version is read from it."""

    apiVersion: str | None = Field(
        default=None, description="default per kind: apps/v1 Deployment, serving.knative.dev/v1 "
        "Service, machinelearning.seldon.io/v1 SeldonDeployment, mlops.seldon.io/v1alpha1 Model")
    kind: Literal["Deployment", "Service", "SeldonDeployment", "Model"]
    name: K8sName = Field(description="the object's name, in target.namespace")
    versionFrom: Literal["image", "label"] = Field(
        default="image", description="Deployment: the version is a container image's tag "
        "(image) or a pod template label's value (label)")
    container: str | None = Field(
        default=None, description="Deployment, versionFrom image: the container whose image "
        "tag is the version; default: the first container")
    label: str = Field(
        default="app.kubernetes.io/version", min_length=1, max_length=317,
        description="Deployment, versionFrom label: the pod template label holding the version")
    predictor: K8sName | None = Field(
        default=None, description="SeldonDeployment: the predictor carrying the canary")
    onNewVersion: Literal["restart", "queue"] = Field(
        default="restart", description="a newer version during a rollout: restart the analysis "
        "on it at once (the running one is rolled back first), or queue it until the running "
        "rollout ends")

    @model_validator(mode="after")
    def _fits_kind(self) -> CanaryRef:
        expected = CANARY_REF_API_VERSIONS[self.kind]
        if self.apiVersion is not None and self.apiVersion != expected:
            raise ValueError(f"a {self.kind} canaryRef is read as {expected}, not "
                             f"{self.apiVersion}")
        if self.kind == "SeldonDeployment" and self.predictor is None:
            raise ValueError("a SeldonDeployment canaryRef needs predictor (the predictor "
                             "that carries the canary)")
        if self.kind != "SeldonDeployment" and self.predictor is not None:
            raise ValueError("predictor applies to a SeldonDeployment canaryRef only")
        if self.kind != "Deployment" and (self.container is not None
                                          or self.versionFrom != "image"):
            raise ValueError("versionFrom and container apply to a Deployment canaryRef only")
        return self

    @property
    def api_version(self) -> str:
        return self.apiVersion or CANARY_REF_API_VERSIONS[self.kind]
