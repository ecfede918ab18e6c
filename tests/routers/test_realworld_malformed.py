"""No input gives a traceback: every router, offline, on real-world objects with one part
replaced by something of another shape (a list where a mapping was, a string weight, null, a
deleted field). Every operation either works or raises RouterError naming the object."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.routers.base import RouterError
from analyzer.routers.factory import build_router
from tests.routers.conftest import make_policy
from tests.routers.realworld import FIXTURES, fixture

SUBSETS = {"provider": "istio", "stableSubset": "v1", "canarySubset": "v2"}
CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("istio/bookinfo-reviews-80-20.yaml",
     {**SUBSETS, "virtualService": "reviews", "destinationRule": "reviews",
      "stickySessions": {}}, {}),
    ("istio/flagger-faq-frontend.yaml",
     {"provider": "istio", "virtualService": "frontend", "stableHost": "podinfo-primary",
      "canaryHost": "podinfo-canary"}, {}),
    ("istio/argo-host-http-tls-split.yaml",
     {"provider": "istio", "virtualService": "istio-host-split-vsvc",
      "stableHost": "istio-host-split-stable", "canaryHost": "istio-host-split-canary",
      "routes": ["primary", "tls[0]"]}, {}),
    ("gateway-api/gateway-api-url-rewrite.yaml",
     {"provider": "gateway-api", "httpRoute": "http-filter-1", "stableService": "filter-svc",
      "canaryService": "filter-svc-2", "stickySessions": {}}, {}),
    ("nginx-ingress/argo-canary-weight-total.yaml",
     {"provider": "nginx-ingress", "ingress": "stable-ingress",
      "canaryIngress": "rollout-stable-ingress-canary", "canaryService": "canary-service"},
     {"service": "stable-service"}),
    ("knative/knative-docs-current-candidate-latest.yaml",
     {"provider": "knative", "knativeService": "example-service",
      "stableRevision": "example-service-1", "canaryRevision": "example-service-2"}, {}),
    ("smi/smi-spec-v1alpha1-foobar-500m.yaml",
     {"provider": "smi", "trafficSplit": "foobar-rollout", "stableService": "foobar-v1",
      "canaryService": "foobar-v2"}, {"service": "foobar"}),
    ("seldon/seldon-v1-istio-canary.yaml",
     {"provider": "seldon", "seldonDeployment": "example"},
     {"stable": "main", "canary": "canary"}),
    ("seldon-v2/ab-default-model.yaml",
     {"provider": "seldon-v2", "experiment": "experiment-sample"},
     {"stable": "iris", "canary": "iris2"}),
]
OPERATIONS = [
    ("get_weight", ()), ("set_weight", (30,)), ("set_header_route", ({"header": "x-c",
                                                                      "value": "1"},)),
    ("set_header_route", ({"header": "x-c", "pattern": "a.*"},)), ("set_mirror", (10,)),
    ("set_mirror", (None,)), ("reset", ()),
]
DELETE = object()
junk = st.one_of(
    st.just(DELETE), st.none(), st.booleans(), st.integers(-5, 200), st.floats(-1, 1e3),
    st.text(max_size=6), st.just("500m"), st.just([]), st.just({}),
    st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=3)), max_size=2),
    st.dictionaries(st.sampled_from(["host", "weight", "name", "subset", "percent", "tag"]),
                    st.one_of(st.none(), st.integers(), st.text(max_size=3)), max_size=2),
)


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in an object's spec and annotations (what a router reads)."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            if prefix or k in ("spec", "metadata"):
                if prefix == ("metadata",) and k != "annotations":
                    continue
                out += paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, (*prefix, i))
    return out


def replaced(obj: dict[str, Any], path: tuple, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    node = obj
    for p in path[:-1]:
        node = node[p]
    if value is DELETE:
        node.pop(path[-1]) if isinstance(node, dict) else node.__delitem__(path[-1])
    else:
        node[path[-1]] = value
    return obj


@pytest.mark.parametrize(("rel", "router", "target"), CASES, ids=[c[0] for c in CASES])
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_misshapen_objects_give_router_errors_only(rel, router, target, data):
    objects = fixture(rel)
    ns = next((o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")),
              "default")
    which = data.draw(st.integers(0, len(objects) - 1), label="object")
    places = paths(objects[which])
    path = data.draw(st.sampled_from(places), label="path")
    value = data.draw(junk, label="value")
    objects[which] = replaced(objects[which], path, value)
    policy = make_policy(router, namespace=ns, **target)
    for name, args in OPERATIONS:
        r = build_router(policy, current_object=copy.deepcopy(objects))
        try:
            getattr(r, name)(*args)
        except RouterError as e:
            assert str(e)  # a message, never an empty one


def test_every_fixture_names_its_source():
    """Each real-world object keeps the comment naming where it comes from."""
    files = sorted(FIXTURES.rglob("*.yaml"))
    assert len(files) >= 50
    for f in files:
        assert f.read_text(encoding="utf-8").startswith("# Source: "), f
