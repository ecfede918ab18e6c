"""SMI router on real-world TrafficSplits (tests/fixtures/realworld/smi/): the v1alpha4 ones on
the real API server (its CRD serves v1alpha4 only), v1alpha1/v1alpha2 ones offline here and on a
Linkerd-like server in test_realworld_versions.py. Header A/B and mirror are refused.

Defects 7 (a TrafficSplit with `matches` shifted and reported as a full split) and 8 (v1alpha1
quantities such as `500m` raised a traceback) of issue 18 are covered here.
"""

from __future__ import annotations

import pytest

from analyzer.routers.base import RouterError
from tests.routers.realworld import (
    every_operation,
    fixture,
    get,
    live,
    offline,
    seed,
    without_meta,
)

pytestmark = pytest.mark.kube


def smi(split: str, stable: str, canary: str, root: str) -> dict:
    return {"provider": "smi", "trafficSplit": split, "rootService": root,
            "stableService": stable, "canaryService": canary}


def test_split_with_matches_is_refused(kube_cluster, kube_namespace):
    """Defect 7: the SMI spec's A/B example splits only Firefox users (matches an
    HTTPRouteGroup); it used to be shifted to 80/20 and reported as a 20 % canary."""
    (obj,) = seed(kube_cluster, kube_namespace, "smi/smi-spec-v1alpha4-ab-test.yaml")
    router = live(kube_cluster, smi("ab-test", "website-v1", "website-v2", "website"),
                  kube_namespace, service="website")
    for op in (router.get_weight, lambda: router.set_weight(20), router.reset):
        with pytest.raises(RouterError, match=r"TrafficSplit .*/ab-test \(split.smi-spec.io/"
                                              r"v1alpha4\) splits only the requests matching "
                                              r"HTTPRouteGroup ab-test"):
            op()
    assert without_meta(get(kube_cluster, obj, kube_namespace)) == without_meta(obj)


def test_canary_example_weights(kube_cluster, kube_namespace):
    """The SMI spec's canary example at 90/10."""
    (obj,) = seed(kube_cluster, kube_namespace, "smi/smi-spec-v1alpha4-canary.yaml")
    router = live(kube_cluster, smi("canary", "website-v1", "website-v2", "website"),
                  kube_namespace, service="website")
    assert router.get_weight().canary_weight == 10
    router.set_weight(45)
    assert get(kube_cluster, obj, kube_namespace)["spec"]["backends"] == [
        {"service": "website-v1", "weight": 55}, {"service": "website-v2", "weight": 45}]
    with pytest.raises(RouterError, match="cannot route by header"):
        router.set_header_route({"header": "a", "value": "b"})
    with pytest.raises(RouterError, match="cannot mirror"):
        router.set_mirror(10)
    router.reset()
    assert router.get_weight().canary_weight == 0


@pytest.mark.parametrize(("rel", "cfg", "weight"), [
    ("smi/smi-spec-v1alpha1-foobar-500m.yaml",
     smi("foobar-rollout", "foobar-v1", "foobar-v2", "foobar"), 33),
    ("smi/linkerd-smi-leaf-weights.yaml",
     smi("backend-traffic-split", "backend-svc", "failing-svc", "backend-svc"), 0),
    ("smi/argo-smi-v1alpha1-generated.yaml",
     smi("rollout-smi-experiment", "rollout-smi-experiment-stable",
         "rollout-smi-experiment-canary", "rollout-smi-experiment-stable"), 10),
    ("smi/smi-spec-v1alpha2-foobar.yaml",
     smi("foobar-rollout", "foobar-v1", "foobar-v2", "foobar"), 33),
])
def test_quantity_weights_offline(rel, cfg, weight):
    """Defect 8: v1alpha1 weights are quantities (`500m`, `0m`, `"10"`): reading raised
    ValueError. Read as ratios; written as integers, valid in every version."""
    router = offline(rel, cfg, service=cfg["rootService"])
    assert router.get_weight().canary_weight == weight
    router.set_weight(20)
    assert router.get_weight().canary_weight == 20
    written = router.last_applied[0]
    assert written["apiVersion"] == fixture(rel)[0]["apiVersion"]  # written as it was read
    assert {b["service"]: b["weight"] for b in written["spec"]["backends"]}[
        cfg["canaryService"]] == 20


def test_third_backend_with_quantity_weight_is_refused():
    """Defect 8 on the spec's three-backend example (10m/100m/1500m): a clear refusal naming
    the backend, no traceback."""
    router = offline("smi/smi-spec-v1alpha1-my-weights.yaml", smi("my-weights", "one", "two",
                                                                  "numbers"), service="numbers")
    with pytest.raises(RouterError, match="backend three carries weight 1500m"):
        router.get_weight()


def test_weight_header_mirror_reset_on_the_canary_example(kube_cluster, kube_namespace):
    """The one TrafficSplit the session server takes and the router manages (the others are
    v1alpha1/v1alpha2: test_realworld_versions.py; ab-test is refused above)."""
    seed(kube_cluster, kube_namespace, "smi/smi-spec-v1alpha4-canary.yaml")
    every_operation(live(kube_cluster, smi("canary", "website-v1", "website-v2", "website"),
                         kube_namespace, service="website"), header=None, mirror=None)
