"""API versions on a second real API server whose CRDs are older releases' (the session cluster
serves the newest): Istio 1.21 (networking.istio.io v1alpha3 + v1beta1, no v1), Linkerd's SMI
TrafficSplit (v1alpha1 + v1alpha2, no v1alpha4) and Gateway API v1.2.1 standard (no rule names, no
mirror percent). The CRDs are in tests/fixtures/realworld/crds/, each headed by its source.

Version problems of issue 18 covered here: hard-coded versions (every call failed with 404 on
these servers), error messages printing the hard-coded version, Gateway API rule names pruned
(A/B rules piled up), and a mirror percent the server would prune (mirroring 100 %).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import pytest

from analyzer.routers.base import RouterError
from analyzer.routers.kube.discovery import choose_version
from tests.routers.realworld import FIXTURES, every_operation, get, live, seed, without_meta
from tests.support.kube_cluster import KubeCluster

pytestmark = pytest.mark.kube

CRDS = FIXTURES / "crds"
SUBSETS = {"provider": "istio", "stableSubset": "v1", "canarySubset": "v2"}


@pytest.fixture(scope="module")
def old_cluster() -> Iterator[KubeCluster]:
    """A second API server (about 5 s, 450 MB) with the older releases' CRDs only."""
    cluster = KubeCluster()
    try:
        cluster.start()
        cluster.install_crds(CRDS / "istio-1.21.0-networking.crd.yaml",
                             CRDS / "linkerd-smi-trafficsplit.crd.yaml",
                             CRDS / "gateway-api-v1.2.1-httproutes.crd.yaml")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def old_ns(old_cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    name = old_cluster.create_namespace(f"t-{slug}-{secrets.token_hex(3)}")
    try:
        yield name
    finally:
        old_cluster.delete_namespace(name)


# ---------------------------------------------------------------------------- Istio 1.21


def test_istio_121_served_versions_are_used(old_cluster, old_ns):
    """bookinfo's 80/20 reviews split on Istio 1.21 (no networking.istio.io/v1): every call of
    the router went to /v1/ and failed with 404 "does not exist". Discovery picks the server's
    preferred v1beta1; reads and writes go there."""
    vs, _ = seed(old_cluster, old_ns, "istio/bookinfo-reviews-80-20.yaml",
                 # Istio 1.21 has no v1: the sample's v1 DestinationRule is written in v1alpha3
                 api_version={"DestinationRule": "networking.istio.io/v1alpha3"})
    router = live(old_cluster, {**SUBSETS, "virtualService": "reviews",
                                "destinationRule": "reviews"}, old_ns)
    assert router.get_weight().canary_weight == 20
    router.set_weight(50)
    assert router.last_applied[0]["apiVersion"] == "networking.istio.io/v1beta1"
    assert [d["weight"] for d in get(old_cluster, vs, old_ns)["spec"]["http"][0]["route"]] == [
        50, 50]
    router.set_header_route({"header": "x-canary", "value": "1"})
    router.reset()
    assert without_meta(get(old_cluster, vs, old_ns))["spec"]["http"] == [
        {"route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 100},
                   {"destination": {"host": "reviews", "subset": "v2"}, "weight": 0}]}]


def test_istio_121_errors_name_the_served_version(old_cluster, old_ns):
    """Errors printed `(networking.istio.io/v1)` for objects the server has in other versions;
    now the version read. (bookinfo's v1 test-delay sample, written in v1alpha3 for Istio 1.21.)"""
    seed(old_cluster, old_ns, "istio/bookinfo-ratings-test-delay.yaml", api_version={
        "VirtualService": "networking.istio.io/v1alpha3",
        "DestinationRule": "networking.istio.io/v1alpha3"})
    router = live(old_cluster, {**SUBSETS, "virtualService": "ratings",
                                "destinationRule": "ratings"}, old_ns)
    with pytest.raises(RouterError, match=rf"VirtualService {old_ns}/ratings "
                                          r"\(networking.istio.io/v1beta1\): 2 routes"):
        router.set_weight(10)
    missing = live(old_cluster, {**SUBSETS, "virtualService": "nope",
                                 "destinationRule": "ratings"}, old_ns)
    with pytest.raises(RouterError, match=r"\(networking.istio.io/v1beta1\): it does not exist"):
        missing.set_weight(10)


def test_group_not_served_at_all_is_named(old_cluster, old_ns):
    """No Seldon Core 2 CRD on this server: the error says the group is not served."""
    router = live(old_cluster, {"provider": "seldon-v2", "experiment": "e"}, old_ns)
    with pytest.raises(RouterError, match=r"serves no API group mlops\.seldon\.io \(is the "
                                          r"Experiment CRD installed\?\)"):
        router.get_weight()


# ---------------------------------------------------------------------------- Linkerd SMI


def test_linkerd_smi_v1alpha1_quantities(old_cluster, old_ns):
    """Defect 8 and the hard-coded v1alpha4 on a Linkerd cluster: the SMI spec's foobar split
    (v1alpha1, 1 / 500m) is read through the served v1alpha2 as a third, moved with integer
    weights and read back."""
    (ts,) = seed(old_cluster, old_ns, "smi/smi-spec-v1alpha1-foobar-500m.yaml")
    router = live(old_cluster, {"provider": "smi", "trafficSplit": "foobar-rollout",
                                "stableService": "foobar-v1", "canaryService": "foobar-v2"},
                  old_ns, service="foobar")
    assert router.get_weight().canary_weight == 33
    router.set_weight(20)
    assert get(old_cluster, ts, old_ns)["spec"]["backends"] == [
        {"service": "foobar-v1", "weight": 80}, {"service": "foobar-v2", "weight": 20}]
    assert router.last_applied[0]["apiVersion"] == "split.smi-spec.io/v1alpha2"
    router.reset()
    assert router.get_weight().canary_weight == 0


