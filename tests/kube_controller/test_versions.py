"""The version a canaryRef workload carries, read from objects written by others (each names
its source): Deployments (image tag or label), Knative Services (latest created revision),
SeldonDeployment predictors and Seldon Core 2 Models."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from analyzer.daemon.controller.versions import image_tag, read_version
from analyzer.policy import CanaryRef

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "realworld"

# kubernetes/website content/en/examples/controllers/nginx-deployment.yaml (the Deployment of
# the "Deployments" concept page), with the recommended app.kubernetes.io/version label added
NGINX_DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "nginx-deployment", "labels": {"app": "nginx"}},
    "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "nginx"}},
             "template": {"metadata": {"labels": {"app": "nginx",
                                                  "app.kubernetes.io/version": "1.14.2"}},
                          "spec": {"containers": [{"name": "nginx", "image": "nginx:1.14.2",
                                                   "ports": [{"containerPort": 80}]}]}}},
}
# knative/docs docs/serving/creating-a-service (helloworld-go) after its first revision: the
# status fields Knative Serving writes (latestCreatedRevisionName, latestReadyRevisionName)
KNATIVE_HELLO = {
    "apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "hello"},
    "spec": {"template": {"spec": {"containers": [
        {"image": "ghcr.io/knative/helloworld-go:latest"}]}}},
    "status": {"latestCreatedRevisionName": "hello-00002",
               "latestReadyRevisionName": "hello-00001"},
}
# SeldonIO/seldon-core samples/models/sklearn-iris-gs.yaml (v2.8.0)
SELDON_V2_IRIS = {
    "apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Model", "metadata": {"name": "iris"},
    "spec": {"storageUri": "gs://seldon-models/scv2/samples/mlserver_1.3.5/iris-sklearn",
             "requirements": ["sklearn"], "memory": "100Ki"},
}


@pytest.mark.parametrize(("image", "tag"), [
    ("nginx:1.14.2", "1.14.2"), ("registry.example:5000/team/app:v2", "v2"),
    ("registry.example:5000/team/app", "latest"),
    ("app@sha256:" + "a" * 64, "sha256:" + "a" * 64),
    ("app:v3@sha256:" + "b" * 64, "v3"),
])
def test_image_tag(image: str, tag: str) -> None:
    assert image_tag(image) == tag


def test_deployment_image_or_label() -> None:
    ref = CanaryRef(kind="Deployment", name="nginx-deployment")
    assert read_version(ref, NGINX_DEPLOYMENT).version == "1.14.2"
    by_label = CanaryRef(kind="Deployment", name="nginx-deployment", versionFrom="label")
    assert read_version(by_label, NGINX_DEPLOYMENT).version == "1.14.2"
    missing = CanaryRef(kind="Deployment", name="nginx-deployment", container="sidecar")
    got = read_version(missing, NGINX_DEPLOYMENT)
    assert got.version is None and "no container sidecar" in got.detail


def test_knative_latest_created_revision() -> None:
    ref = CanaryRef(kind="Service", name="hello")
    assert read_version(ref, KNATIVE_HELLO).version == "hello-00002"
    fresh = {**KNATIVE_HELLO, "status": {}}
    assert read_version(ref, fresh).version is None


def test_seldon_predictor_and_model() -> None:
    sdep = yaml.safe_load((FIXTURES / "seldon" / "seldon-v1-istio-canary.yaml").read_text())
    ref = CanaryRef(kind="SeldonDeployment", name="example", predictor="canary")
    got = read_version(ref, sdep)
    assert got.version == "1.17.1" and "predictor canary image" in got.detail
    absent = CanaryRef(kind="SeldonDeployment", name="example", predictor="shadow")
    assert read_version(absent, sdep).version is None
    model = CanaryRef(kind="Model", name="iris")
    assert read_version(model, SELDON_V2_IRIS).version == SELDON_V2_IRIS["spec"]["storageUri"]
