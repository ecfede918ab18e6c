"""Fixtures: a real Prometheus per session backfilled with every preset's dataset, and a second
one with series shaped exactly like the exporters' (tests/prometheus/exporters/)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from analyzer.demo.local_prometheus import PrometheusServer, backfill, find_binary
from analyzer.policy import Policy, parse_policy
from tests.prometheus import datasets, exporters
from tests.support import requires


@pytest.fixture(scope="session")
def dataset() -> datasets.Dataset:
    return datasets.build()


@pytest.fixture(scope="session")
def injection() -> tuple[str, dict[str, int]]:
    return datasets.build_injection()


@pytest.fixture(scope="session")
def prom(
    tmp_path_factory: pytest.TempPathFactory, dataset: datasets.Dataset,
    injection: tuple[str, dict[str, int]],
) -> Iterator[PrometheusServer]:
    if find_binary("prometheus") is None or find_binary("promtool") is None:
        pytest.fail("prometheus and promtool are required (make test installs them)")
    data_dir = tmp_path_factory.mktemp("prom")
    backfill(dataset.text, data_dir)
    backfill(injection[0], data_dir)
    server = PrometheusServer(data_dir).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def exporter_data() -> exporters.Dataset:
    return exporters.build()


@pytest.fixture(scope="session")
def exporter_prom(
    tmp_path_factory: pytest.TempPathFactory, exporter_data: exporters.Dataset
) -> Iterator[PrometheusServer]:
    requires.binary("prometheus")
    requires.binary("promtool")
    data_dir = tmp_path_factory.mktemp("prom-exporters")
    backfill(exporter_data.text(), data_dir)
    server = PrometheusServer(data_dir).start()
    yield server
    server.stop()


def make_policy(
    preset: str, address: str, *, service: str = "checkout", stable: str = "v1",
    canary: str = "v2", namespace: str = "shop", checks: list[dict[str, Any]] | None = None,
    router: dict[str, Any] | None = None, strategy: dict[str, Any] | None = None,
    version_label: str | None = None, **metrics: Any,
) -> Policy:
    target = {"namespace": namespace, "service": service, "stable": stable, "canary": canary}
    if version_label is not None:
        target["versionLabel"] = version_label
    doc = {
        "apiVersion": "canary-analyzer.io/v1alpha1",
        "kind": "RolloutPolicy",
        "metadata": {"name": f"{preset}-{service}".replace("_", "-")},
        "spec": {
            "target": target,
            "router": router or {"provider": "dry-run"},
            "strategy": strategy or {"steps": [10, 50]},
            "metrics": {"source": "prometheus", "address": address, "preset": preset,
                        "retries": 1, "timeout": "5s", **metrics},
            "checks": checks or [{"type": "error-rate"}, {"type": "latency"}],
        },
    }
    return parse_policy(yaml.safe_dump(doc))


def write_policy(path: Path, policy: Policy) -> Path:
    path.write_text(yaml.safe_dump(policy.model_dump(mode="json", exclude_none=True)))
    return path


class CountingSession(requests.Session):
    """A real requests.Session that counts the HTTP requests it sends (`send` sees them all:
    the library's `request` calls and the source's prepared instant queries alike)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> Any:
        self.sent.append(str(request.url))
        return super().send(request, **kwargs)
