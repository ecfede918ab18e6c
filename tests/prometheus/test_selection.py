"""Pure pieces of the presets: selectors and the way back to a version (selection.py), and the
no-series explanation (diagnose.py) on a fake label-values look-up."""

from __future__ import annotations

import pytest

from analyzer.sources.prometheus.client import QueryFailed
from analyzer.sources.prometheus.diagnose import MAX_LOOKUPS, explain
from analyzer.sources.prometheus.presets import Matcher, get_preset
from analyzer.sources.prometheus.selection import Member, plan
from tests.prometheus.conftest import make_policy


def _plan(preset: str, **kw: object) -> tuple:
    p = make_policy(preset, "http://127.0.0.1:1", **kw)  # type: ignore[arg-type]
    return plan(p.spec.metrics, p.spec.target, p.spec.router, p.spec.strategy.type)


@pytest.mark.parametrize(("op", "value", "yes", "no"), [
    ("=", "v1", "v1", "v2"), ("!=", "", "x", ""), ("=~", "5..|Unavailable", "Unavailable", "50"),
    ("!~", "0|", "14", ""), ("=~", "(?:iris|iris2)_[0-9]+", "iris2_3", "iris_x"),
])
def test_matcher_decides_as_prometheus(op: str, value: str, yes: str, no: str) -> None:
    m = Matcher("l", op, value)  # type: ignore[arg-type]
    assert m.matches(yes) and not m.matches(no)


def test_istio_errors_are_two_disjoint_selectors() -> None:
    layout, member = _plan("istio", namespace="shop", service="checkout")
    errors = layout.selectors("errors", [member])
    assert errors == (
        'istio_requests_total{reporter="destination", destination_service_namespace="shop", '
        'destination_service_name="checkout", destination_version=~"v1|v2", '
        'response_code=~"5.."}',
        'istio_requests_total{reporter="destination", destination_service_namespace="shop", '
        'destination_service_name="checkout", destination_version=~"v1|v2", '
        'response_code!~"5..", grpc_response_status=~"2|4|12|13|14|15"}',
    )
    assert len(layout.selectors("requests", [member])) == 1


def test_pattern_versions_map_back_to_their_model() -> None:
    layout, member = _plan("seldon-v2", namespace="seldon-mesh", service="iris", stable="iris",
                           canary="iris2", checks=[{"type": "error-rate"}])
    assert layout.version_mode == "pattern"
    key = ("seldon-mesh", "iris")
    assert layout.role((*key, "iris_7"), member) == "stable"
    assert layout.role((*key, "iris2_1"), member) == "canary"
    assert layout.role((*key, "iris2x_1"), member) is None
    assert layout.role(("other-ns", "iris", "iris_7"), member) is None
    other = Member("seldon-mesh", "iris", "iris.v1", "iris.v2")  # dots escaped, not wildcards
    (sel,) = layout.selectors("requests", [member, other])
    assert r'model_internal=~"(?:iris|iris\\.v1|iris\\.v2|iris2)_[0-9]+"' in sel
    assert layout.role((*key, "irisXv1_2"), other) is None


def test_exported_namespace_first() -> None:
    layout, member = _plan("nginx-ingress", namespace="web", service="frontend")
    assert layout.group == ("exported_namespace", "namespace", "ingress", "canary")
    assert layout.role(("web", "ingress-nginx", "frontend", ""), member) == "stable"
    assert layout.role(("", "web", "frontend", "web-frontend-canary-80"), member) == "canary"
    assert layout.role(("staging", "web", "frontend", ""), member) is None
    layout, _ = _plan("nginx-ingress", namespace="web", service="frontend",
                      namespaceLabel="namespace")
    assert layout.group == ("namespace", "ingress", "canary")


def test_gateway_versions_come_from_the_router() -> None:
    router = {"provider": "gateway-api", "httpRoute": "store", "stableService": "store-v1",
              "canaryService": "store-v2", "port": 8080}
    _, m = _plan("gateway-contour", namespace="store", router=router)
    assert (m.stable, m.canary) == ("store_store-v1_8080", "store_store-v2_8080")
    _, m = _plan("gateway-envoy", namespace="store", router=router,
                 envoyGatewayClusters="merged")
    assert m.stable == "service/store/store-v1/8080"
    _, m = _plan("gateway-istio", namespace="store", router=router,
                 labels={"source_workload": "gw-istio"})
    assert (m.stable, m.canary, m.service) == ("store-v1", "store-v2", None)


def test_mirror_counts_the_shadow_host() -> None:
    _, m = _plan("istio", strategy={"type": "mirror", "mirrorPercent": 100})
    assert m.services == ("checkout", "checkout-shadow")
    _, m = _plan("istio")
    assert m.services == ("checkout",)


# ---------------------------------------------------------------------- explanations


def _explain(preset: str, values: dict[tuple[str, str], list[str]], **kw: object) -> str:
    layout, member = _plan(preset, **kw)
    asked: list[tuple[str, str]] = []

    def lookup(label: str, match: str) -> list[str]:
        asked.append((label, match))
        return values.get((label, match), [])

    hints = [h for h in get_preset(preset).hints if h.kind == "requests"]
    why = explain(layout.metrics("requests"), layout.conditions(member, "canary"), hints,
                  "shop", lookup)
    assert len(asked) <= MAX_LOOKUPS
    return why


def test_explains_the_first_matcher_without_values() -> None:
    sel = ('istio_requests_total{destination_service_name="checkout", '
           'destination_service_namespace="shop", reporter="destination"}')
    why = _explain("istio", {("destination_version", sel): ["v1", "v3"]})
    assert why == 'no series with destination_version="v2"; values seen: ["v1", "v3"]'


def test_explains_a_missing_label_and_a_missing_metric() -> None:
    # the version label has no values anywhere, but the service matcher finds the series
    sel = 'istio_requests_total{destination_service_namespace="shop", reporter="destination"}'
    why = _explain("istio", {("destination_service_name", sel): ["checkout"]})
    assert why.startswith('no series with destination_version="v2": the series of '
                          'istio_requests_total{destination_service_name="checkout", ')
    assert why.endswith("have no destination_version label")
    assert _explain("istio", {}) == "no series named istio_requests_total in the window"


def test_look_up_failures_are_said() -> None:
    layout, member = _plan("istio")

    def broken(label: str, match: str) -> list[str]:
        raise QueryFailed("HTTP 503: unavailable", True)

    why = explain(layout.metrics("requests"), layout.conditions(member, None), [], "shop",
                  broken)
    assert why == "(could not look up label values: HTTP 503: unavailable)"
