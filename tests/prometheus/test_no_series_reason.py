"""When a query finds no series, the reason says which matcher had no values and which values
exist (diagnose.py): in the source's no-data reason, the judge's hold reason and `canary query`.
Look-ups happen only on the no-data path and are bounded."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from analyzer.cli.app import app
from analyzer.core.judge import Judge
from analyzer.core.types import Action
from analyzer.demo.local_prometheus import PrometheusServer
from analyzer.sources.prometheus.diagnose import MAX_LOOKUPS, MAX_VALUES
from analyzer.sources.prometheus.source import PrometheusMetricSource, QueryCoalescer
from tests.prometheus import datasets, exporters
from tests.prometheus.conftest import CountingSession, make_policy, write_policy
from tests.prometheus.exporters import Dataset
from tests.prometheus.test_exporter_shapes import fetch

pytestmark = pytest.mark.prometheus


def _lookups(session: CountingSession) -> list[str]:
    return [u for u in session.sent if "/api/v1/label/" in u]


def test_missing_version_names_the_values_seen(exporter_prom: PrometheusServer,
                                               exporter_data: Dataset) -> None:
    session = CountingSession()
    samples = fetch(exporter_prom, exporter_data, "istio-grpc", "main", "istio", canary="v3",
                    session=session)
    assert samples.stable is not None and samples.canary is None
    assert (samples.no_data_reason or "").startswith(
        'no series for the canary version (destination_version="v3"): no series with '
        'destination_version="v3"; values seen: ["v1", "v2"]; query: ')
    assert len(_lookups(session)) == 1  # the version's values told it


def test_wrong_service_and_namespace(exporter_prom: PrometheusServer,
                                     exporter_data: Dataset) -> None:
    samples = fetch(exporter_prom, exporter_data, "istio-grpc", "main", "istio",
                    service="paymnts")
    assert 'no series with destination_service_name="paymnts"; values seen: ["payments"]' in (
        samples.no_data_reason or "")
    samples = fetch(exporter_prom, exporter_data, "nginx-ingress", "kube-prometheus",
                    "nginx-ingress", namespaceLabel="namespace")
    assert 'no series with namespace="web-kp"; values seen: ["ingress-nginx", "web"]' in (
        samples.no_data_reason or "")


def test_a_label_the_series_do_not_have(exporter_prom: PrometheusServer,
                                        exporter_data: Dataset) -> None:
    """seldon-core-analytics' scrape puts the namespace in kubernetes_namespace: the executor's
    series then have no namespace label at all."""
    samples = fetch(exporter_prom, exporter_data, "seldon-v1", "main", "seldon",
                    namespaceLabel="kubernetes_namespace")
    assert ('no series with kubernetes_namespace="models": no series of '
            "seldon_api_executor_server_requests_seconds_count has a kubernetes_namespace "
            "label" in (samples.no_data_reason or ""))


def test_canary_without_traffic_behind_ingress_nginx(exporter_prom: PrometheusServer,
                                                     exporter_data: Dataset) -> None:
    """The admin Ingress has no canary: its series carry no canary label."""
    samples = fetch(exporter_prom, exporter_data, "nginx-ingress", "direct", "nginx-ingress",
                    service="admin")
    assert samples.stable is not None and samples.canary is None
    assert 'no series with canary!="": the series of nginx_ingress_controller_requests{' in (
        samples.no_data_reason or "")


def test_seldon_core_2_models_not_model_versions(exporter_prom: PrometheusServer,
                                                 exporter_data: Dataset) -> None:
    samples = fetch(exporter_prom, exporter_data, "seldon-v2", "main", "seldon-v2",
                    checks=[{"type": "error-rate"}])  # target names iris_1 / iris2_1
    assert ('no series with model_internal=~"(?:iris2_1|iris_1)_[0-9]+"; values seen: '
            '["iris2_1", "iris_1"]' in (samples.no_data_reason or ""))


def test_values_are_capped(prom: PrometheusServer) -> None:
    policy = make_policy("generic", prom.url, service="svc99", namespace="fleet")
    samples = PrometheusMetricSource(policy, coalescer=QueryCoalescer()).fetch(
        datetime.fromtimestamp(datasets.T0, UTC), datetime.fromtimestamp(datasets.T1, UTC))
    reason = samples.no_data_reason or ""
    assert 'no series with service="svc99"; values seen: ["svc0", "svc1", "svc10"' in reason
    assert f"and {12 - MAX_VALUES} more" in reason


def test_no_lookups_when_there_is_data_and_few_when_there_is_none(
    exporter_prom: PrometheusServer, exporter_data: Dataset
) -> None:
    session = CountingSession()
    assert fetch(exporter_prom, exporter_data, "linkerd", "main", "linkerd",
                 session=session).ok
    assert not _lookups(session)
    session = CountingSession()
    samples = fetch(exporter_prom, exporter_data, "linkerd", "main", "linkerd",
                    namespace="nowhere", service="nothing", stable="a", canary="b",
                    labels={"cluster": "x"}, session=session)
    assert not samples.ok
    assert 0 < len(_lookups(session)) <= MAX_LOOKUPS
    assert "no series with" in (samples.no_data_reason or "")


def test_the_hold_reason_says_why(exporter_prom: PrometheusServer,
                                  exporter_data: Dataset) -> None:
    t = exporter_data.target("istio-grpc")
    policy = make_policy("istio", exporter_prom.url, service=t.service, stable="v1",
                         canary="v3", namespace=t.namespace)
    samples = PrometheusMetricSource(policy, coalescer=QueryCoalescer()).fetch(
        datetime.fromtimestamp(exporters.T0, UTC), datetime.fromtimestamp(exporters.T1, UTC))
    decision = Judge(policy).evaluate(samples, samples.t1)
    assert decision.action == Action.HOLD
    assert 'no series with destination_version="v3"; values seen: ["v1", "v2"]' in (
        decision.reason)


def test_canary_query_says_this_looks_like_knative_1_19(
    exporter_prom: PrometheusServer, exporter_data: Dataset, tmp_path: Path
) -> None:
    t = exporter_data.target("knative-otel", "scrape")
    f = write_policy(tmp_path / "p.yaml", make_policy(
        "knative", "http://127.0.0.1:1", service=t.service, stable=t.stable, canary=t.canary,
        namespace=t.namespace))
    res = CliRunner().invoke(app, ["query", str(f), "--prometheus", exporter_prom.url,
                                   "--start", str(exporters.T0), "--end", str(exporters.T1)])
    assert res.exit_code == 1
    out = " ".join(res.output.split())  # rich wraps long lines
    assert "no series for the OpenCensus names" in out
    assert "this looks like Knative >= 1.19 (OpenTelemetry); use preset knative-otel" in out
