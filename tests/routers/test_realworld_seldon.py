"""Seldon Core routers on real-world objects, on the real API server: SeldonDeployment (v1,
tests/fixtures/realworld/seldon/) and Seldon Core 2's Experiment (tests/fixtures/realworld/
seldon-v2/, the CRD of ../shared/schemas): weight, header A/B (refused), mirror, reset.
"""

from __future__ import annotations

import pytest

from analyzer.routers.base import RouterError
from tests.routers.realworld import (
    every_operation,
    get,
    live,
    offline,
    seed,
    set_status,
    without_meta,
)

pytestmark = pytest.mark.kube

# The shared SeldonDeployment CRD keeps only v1 (v1.17.1 serves v1alpha2, v1alpha3 and v1 with
# one schema): the v1alpha2 samples are seeded as v1 there, and read in v1alpha2 offline.
AS_V1 = {"SeldonDeployment": "machinelearning.seldon.io/v1"}


def v2(experiment: str, stable: str, canary: str, **extra) -> dict:
    return {"provider": "seldon-v2", "experiment": experiment, "stableModel": stable,
            "canaryModel": canary, **extra}


def spec(cluster, ns, obj) -> dict:
    return get(cluster, obj, ns)["spec"]


# ---------------------------------------------------------------------------- Seldon Core v1


def test_seldon_v1_canary_sample(kube_cluster, kube_namespace):
    """Seldon's Istio canary notebook: predictors main 75 / canary 25."""
    (obj,) = seed(kube_cluster, kube_namespace, "seldon/seldon-v1-istio-canary.yaml",
                  api_version=AS_V1)
    router = live(kube_cluster, {"provider": "seldon", "seldonDeployment": "example"},
                  kube_namespace, stable="main", canary="canary")
    assert router.get_weight().canary_weight == 25
    router.set_weight(60)
    assert [p["traffic"] for p in spec(kube_cluster, kube_namespace, obj)["predictors"]] == [
        40, 60]
    with pytest.raises(RouterError, match="cannot route by header"):
        router.set_header_route({"header": "a", "value": "b"})
    router.reset()
    assert [p["traffic"] for p in spec(kube_cluster, kube_namespace, obj)["predictors"]] == [
        100, 0]


def test_seldon_v1_shadow_sample(kube_cluster, kube_namespace):
    """Seldon's shadow sample: the shadow predictor reads as a 100 % mirror; reset removes it."""
    (obj,) = seed(kube_cluster, kube_namespace, "seldon/seldon-v1-istio-shadow.yaml",
                  api_version=AS_V1)
    router = live(kube_cluster, {"provider": "seldon", "seldonDeployment": "iris"},
                  kube_namespace, stable="default", canary="shadow")
    split = router.get_weight()
    assert (split.canary_weight, split.mirror_percent) == (0, 100.0)
    router.reset()
    shadow = spec(kube_cluster, kube_namespace, obj)["predictors"][1]
    assert "shadow" not in shadow and shadow["graph"] == obj["spec"]["predictors"][1]["graph"]


def test_seldon_v1_v1alpha2_offline_keeps_its_version():
    """The canary sample as written (v1alpha2), offline: read and written in v1alpha2."""
    router = offline("seldon/seldon-v1-istio-canary.yaml",
                     {"provider": "seldon", "seldonDeployment": "example"},
                     stable="main", canary="canary")
    router.set_weight(10)
    assert router.last_applied[0]["apiVersion"] == "machinelearning.seldon.io/v1alpha2"


# ---------------------------------------------------------------------------- Seldon Core 2


def test_experiment_weights_mirror_and_reset(kube_cluster, kube_namespace):
    """Seldon's ab-default-model Experiment (default iris; iris 50 / iris2 50)."""
    (obj,) = seed(kube_cluster, kube_namespace, "seldon-v2/ab-default-model.yaml")
    router = live(kube_cluster, v2("experiment-sample", "iris", "iris2"), kube_namespace,
                  stable="iris", canary="iris2")
    assert router.get_weight().canary_weight == 50
    router.set_weight(20)
    assert spec(kube_cluster, kube_namespace, obj)["candidates"] == [
        {"name": "iris", "weight": 80}, {"name": "iris2", "weight": 20}]
    with pytest.raises(RouterError, match=r"cannot route by header.*seldon-model"):
        router.set_header_route({"header": "x", "value": "1"})
    with pytest.raises(RouterError, match="'iris2' is the mirror"):
        router.set_mirror(10)
    router.reset()
    assert spec(kube_cluster, kube_namespace, obj) == {
        "default": "iris", "candidates": [{"name": "iris", "weight": 100}]}
    router.set_mirror(10)
    assert spec(kube_cluster, kube_namespace, obj)["mirror"] == {"name": "iris2", "percent": 10}
    split = router.get_weight()
    assert (split.canary_weight, split.mirror_percent) == (0, 10.0)
    with pytest.raises(RouterError, match="whole percents"):
        router.set_mirror(12.5)
    router.reset()
    assert "mirror" not in spec(kube_cluster, kube_namespace, obj)
    router.set_weight(100)
    assert spec(kube_cluster, kube_namespace, obj)["candidates"] == [
        {"name": "iris", "weight": 0}, {"name": "iris2", "weight": 100}]


