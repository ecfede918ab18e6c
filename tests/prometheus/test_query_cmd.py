"""`canary query` against the real Prometheus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from analyzer.cli.app import app
from analyzer.demo.local_prometheus import PrometheusServer
from tests.prometheus import datasets
from tests.prometheus.conftest import make_policy, write_policy

runner = CliRunner()


@pytest.mark.prometheus
def test_table_shows_promql_and_counts(
    prom: PrometheusServer, dataset: datasets.Dataset, tmp_path: Path
) -> None:
    # the policy points elsewhere: --prometheus overrides the address
    f = write_policy(tmp_path / "p.yaml", make_policy("istio", "http://127.0.0.1:1"))
    res = runner.invoke(app, ["query", str(f), "--prometheus", prom.url,
                              "--start", str(datasets.T0), "--end", str(datasets.T1)])
    assert res.exit_code == 0, res.output
    assert "istio_requests_total{" in res.output and 'reporter="destination"' in res.output
    want = dataset.expected[("istio", "checkout", "v2")]
    assert str(want.requests) in res.output and str(want.errors) in res.output


@pytest.mark.prometheus
def test_json(prom: PrometheusServer, dataset: datasets.Dataset, tmp_path: Path) -> None:
    f = write_policy(tmp_path / "p.yaml", make_policy("knative", prom.url,
                                                      stable="checkout-00001",
                                                      canary="checkout-00002"))
    res = runner.invoke(app, ["query", str(f), "--json", "--start", str(datasets.T0),
                              "--end", str(datasets.T1)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    want = dataset.expected[("knative", "checkout", "checkout-00001")]
    assert data["stable"]["requests"] == want.requests
    assert data["stable"]["errors"] == want.errors
    assert data["stable"]["latency"]["counts"] == list(want.buckets.values())
    assert data["queries"] and data["no_data_reason"] is None


@pytest.mark.prometheus
def test_no_data_exits_1_with_reason(prom: PrometheusServer, tmp_path: Path) -> None:
    f = write_policy(tmp_path / "p.yaml", make_policy("generic", prom.url, canary="nope"))
    res = runner.invoke(app, ["query", str(f), "--start", str(datasets.T0),
                              "--end", str(datasets.T1)])
    assert res.exit_code == 1
    assert "no series for the canary version" in res.output


def test_usage_errors(tmp_path: Path) -> None:
    f = write_policy(tmp_path / "p.yaml", make_policy("generic", "http://127.0.0.1:1"))
    res = runner.invoke(app, ["query", str(f), "--start", "yesterday"])
    assert res.exit_code == 2 and "cannot read time 'yesterday'" in res.output
    res = runner.invoke(app, ["query", str(f), "--start", "now", "--end", "now-1h"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["query", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 1 and "file not found" in res.output
    assert "Traceback" not in res.output
