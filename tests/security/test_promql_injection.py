"""PromQL injection through every policy field that reaches a query, against a real Prometheus.

For each value of the injection corpus (tests/prometheus/datasets.py) and each field:
`target.namespace`, `target.service`, `target.stable`, `target.canary` (label values) and
`metrics.labels` values, the value is either refused when the policy is validated, or it is
neutralised: the query text has exactly the structure of a query for a harmless value (same
tokens outside string literals), and the real Prometheus returns exactly the requests of the
series labelled with that value, nothing of the decoy series. Label NAMES (`versionLabel`,
`namespaceLabel`, `metrics.labels` keys) are refused unless they are valid label names.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from analyzer.demo.local_prometheus import (
    OpenMetricsWriter,
    PrometheusServer,
    backfill,
    find_binary,
)
from analyzer.policy import PolicyError, parse_policy
from analyzer.sources.prometheus.source import (
    PrometheusConfigError,
    PrometheusMetricSource,
    QueryCoalescer,
)
from tests.prometheus import datasets
from tests.prometheus.conftest import make_policy

CORPUS = datasets.INJECTION_CORPUS
FIELDS = ("namespace", "service", "stable", "canary", "label")
DEFAULT = {"namespace": "inj-ns", "service": "inj-svc", "env": "prod"}
T0 = datetime.fromtimestamp(datasets.T0, UTC)
T1 = datetime.fromtimestamp(datasets.T1, UTC)


def _labels(field: str, value: str, version: str) -> dict[str, str]:
    labels = {**DEFAULT, "version": version, "code": "200"}
    if field in ("namespace", "service"):
        labels[field] = value
    elif field == "label":
        labels["env"] = value
    return labels


def _versions(field: str, value: str) -> tuple[str, str]:
    return {"stable": (value, "v2"), "canary": ("v1", value)}.get(field, ("v1", "v2"))


@pytest.fixture(scope="module")
def injection_prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict]]:
    if find_binary("prometheus") is None or find_binary("promtool") is None:
        pytest.fail("prometheus and promtool are required (make test installs them)")
    w = OpenMetricsWriter()
    expected: dict[tuple[str, str, str], int] = {}
    n = 0
    written: dict[tuple[tuple[str, str], ...], int] = {}
    for field in FIELDS:
        for value in CORPUS:
            for version in _versions(field, value):
                labels = _labels(field, value, version)
                key = tuple(sorted(labels.items()))
                if key not in written:  # one series per label set
                    n += 1
                    incs = [n % 7 + 1] * datasets.STEPS  # varied counts per series
                    written[key] = datasets.write_counter(
                        w, "http_requests_total", labels, incs, datasets.Pod("a"))
                expected[(field, value, version)] = written[key]
    # Decoys: big series that any escaped selector or `or vector(1)` would pull in.
    for version in ("v1", "v2"):
        datasets.write_counter(w, "http_requests_total", {**DEFAULT, "version": version,
                               "code": "200"}, [1000] * datasets.STEPS, datasets.Pod("d"))
        datasets.write_counter(w, "http_requests_total", {"namespace": "other",
                               "service": "other", "env": "other", "version": version,
                               "code": "200"}, [5000] * datasets.STEPS, datasets.Pod("d"))
    data_dir = tmp_path_factory.mktemp("prom-inj")
    backfill(w.text(), data_dir)
    server = PrometheusServer(data_dir).start()
    yield server.url, expected
    server.stop()


def skeleton(query: str) -> str:
    """The query with every string literal replaced by `S`: its structure."""
    out, i = [], 0
    while i < len(query):
        ch = query[i]
        if ch in "\"'`":
            j = i + 1
            while j < len(query) and query[j] != ch:
                j += 2 if ch != "`" and query[j] == "\\" else 1
            out.append("S")
            i = j + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _policy(address: str, field: str, value: str) -> Any:
    stable, canary = _versions(field, value)
    kw: dict[str, Any] = {"service": DEFAULT["service"], "namespace": DEFAULT["namespace"],
                          "labels": {"env": DEFAULT["env"]}}
    if field in ("namespace", "service"):
        kw[field] = value
    elif field == "label":
        kw["labels"] = {"env": value}
    return make_policy("generic", address, stable=stable, canary=canary,
                       checks=[{"type": "error-rate"}], **kw)


@pytest.mark.prometheus
@pytest.mark.parametrize("field", FIELDS)
def test_injection_corpus_is_refused_or_neutralised(injection_prom: tuple[str, dict],
                                                   field: str) -> None:
    address, expected = injection_prom
    benign = PrometheusMetricSource(_policy(address, field, "harmless"),
                                    coalescer=QueryCoalescer()).fetch(T0, T1)
    shapes = {skeleton(q) for q in benign.queries}
    refused, neutralised = [], []
    for value in CORPUS:
        try:
            policy = _policy(address, field, value)
        except PolicyError:
            refused.append(value)
            continue
        samples = PrometheusMetricSource(policy, coalescer=QueryCoalescer()).fetch(T0, T1)
        assert {skeleton(q) for q in samples.queries} == shapes, (value, samples.queries)
        assert samples.ok, (value, samples.no_data_reason)
        stable, canary = _versions(field, value)
        assert samples.stable is not None and samples.canary is not None
        assert samples.stable.requests == expected[(field, value, stable)], value
        assert samples.canary.requests == expected[(field, value, canary)], value
        neutralised.append(value)
    assert len(refused) + len(neutralised) == len(CORPUS)
    print(f"{field}: {len(refused)} refused at validation, {len(neutralised)} neutralised")


@pytest.mark.parametrize("value", CORPUS)
def test_label_names_are_refused(value: str) -> None:
    for where in ("versionLabel", "namespaceLabel", "labels"):
        with pytest.raises((PolicyError, PrometheusConfigError)):
            if where == "versionLabel":
                doc = make_policy("generic", "http://127.0.0.1:1").model_dump(mode="json")
                doc["spec"]["target"]["versionLabel"] = value
                policy = parse_policy(yaml.safe_dump(doc))
            elif where == "namespaceLabel":
                policy = make_policy("generic", "http://127.0.0.1:1", namespaceLabel=value)
            else:
                policy = make_policy("generic", "http://127.0.0.1:1", labels={value: "x"})
            PrometheusMetricSource(policy, coalescer=QueryCoalescer())
