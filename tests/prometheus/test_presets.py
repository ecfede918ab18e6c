"""Every preset against a real Prometheus: exactly the counts the dataset wrote."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from analyzer.demo.local_prometheus import PrometheusServer
from analyzer.sources.prometheus.source import PrometheusMetricSource, QueryCoalescer
from tests.prometheus import datasets
from tests.prometheus.conftest import make_policy

pytestmark = pytest.mark.prometheus

T0 = datetime.fromtimestamp(datasets.T0, UTC)
T1 = datetime.fromtimestamp(datasets.T1, UTC)
PRESETS = list(datasets.EXPORTERS)


def _source(prom: PrometheusServer, preset: str, **kw: object) -> PrometheusMetricSource:
    svc = str(kw.pop("service", "checkout"))
    stable, canary = datasets.VERSIONS.get(preset, datasets.VERSIONS["generic"])(svc)
    policy = make_policy(preset, prom.url, service=svc, stable=str(kw.pop("stable", stable)),
                         canary=str(kw.pop("canary", canary)), **kw)
    return PrometheusMetricSource(policy, coalescer=QueryCoalescer())


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("service", ["checkout", "cart"])
def test_exact_counts_per_preset(
    prom: PrometheusServer, dataset: datasets.Dataset, preset: str, service: str
) -> None:
    samples = _source(prom, preset, service=service).fetch(T0, T1, canary_weight=10)
    assert samples.ok, samples.no_data_reason
    assert samples.canary_weight == 10
    stable, canary = datasets.VERSIONS[preset](service)
    for got, name in ((samples.stable, stable), (samples.canary, canary)):
        want = dataset.expected[(preset, service, name)]
        assert got is not None
        assert (got.requests, got.errors) == (want.requests, want.errors)
        assert got.latency is not None
        assert got.latency.le == pytest.approx(tuple(want.buckets))
        assert got.latency.counts == tuple(want.buckets.values())
    # the canary's pods reset and appear inside the window: the raw-sample path was used
    assert any("ms]" in q and "offset" not in q for q in samples.queries)


@pytest.mark.parametrize("preset", PRESETS)
def test_version_without_series_is_no_data(prom: PrometheusServer, preset: str) -> None:
    if preset == "nginx-ingress":
        # the canary is told apart by a non-empty `canary` label: an ingress without canary
        # traffic has none
        src = _source(prom, preset, service="nothing")
        samples = src.fetch(T0, T1)
        assert samples.stable is None and samples.canary is None
        assert "no series for either version" in (samples.no_data_reason or "")
        assert 'no series with ingress="nothing"; values seen: ["cart", "checkout"]' in (
            samples.no_data_reason or "")
    else:
        samples = _source(prom, preset, canary="missing-version").fetch(T0, T1)
        assert samples.stable is not None and samples.stable.requests > 0  # still reported
        assert samples.canary is None
        assert "missing-version" in (samples.no_data_reason or "")
        assert "no series for the canary version" in (samples.no_data_reason or "")
    assert not samples.ok
    assert samples.queries and samples.queries[0] in (samples.no_data_reason or "")


def test_steady_series_use_one_query_per_metric(
    prom: PrometheusServer, dataset: datasets.Dataset
) -> None:
    src = _source(prom, "generic", service="svc3", namespace="fleet")
    samples = src.fetch(T0, T1)
    assert samples.ok, samples.no_data_reason
    assert len(samples.queries) == 3  # requests, errors, latency: no reset, no raw query
    assert samples.stable is not None
    assert samples.stable.requests == dataset.expected[("generic", "svc3", "v1")].requests


def test_latency_not_queried_without_a_latency_check(prom: PrometheusServer) -> None:
    src = _source(prom, "istio", checks=[{"type": "error-rate"}])
    samples = src.fetch(T0, T1)
    assert samples.ok
    assert samples.stable is not None and samples.stable.latency is None
    assert not any("bucket" in q for q in samples.queries)


def test_consecutive_windows_add_up(prom: PrometheusServer, dataset: datasets.Dataset) -> None:
    """Windows tile: two halves sum to the whole, through the reset."""
    src = _source(prom, "istio")
    mid = datetime.fromtimestamp((datasets.T0 + datasets.T1) // 2, UTC)
    a, b = src.fetch(T0, mid), src.fetch(mid, T1)
    assert a.ok and b.ok
    want = dataset.expected[("istio", "checkout", "v2")]
    assert a.canary is not None and b.canary is not None
    assert a.canary.requests + b.canary.requests == want.requests
    assert a.canary.errors + b.canary.errors == want.errors


def test_custom_templates(prom: PrometheusServer, dataset: datasets.Dataset) -> None:
    queries = {
        "requests": 'sum by ({version_label}) (http_requests_total{namespace="{namespace}", '
                    'service="{service}", {version_label}=~"{versions}"{extra_matchers}})',
        "errors": 'sum by ({version_label}) (http_requests_total{namespace="{namespace}", '
                  'service="{service}", {version_label}=~"{versions}", code=~"5.."})',
        "latency": 'sum by ({version_label}, le) (http_request_duration_seconds_bucket{'
                   'namespace="{namespace}", service="{service}", '
                   '{version_label}=~"{versions}"})',
    }
    src = _source(prom, "custom", service="svc5", namespace="fleet", queries=queries)
    samples = src.fetch(T0, T1)
    assert samples.ok, samples.no_data_reason
    want = dataset.expected[("generic", "svc5", "v2")]
    assert samples.canary is not None and samples.canary.latency is not None
    assert (samples.canary.requests, samples.canary.errors) == (want.requests, want.errors)
    assert samples.canary.latency.counts == tuple(want.buckets.values())
    assert 'service="svc5"' in samples.queries[0]


def test_custom_template_refuses_a_reset(prom: PrometheusServer) -> None:
    queries = {
        "requests": 'sum by (version) (http_requests_total{namespace="{namespace}", '
                    'service="{service}"})',
        "errors": 'sum by (version) (http_requests_total{namespace="{namespace}", '
                  'service="{service}", code=~"5.."})',
    }
    src = _source(prom, "custom", service="checkout", queries=queries,
                  checks=[{"type": "error-rate"}])
    samples = src.fetch(T0, T1)
    assert not samples.ok
    assert "counter decreased" in (samples.no_data_reason or "")
