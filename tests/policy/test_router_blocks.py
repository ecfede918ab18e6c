"""The router blocks issue 18 added or changed: sticky sessions, route names and indexes, kept
destinations, the NGINX annotation prefix, header regexes, Gateway API mirroring, Seldon Core 2;
each mistake named with its field."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from analyzer.policy import PolicyError, parse_policy

ISTIO = {"provider": "istio", "virtualService": "vs", "destinationRule": "dr",
         "stableSubset": "v1", "canarySubset": "v2"}


def policy(router: dict[str, Any], strategy: dict[str, Any] | None = None) -> Any:
    return parse_policy(yaml.safe_dump({
        "apiVersion": "canary-analyzer.io/v1alpha1", "kind": "RolloutPolicy",
        "metadata": {"name": "p"},
        "spec": {"target": {"service": "web", "stable": "v1", "canary": "v2"},
                 "router": router, "strategy": strategy or {"steps": [10, 50]},
                 "metrics": {"source": "simulate", "allowSimulatedMetrics": True}}}))


def refused(router: dict[str, Any], strategy: dict[str, Any] | None = None) -> str:
    with pytest.raises(PolicyError) as info:
        policy(router, strategy)
    return str(info.value)


def test_sticky_sessions_defaults_and_canary_only():
    p = policy({**ISTIO, "stickySessions": {}})
    sticky = p.spec.router.stickySessions
    assert (sticky.cookieName, sticky.maxAge.total_seconds()) == ("canary-analyzer", 86400)
    assert "stickySessions applies to strategy type canary" in refused(
        {**ISTIO, "stickySessions": {}}, {"type": "blue-green"})
    assert "maxAge must be at least 1s" in refused({**ISTIO, "stickySessions": {"maxAge": "0s"}})
    assert "cookieName" in refused({**ISTIO, "stickySessions": {"cookieName": "a b"}})
    assert "stickySessions" in refused({"provider": "knative", "knativeService": "k",
                                        "stickySessions": True})
    assert "stickySessions applies" in refused(
        {"provider": "nginx-ingress", "ingress": "i", "canaryService": "c",
         "stickySessions": True}, {"type": "ab", "match": {"header": {"name": "x",
                                                                       "value": "1"}}})


def test_istio_routes_by_name_or_index():
    assert policy({**ISTIO, "routes": ["primary", "http[1]", "tls[0]"]}).spec.router.routes == [
        "primary", "http[1]", "tls[0]"]
    assert "http[N], tls[N], tcp[N]" in refused({**ISTIO, "routes": ["udp[0]"]})
    assert "listed twice" in refused({**ISTIO, "routes": ["a", "a"]})
    assert "host applies to subset mode" in refused(
        {"provider": "istio", "virtualService": "vs", "stableHost": "a", "canaryHost": "b",
         "host": "c"})
    kept = policy({**ISTIO, "keepDestinations": [{"host": "other", "subset": "s"}]})
    assert kept.spec.router.keepDestinations[0].host == "other"


def test_nginx_annotation_prefix():
    p = policy({"provider": "nginx-ingress", "ingress": "i", "canaryService": "c"})
    assert p.spec.router.annotationPrefix == "nginx.ingress.kubernetes.io"
    assert "annotationPrefix" in refused({"provider": "nginx-ingress", "ingress": "i",
                                          "canaryService": "c", "annotationPrefix": "Bad/x"})


def test_header_regex_where_the_router_can_match_one():
    ab = {"type": "ab", "match": {"header": {"name": "x-user", "regex": "beta-.*"}}}
    for router in (ISTIO, {"provider": "gateway-api", "httpRoute": "r", "stableService": "a",
                           "canaryService": "b"},
                   {"provider": "nginx-ingress", "ingress": "i", "canaryService": "c"}):
        assert policy(router, ab).spec.strategy.match.header.regex == "beta-.*"
    assert "cannot match a header by regex" in refused(
        {"provider": "knative", "knativeService": "k"}, ab)
    assert "exactly one of value or regex" in refused(ISTIO, {"type": "ab", "match": {
        "header": {"name": "x", "value": "1", "regex": "1"}}})


def test_mirroring_providers():
    gateway = {"provider": "gateway-api", "httpRoute": "r", "stableService": "a",
               "canaryService": "b"}
    assert policy(gateway, {"type": "mirror", "mirrorPercent": 12.5})
    assert "cannot mirror traffic (mirrorPercent)" in refused(
        {"provider": "nginx-ingress", "ingress": "i", "canaryService": "c"},
        {"type": "blue-green", "mirrorPercent": 10})


def test_seldon_v2_block():
    p = policy({"provider": "seldon-v2", "experiment": "e"}, {"type": "mirror",
                                                               "mirrorPercent": 20})
    assert (p.spec.router.resourceType, p.spec.router.stableModel) == ("model", None)
    assert "seldon-model: <canary>" in refused(
        {"provider": "seldon-v2", "experiment": "e"},
        {"type": "ab", "match": {"header": {"name": "x", "value": "1"}}})
    assert "whole percents" in refused({"provider": "seldon-v2", "experiment": "e"},
                                       {"type": "mirror", "mirrorPercent": 12.5})
    assert "resourceType" in refused({"provider": "seldon-v2", "experiment": "e",
                                      "resourceType": "server"})