def test_linkerd_smi_leaf_weights_and_errors_name_the_version(old_cluster, old_ns):
    """linkerd-smi's own test data (500m / 0m, the root service also a backend), and the SMI
    spec's three-backend example refused with the served version in the message."""
    seed(old_cluster, old_ns, "smi/linkerd-smi-leaf-weights.yaml")
    router = live(old_cluster, {"provider": "smi", "trafficSplit": "backend-traffic-split",
                                "stableService": "backend-svc", "canaryService": "failing-svc"},
                  old_ns, service="backend-svc")
    assert router.get_weight().canary_weight == 0
    router.set_weight(10)
    assert router.get_weight().canary_weight == 10
    seed(old_cluster, old_ns, "smi/smi-spec-v1alpha1-my-weights.yaml")
    three = live(old_cluster, {"provider": "smi", "trafficSplit": "my-weights",
                               "stableService": "one", "canaryService": "two"},
                 old_ns, service="numbers")
    with pytest.raises(RouterError, match=r"\(split.smi-spec.io/v1alpha2\): backend three "
                                          r"carries weight 1500m"):
        three.set_weight(10)


# ---------------------------------------------------------------------------- Gateway API 1.2


def test_ab_rules_found_without_names(old_cluster, old_ns):
    """Gateway API v1.2.1 prunes `rules[].name`: the router found its A/B rule by name, so two
    A/B changes and a reset left two A/B rules sending header users to the canary. Ours are
    recorded in an annotation and found by content."""
    (route,) = seed(old_cluster, old_ns, "gateway-api/gateway-api-traffic-split-2.yaml")
    router = live(old_cluster, {"provider": "gateway-api", "httpRoute": "foo-route",
                                "stableService": "foo-v1", "canaryService": "foo-v2"}, old_ns)
    router.set_header_route({"header": "x-canary", "value": "1"})
    router.set_header_route({"header": "x-canary", "value": "2"})
    rules = get(old_cluster, route, old_ns)["spec"]["rules"]
    assert len(rules) == 2 and "name" not in rules[0]
    assert router.get_weight().header_route == {"header": "x-canary", "value": "2"}
    router.set_weight(30)
    router.reset()
    after = get(old_cluster, route, old_ns)
    assert after["spec"]["rules"] == [{**route["spec"]["rules"][0], "backendRefs": [
        {**route["spec"]["rules"][0]["backendRefs"][0], "weight": 100},
        {**route["spec"]["rules"][0]["backendRefs"][1], "weight": 0}]}]
    assert "canary-analyzer.io/rules" not in after["metadata"].get("annotations", {})


def test_mirror_percent_refused_where_the_schema_lacks_it(old_cluster, old_ns):
    """Gateway API v1.2.1 standard has no requestMirror.percent: the server would prune it and
    mirror 100 %. A server-side dry run finds out; nothing is written; 100 % works."""
    (route,) = seed(old_cluster, old_ns, "gateway-api/gateway-api-request-mirroring.yaml")
    router = live(old_cluster, {"provider": "gateway-api", "httpRoute": "http-filter-mirror",
                                "stableService": "foo-v1", "canaryService": "foo-v3"}, old_ns)
    with pytest.raises(RouterError, match=r"no requestMirror percent .*nothing was applied"):
        router.set_mirror(25)
    assert without_meta(get(old_cluster, route, old_ns)) == without_meta(route)
    router.set_mirror(100)
    filters = get(old_cluster, route, old_ns)["spec"]["rules"][0]["filters"]
    assert [f["requestMirror"]["backendRef"]["name"] for f in filters] == ["foo-v2", "foo-v3"]
    assert router.get_weight().mirror_percent == 100.0


# ---------------------------------------------------------------------------- the choice itself


def test_choose_version():
    served = {"v1beta1", "v1alpha3"}.__contains__
    assert choose_version(["v1", "v1beta1", "v1alpha3"], "v1beta1", served) == "v1beta1"
    assert choose_version(["v1", "v1beta1", "v1alpha3"], "v2", served) == "v1beta1"
    assert choose_version(["v1"], "v1beta1", served) is None


SMI_EVERY = [
    ("smi/smi-spec-v1alpha1-foobar-500m.yaml", "foobar-rollout", "foobar-v1", "foobar-v2",
     "foobar"),
    ("smi/linkerd-smi-leaf-weights.yaml", "backend-traffic-split", "backend-svc", "failing-svc",
     "backend-svc"),
    ("smi/argo-smi-v1alpha1-generated.yaml", "rollout-smi-experiment",
     "rollout-smi-experiment-stable", "rollout-smi-experiment-canary",
     "rollout-smi-experiment-stable"),
    ("smi/smi-spec-v1alpha2-foobar.yaml", "foobar-rollout", "foobar-v1", "foobar-v2", "foobar"),
]


@pytest.mark.parametrize(("rel", "split", "stable", "canary", "root"), SMI_EVERY,
                         ids=[e[0] for e in SMI_EVERY])
def test_smi_weight_header_mirror_reset_on_every_object(old_cluster, old_ns, rel, split, stable,
                                                        canary, root):
    """Every v1alpha1/v1alpha2 TrafficSplit on the Linkerd-like server: each operation, read
    back (header and mirror refused)."""
    seed(old_cluster, old_ns, rel)
    every_operation(live(old_cluster, {"provider": "smi", "trafficSplit": split,
                                       "stableService": stable, "canaryService": canary},
                         old_ns, service=root), header=None, mirror=None)
