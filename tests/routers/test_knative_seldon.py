"""Knative Serving and Seldon Core routers on the real API server (percents that must sum to
100)."""

from __future__ import annotations

import copy

import pytest

from analyzer.routers.base import RouterError
from tests.routers.conftest import KNATIVE, KNATIVE_SERVICE, SELDON, SELDON_DEPLOYMENT, Kube

KSVC = ("serving.knative.dev/v1", "Service", "hello")
SDEP = ("machinelearning.seldon.io/v1", "SeldonDeployment", "iris")


def traffic(kube: Kube) -> list[dict]:
    return kube.get(*KSVC)["spec"]["traffic"]


def test_knative_pins_revisions_with_tags_and_sums_to_100(kube: Kube) -> None:
    seeded = kube.seed(KNATIVE_SERVICE)
    r = kube.router(KNATIVE)
    assert r.get_weight().canary_weight == 0
    r.set_weight(10)
    t = traffic(kube)
    assert {"revisionName": "hello-v0", "tag": "old", "percent": 0} in t  # foreign, untouched
    assert not any(x.get("latestRevision") is True for x in t)  # the default was taken over
    ours = {x["revisionName"]: x for x in t if x["revisionName"] in ("hello-v1", "hello-v2")}
    assert ours["hello-v1"] == {"revisionName": "hello-v1", "tag": "stable", "percent": 90,
                                "latestRevision": False}
    assert ours["hello-v2"] == {"revisionName": "hello-v2", "tag": "canary", "percent": 10,
                                "latestRevision": False}
    assert sum(x.get("percent", 0) for x in t) == 100
    for w in (50, 100, 0):
        r.set_weight(w)
        assert r.get_weight().canary_weight == w
        assert sum(x.get("percent", 0) for x in traffic(kube)) == 100
    svc = kube.get(*KSVC)
    assert svc["metadata"]["annotations"] == {"owner": "web"}
    assert svc["spec"]["template"] == seeded["spec"]["template"]


def test_knative_tagged_latest_revision_is_kept_at_zero(kube: Kube) -> None:
    ksvc = copy.deepcopy(KNATIVE_SERVICE)
    ksvc["spec"]["traffic"][0]["tag"] = "latest"
    kube.seed(ksvc)
    kube.router(KNATIVE).set_weight(25)
    latest = [x for x in traffic(kube) if x.get("latestRevision") is True]
    assert latest == [{"latestRevision": True, "percent": 0, "tag": "latest"}]


def test_knative_refuses_foreign_traffic_and_tag_clash(kube: Kube) -> None:
    ksvc = copy.deepcopy(KNATIVE_SERVICE)
    ksvc["spec"]["traffic"] = [{"revisionName": "hello-v1", "percent": 80},
                               {"revisionName": "hello-x", "percent": 20}]
    kube.seed(ksvc)
    with pytest.raises(RouterError, match=rf"Service {kube.ns}/hello.*hello-x.*carries 20%"):
        kube.router(KNATIVE).set_weight(10)
    kube.modify(*KSVC, lambda o: o["spec"].update(traffic=[
        {"revisionName": "hello-v1", "percent": 100}, {"revisionName": "zz", "tag": "canary"}]))
    assert kube.writes() == []
    kube.router(KNATIVE).set_weight(10)  # the tag is taken: the canary gets none
    assert {"revisionName": "zz", "tag": "canary"} in traffic(kube)
    assert {"revisionName": "hello-v2", "percent": 10, "latestRevision": False} in traffic(kube)


def test_knative_header_only_via_tag_header_and_no_mirror(kube: Kube) -> None:
    kube.seed(KNATIVE_SERVICE)
    r = kube.router(KNATIVE)
    r.set_header_route({"header": "Knative-Serving-Tag", "value": "canary"})
    assert any(x.get("tag") == "canary" and x["percent"] == 0 for x in traffic(kube))
    with pytest.raises(RouterError, match="Knative-Serving-Tag"):
        r.set_header_route({"header": "x-canary", "value": "1"})
    with pytest.raises(RouterError, match="cannot mirror"):
        r.set_mirror(10)


def test_knative_500_leaves_previous_split(kube: Kube) -> None:
    kube.seed(KNATIVE_SERVICE)
    r = kube.router(KNATIVE)
    r.set_weight(10)
    kube.proxy.inject(500, method="PATCH")
    with pytest.raises(RouterError, match="HTTP 500"):
        r.set_weight(90)
    assert r.get_weight().canary_weight == 10


def preds(kube: Kube) -> dict[str, dict]:
    return {p["name"]: p for p in kube.get(*SDEP)["spec"]["predictors"]}


def test_seldon_traffic_and_shadow(kube: Kube) -> None:
    seeded = {p["name"]: p for p in kube.seed(SELDON_DEPLOYMENT)["spec"]["predictors"]}
    r = kube.router(SELDON)
    r.set_weight(30)
    p = preds(kube)
    assert (p["v1"]["traffic"], p["v2"]["traffic"]) == (70, 30)
    assert p["explainer-test"] == seeded["explainer-test"]
    assert p["v1"]["graph"] == seeded["v1"]["graph"]
    assert r.get_weight().canary_weight == 30
    r.set_mirror(100)  # a shadow answers no live requests: its live traffic goes to 0
    assert (r.get_weight().canary_weight, r.get_weight().mirror_percent) == (0, 100.0)
    with pytest.raises(RouterError, match="is a shadow"):
        r.set_weight(10)
    p = preds(kube)
    assert p["v2"]["shadow"] is True and p["v2"]["traffic"] == 0 and p["v1"]["traffic"] == 100
    assert r.get_weight().mirror_percent == 100.0
    with pytest.raises(RouterError, match="must be 100"):
        r.set_mirror(50)
    r.reset()
    assert "shadow" not in preds(kube)["v2"]
    assert kube.get(*SDEP)["metadata"]["annotations"] == {"seldon.io/engine": "x"}


def test_seldon_missing_predictor_and_header_refused(kube: Kube) -> None:
    sdep = copy.deepcopy(SELDON_DEPLOYMENT)
    sdep["spec"]["predictors"] = sdep["spec"]["predictors"][:1]
    kube.seed(sdep)
    with pytest.raises(RouterError,
                       match=rf"SeldonDeployment {kube.ns}/iris.*predictor\(s\) v2 not"):
        kube.router(SELDON).set_weight(10)
    with pytest.raises(RouterError, match="cannot route by header"):
        kube.router(SELDON).set_header_route({"header": "a", "value": "b"})