def test_experiment_without_default_is_refused(kube_cluster, kube_namespace):
    """Seldon's ab.yaml has no default: it serves a new endpoint and leaves iris's own traffic
    alone, so shifting it is not a canary of iris."""
    (obj,) = seed(kube_cluster, kube_namespace, "seldon-v2/ab-no-default.yaml")
    router = live(kube_cluster, v2("experiment-iris", "iris", "iris2"), kube_namespace)
    with pytest.raises(RouterError, match=r"has no spec.default: .*experiment-iris.experiment"):
        router.set_weight(10)
    assert without_meta(get(kube_cluster, obj, kube_namespace)) == without_meta(obj)


def test_experiment_mirror_sample(kube_cluster, kube_namespace):
    """Seldon's sklearn-mirror (iris 100, mirror iris2 100 %): read; a weight for the mirror is
    refused until the mirror is removed."""
    (obj,) = seed(kube_cluster, kube_namespace, "seldon-v2/sklearn-mirror.yaml")
    router = live(kube_cluster, v2("sklearn-mirror", "iris", "iris2"), kube_namespace)
    assert router.get_weight().mirror_percent == 100.0
    with pytest.raises(RouterError, match="remove the mirror"):
        router.set_weight(10)
    router.set_mirror(None)
    router.set_weight(10)
    assert spec(kube_cluster, kube_namespace, obj)["candidates"] == [
        {"name": "iris", "weight": 90}, {"name": "iris2", "weight": 10}]


def test_experiment_of_pipelines(kube_cluster, kube_namespace):
    """Seldon's pipeline mirror experiment: resourceType pipeline must be the policy's too."""
    seed(kube_cluster, kube_namespace, "seldon-v2/addmul10-mirror-pipeline.yaml")
    cfg = v2("addmul10-mirror", "pipeline-add10", "pipeline-mul10")
    with pytest.raises(RouterError, match="splits a pipeline"):
        live(kube_cluster, cfg, kube_namespace).get_weight()
    router = live(kube_cluster, {**cfg, "resourceType": "pipeline"}, kube_namespace)
    assert router.get_weight().mirror_percent == 100.0
    router.reset()
    assert router.get_weight().mirror_percent is None


def test_experiment_not_ready_reads_no_canary_traffic(kube_cluster, kube_namespace):
    """Seldon's add1020 (add10 50 / add20 50): when Seldon reports the candidates not ready the
    experiment does not run, so the canary gets nothing."""
    (obj,) = seed(kube_cluster, kube_namespace, "seldon-v2/add1020.yaml")
    router = live(kube_cluster, v2("add1020", "add10", "add20"), kube_namespace)
    assert router.get_weight().canary_weight == 50
    set_status(kube_cluster, obj, kube_namespace, {"conditions": [
        {"type": "CandidatesReady", "status": "False", "message": "add20 not ready"}]})
    assert router.get_weight().canary_weight == 0
    other = live(kube_cluster, v2("add1020", "add20", "add10"), kube_namespace)
    with pytest.raises(RouterError, match="has default 'add10'"):
        other.set_weight(10)


# ---------------------------------------------------------------------------- every object

EVERY = [
    ("seldon/seldon-v1-istio-canary.yaml", {"provider": "seldon", "seldonDeployment": "example"},
     {"stable": "main", "canary": "canary"}, 100.0),
    ("seldon/seldon-v1-istio-shadow.yaml", {"provider": "seldon", "seldonDeployment": "iris"},
     {"stable": "default", "canary": "shadow"}, 100.0),
    ("seldon-v2/ab-default-model.yaml", v2("experiment-sample", "iris", "iris2"), {}, 10.0),
    ("seldon-v2/add1020.yaml", v2("add1020", "add10", "add20"), {}, 25.0),
    ("seldon-v2/sklearn-mirror.yaml", v2("sklearn-mirror", "iris", "iris2"), {}, 50.0),
    ("seldon-v2/addmul10-mirror-pipeline.yaml",
     v2("addmul10-mirror", "pipeline-add10", "pipeline-mul10", resourceType="pipeline"), {},
     100.0),
]


@pytest.mark.parametrize(("rel", "cfg", "target", "mirror"), EVERY, ids=[e[0] for e in EVERY])
def test_weight_header_mirror_reset_on_every_object(kube_cluster, kube_namespace, rel, cfg,
                                                    target, mirror):
    """Every real-world SeldonDeployment and Experiment: each operation read back; no header
    routes; the Experiment's default is never changed."""
    (obj,) = seed(kube_cluster, kube_namespace, rel, api_version=AS_V1)
    every_operation(live(kube_cluster, cfg, kube_namespace, **target), header=None,
                    mirror=mirror)
    if obj["kind"] == "Experiment":
        assert spec(kube_cluster, kube_namespace, obj)["default"] == obj["spec"]["default"]
