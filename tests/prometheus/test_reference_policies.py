"""The reference policies (policies/*.yaml) whose preset was checked against its exporter run
through `canary query` against exporter-shaped series and get the exact per-version counts.
The policies' namespaces are used as written where the data has them (gateway-api, seldon,
seldon-v2, nginx-ingress-weight); otherwise the data's namespace replaces it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from analyzer.cli.app import app
from analyzer.demo.local_prometheus import PrometheusServer
from analyzer.policy import read_yaml
from tests.prometheus import exporters
from tests.prometheus.exporters import Dataset

pytestmark = pytest.mark.prometheus
POLICIES = Path(__file__).resolve().parents[2] / "policies"
CASES = [
    ("gateway-api.yaml", "gateway-istio", "main"),
    ("gateway-api-contour.yaml", "contour", "main"),
    ("gateway-api-envoy.yaml", "envoy-gateway", "merged"),
    ("seldon.yaml", "seldon-v1", "main"),
    ("seldon-v2.yaml", "seldon-v2", "main"),
    ("nginx-ingress-weight.yaml", "nginx-ingress", "direct"),
    ("nginx-ingress-weight.yaml", "nginx-ingress", "kube-prometheus"),
    ("knative.yaml", "knative-oc", "main"),
    ("knative-otel.yaml", "knative-otel", "scrape"),
]
AS_WRITTEN = {"gateway-api.yaml", "seldon.yaml", "seldon-v2.yaml", "nginx-ingress-weight.yaml"}


@pytest.mark.parametrize(("name", "scenario", "slice"), CASES,
                         ids=[f"{n}-{s}" for n, _, s in CASES])
def test_reference_policy_gets_exact_counts(
    exporter_prom: PrometheusServer, exporter_data: Dataset, tmp_path: Path, name: str,
    scenario: str, slice: str,
) -> None:
    doc = read_yaml((POLICIES / name).read_text())
    namespace = exporter_data.target(scenario, slice).namespace
    if doc["spec"]["target"]["namespace"] != namespace:
        assert name not in AS_WRITTEN or slice == "kube-prometheus"
        doc["spec"]["target"]["namespace"] = namespace
    f = tmp_path / name
    f.write_text(yaml.safe_dump(doc))
    res = CliRunner().invoke(app, ["query", str(f), "--json", "--prometheus", exporter_prom.url,
                                   "--start", str(exporters.T0), "--end", str(exporters.T1)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    for role in ("stable", "canary"):
        want = exporter_data.expected(scenario, role, slice=slice)
        got = data[role]
        assert (got["requests"], got["errors"]) == (want.requests, want.errors), role
        if want.buckets is None:  # Seldon Core 2: no per-version histogram
            assert got.get("latency") is None
        else:
            assert got["latency"]["counts"] == list(want.buckets.values()), role
