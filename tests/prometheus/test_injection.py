"""User values placed into PromQL cannot change the query: the injection corpus."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from analyzer.demo.local_prometheus import PrometheusServer
from analyzer.sources.prometheus.source import (
    PrometheusConfigError,
    PrometheusMetricSource,
    QueryCoalescer,
    promql_regex,
    promql_string,
)
from tests.prometheus import datasets
from tests.prometheus.conftest import make_policy

T0 = datetime.fromtimestamp(datasets.T0, UTC)
T1 = datetime.fromtimestamp(datasets.T1, UTC)


@pytest.mark.prometheus
@pytest.mark.parametrize("value", datasets.INJECTION_CORPUS)
def test_version_values_match_only_themselves(
    prom: PrometheusServer, injection: tuple[str, dict[str, int]], value: str
) -> None:
    expected = injection[1]
    policy = make_policy("generic", prom.url, service="inj", namespace="inj", stable=value,
                         canary="v2", checks=[{"type": "error-rate"}])
    samples = PrometheusMetricSource(policy, coalescer=QueryCoalescer()).fetch(T0, T1)
    assert samples.ok, samples.no_data_reason
    assert samples.stable is not None and samples.canary is not None
    assert samples.stable.requests == expected[value]
    assert samples.canary.requests == expected["v2"]


@pytest.mark.prometheus
@pytest.mark.parametrize("value", datasets.INJECTION_CORPUS[:6])
def test_extra_label_values_are_escaped(
    prom: PrometheusServer, injection: tuple[str, dict[str, int]], value: str
) -> None:
    policy = make_policy("generic", prom.url, service="inj", namespace="inj", stable=value,
                         canary="v2", labels={"env": value}, checks=[{"type": "error-rate"}])
    samples = PrometheusMetricSource(policy, coalescer=QueryCoalescer()).fetch(T0, T1)
    # env=value selects only the corpus series: the canary (env="v2") has none
    assert samples.stable is not None
    assert samples.stable.requests == injection[1][value]
    assert samples.canary is None and not samples.ok


@pytest.mark.prometheus
def test_coalesced_versions_with_metacharacters(
    prom: PrometheusServer, injection: tuple[str, dict[str, int]]
) -> None:
    """Several corpus values in one regex alternation still each match only themselves."""
    coalescer = QueryCoalescer()
    sources = [
        PrometheusMetricSource(
            make_policy("generic", prom.url, service="inj", namespace="inj", stable=v,
                        canary="v2", checks=[{"type": "error-rate"}]),
            coalescer=coalescer,
        )
        for v in datasets.INJECTION_CORPUS
    ]
    for v, src in zip(datasets.INJECTION_CORPUS, sources, strict=True):
        s = src.fetch(T0, T1)
        assert s.ok, s.no_data_reason
        assert s.stable is not None and s.stable.requests == injection[1][v]
    assert coalescer.queries == 2  # requests + errors for all of them


def test_bad_label_names_are_rejected() -> None:
    policy = make_policy("generic", "http://127.0.0.1:1", labels={'x"} or vector(1) #': "a"})
    with pytest.raises(PrometheusConfigError, match="not a valid Prometheus label name"):
        PrometheusMetricSource(policy, coalescer=QueryCoalescer())


def test_escaping_shapes() -> None:
    assert promql_string('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    # RE2 metacharacters are escaped, then the string is escaped: `.` -> `\.` -> `\\.`
    assert promql_regex(["a.b", "c|d"]) == "a\\\\.b|c\\\\|d"
    assert promql_string("\x01") == "\\u0001"
