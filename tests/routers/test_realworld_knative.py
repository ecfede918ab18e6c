"""Knative Serving router on real-world Services (tests/fixtures/realworld/knative/), on the real
API server: weight, header A/B (tag header), mirror (refused), reset, read back from the server.

Defect 5 of issue 18 (existing tags renamed to stableTag/canaryTag) is covered here, and the
latestRevision target that stands for the canary (Flagger's Knative routing).
"""

from __future__ import annotations

import pytest

from analyzer.routers.base import RouterError
from tests.routers.realworld import every_operation, get, live, seed, set_status

pytestmark = pytest.mark.kube


def knative(stable: str, canary: str, service: str = "example-service") -> dict:
    return {"provider": "knative", "knativeService": service, "stableRevision": stable,
            "canaryRevision": canary}


def traffic(cluster, ns, obj) -> list[dict]:
    return get(cluster, obj, ns)["spec"]["traffic"]


def test_existing_tags_are_kept(kube_cluster, kube_namespace):
    """Defect 5: Knative's docs tag example-service-1 `current` and -2 `candidate` (their URLs
    current-example-service... and candidate-...); the router renamed them to stable/canary,
    deleting those URLs. The tag-header A/B must use the canary's actual tag."""
    (obj,) = seed(kube_cluster, kube_namespace,
                  "knative/knative-docs-current-candidate-latest.yaml")
    router = live(kube_cluster, knative("example-service-1", "example-service-2"),
                  kube_namespace)
    assert router.get_weight().canary_weight == 50
    router.set_weight(20)
    assert traffic(kube_cluster, kube_namespace, obj) == [
        {"tag": "current", "revisionName": "example-service-1", "percent": 80,
         "latestRevision": False},
        {"tag": "candidate", "revisionName": "example-service-2", "percent": 20,
         "latestRevision": False},
        {"tag": "latest", "latestRevision": True, "percent": 0}]
    router.set_header_route({"header": "Knative-Serving-Tag", "value": "candidate"})
    with pytest.raises(RouterError, match="Knative-Serving-Tag: candidate"):
        router.set_header_route({"header": "Knative-Serving-Tag", "value": "canary"})
    with pytest.raises(RouterError, match="cannot mirror"):
        router.set_mirror(10)
    router.reset()
    assert [(t.get("tag"), t["percent"]) for t in traffic(kube_cluster, kube_namespace, obj)] \
        == [("current", 100), ("candidate", 0), ("latest", 0)]


def test_untagged_canary_gets_a_free_tag_and_stable_keeps_its_own(kube_cluster, kube_namespace):
    """Defect 5: with `current` at 100 % the first step renamed current to stable."""
    (obj,) = seed(kube_cluster, kube_namespace, "knative/knative-docs-current-latest.yaml")
    router = live(kube_cluster, knative("example-service-1", "example-service-2"),
                  kube_namespace)
    router.set_weight(10)
    assert traffic(kube_cluster, kube_namespace, obj) == [
        {"tag": "current", "revisionName": "example-service-1", "percent": 90,
         "latestRevision": False},
        {"tag": "latest", "latestRevision": True, "percent": 0},
        {"revisionName": "example-service-2", "percent": 10, "latestRevision": False,
         "tag": "canary"}]
    assert router.get_weight().canary_weight == 10


def test_flagger_latest_revision_counts_for_the_canary(kube_cluster, kube_namespace):
    """Flagger routes its canary as `latestRevision: true` (10 %) next to the pinned primary;
    once Knative reports the latest ready revision is the canary, that share is the canary's
    (it read 0 %). A step pins it."""
    (obj,) = seed(kube_cluster, kube_namespace, "knative/flagger-knative-generated.yaml")
    router = live(kube_cluster, knative("podinfo-00001", "podinfo-00002", "podinfo"),
                  kube_namespace)
    assert router.get_weight().canary_weight == 0  # no status: which revision is unknown
    set_status(kube_cluster, obj, kube_namespace, {"latestReadyRevisionName": "podinfo-00002"})
    assert router.get_weight().canary_weight == 10
    router.set_weight(20)
    assert traffic(kube_cluster, kube_namespace, obj) == [
        {"revisionName": "podinfo-00001", "percent": 80, "latestRevision": False,
         "tag": "stable"},
        {"revisionName": "podinfo-00002", "percent": 20, "latestRevision": False,
         "tag": "canary"}]
    assert get(kube_cluster, obj, kube_namespace)["metadata"]["annotations"] == \
        obj["metadata"]["annotations"]


def test_foreign_traffic_refused_and_staging_tag_kept(kube_cluster, kube_namespace):
    """Knative's docs: `staging` on -1 at 0 %, -2 40 %, -3 60 %. Rolling -2 -> -3 works and keeps
    the staging tag; rolling -1 -> -2 refuses (-3 carries traffic the policy does not own)."""
    (obj,) = seed(kube_cluster, kube_namespace, "knative/knative-docs-staging-tag.yaml")
    router = live(kube_cluster, knative("example-service-2", "example-service-3"),
                  kube_namespace)
    assert router.get_weight().canary_weight == 60
    router.set_weight(100)
    after = traffic(kube_cluster, kube_namespace, obj)
    assert after[0] == {"percent": 0, "revisionName": "example-service-1", "tag": "staging"}
    assert [t["percent"] for t in after] == [0, 0, 100]
    with pytest.raises(RouterError, match=r"example-service-3.*carries 100% the policy does not"):
        live(kube_cluster, knative("example-service-1", "example-service-2"),
             kube_namespace).set_weight(10)


# ---------------------------------------------------------------------------- every object

EVERY = [
    ("knative/flagger-knative-generated.yaml", knative("podinfo-00001", "podinfo-00002",
                                                       "podinfo"), "canary"),
    ("knative/knative-docs-current-candidate-latest.yaml",
     knative("example-service-1", "example-service-2"), "candidate"),
    ("knative/knative-docs-current-latest.yaml",
     knative("example-service-1", "example-service-2"), "canary"),
    ("knative/knative-docs-staging-tag.yaml",
     knative("example-service-2", "example-service-3"), "canary"),
]


@pytest.mark.parametrize(("rel", "cfg", "tag"), EVERY, ids=[e[0] for e in EVERY])
def test_weight_header_mirror_reset_on_every_object(kube_cluster, kube_namespace, rel, cfg, tag):
    """Every real-world Knative Service: each operation (A/B by the canary's tag header; the
    tag route is not reported back), mirroring refused; percents always sum to 100."""
    (obj,) = seed(kube_cluster, kube_namespace, rel)
    router = live(kube_cluster, cfg, kube_namespace)
    every_operation(router, header={"header": "Knative-Serving-Tag", "value": tag}, mirror=None,
                    header_read_back=False)
    assert sum(t.get("percent", 0) for t in traffic(kube_cluster, kube_namespace, obj)) == 100
    tags = {t.get("tag") for t in obj["spec"]["traffic"]} - {None}
    assert tags <= {t.get("tag") for t in traffic(kube_cluster, kube_namespace, obj)}
