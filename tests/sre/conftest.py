"""Fixtures for the SRE tools: rollouts recorded by the real engine (simulate source, dry-run
router, simulated clock) into a SQLite store, and the same data backfilled into a real
Prometheus (generic preset series written with `promtool tsdb create-blocks-from openmetrics`).

The rollouts start at the suite's fixed clock (tests/support/clock.py: long past and
hour-aligned), so the backfilled blocks do not overlap Prometheus' head block, the store's
windows are the Prometheus windows, and the data is the same at any hour of any day.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from analyzer.core.types import Histogram, VersionSample
from analyzer.daemon.engine import run_rollout
from analyzer.daemon.store import Store
from analyzer.demo.local_prometheus import (
    OpenMetricsWriter,
    PrometheusServer,
    backfill,
    find_binary,
)
from analyzer.offline.export import baseline_samples, recorded_intervals
from analyzer.policy import Policy, parse_policy
from tests.support.clock import EPOCH

REPO = Path(__file__).resolve().parents[2]
START = EPOCH

BASE = """
apiVersion: canary-analyzer.io/v1alpha1
kind: RolloutPolicy
metadata: {{name: {name}}}
spec:
  target: {{namespace: shop, service: web, stable: v1, canary: v2}}
  router: {{provider: dry-run}}
  strategy: {{steps: [10, 50, 100]}}
  analysis: {{interval: 10s, minStepDuration: 30s, maxStepDuration: 10m, baselineWindow: 1m}}
  metrics: {metrics}
  checks: {checks}
  decision: {{alpha: 0.01}}
  notifications:
    - url: https://hooks.slack.example/services/T0/B0/SECRETTOKEN
"""

CHECKS_FULL = ("[{type: error-rate, tolerance: 0.2}, {type: latency, quantiles: [0.5, 0.99]}, "
               "{type: threshold, metric: error-rate, max: 5}]")
CHECKS_ERRORS = "[{type: error-rate, tolerance: 0.2}]"
# Rolls back only at an error-rate ratio above 10: the regressed rollout's true ratio is 2.5,
# so on its recorded data this policy never rolls back, whatever the random draw was.
CHECKS_LAX = "[{type: error-rate, tolerance: 9}]"


def sim_metrics(canary_error: float, canary_p99: str = "300ms") -> str:
    return ("{source: simulate, rps: 3000, seed: 11, stable: {errorRate: 0.01}, "
            f"canary: {{errorRate: {canary_error}, latencyP99: {canary_p99}}}, "
            "regressionAboveWeight: 20}")


PROM_METRICS = "{source: prometheus, preset: generic, address: 'http://127.0.0.1:9', retries: 0}"


def make(name: str, metrics: str, checks: str) -> Policy:
    return parse_policy(BASE.format(name=name, metrics=metrics, checks=checks))


@dataclass(frozen=True)
class Recorded:
    """The recorded store and what is in it."""

    db_path: Path
    url: str
    regressed_id: int  # web-regressed: promoted at 10%, rolled back at 50%
    healthy_id: int  # web-healthy (error-rate check only): promoted
    regressed_policy: Path  # the policy files the rollouts ran with
    healthy_policy: Path
    prom_policy: Path  # the regressed rollout's checks on the generic Prometheus preset
    lax_policy: Path  # error rate only, tolerance 9: differs from the record by construction

    def store(self) -> Store:
        return Store(self.url)


def write_policy(path: Path, policy: Policy) -> Path:
    path.write_text(yaml.safe_dump(policy.model_dump(mode="json", exclude_none=True)))
    return path


@pytest.fixture(scope="session")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    d = tmp_path_factory.mktemp("sre")
    db = d / "canary.db"
    url = f"sqlite:///{db}"
    store = Store(url)
    regressed = make("web-regressed", sim_metrics(0.025, "450ms"), CHECKS_FULL)
    healthy = make("web-healthy", sim_metrics(0.01), CHECKS_ERRORS)
    r1 = run_rollout(regressed, store=store, start=START, max_ticks=300)
    r2 = run_rollout(healthy, store=store, start=START, max_ticks=300)
    assert str(r1.phase) == "rolled_back", r1.ticks[-1].reason
    assert str(r2.phase) == "succeeded", r2.ticks[-1].reason
    store.dispose()
    yield Recorded(
        db, url, r1.rollout_id, r2.rollout_id,
        write_policy(d / "regressed.yaml", regressed), write_policy(d / "healthy.yaml", healthy),
        write_policy(d / "prom.yaml", make("web-regressed", PROM_METRICS, CHECKS_FULL)),
        write_policy(d / "lax.yaml", make("web-lax", sim_metrics(0.025, "450ms"), CHECKS_LAX)),
    )


def openmetrics_of(store: Store, rollout_id: int, namespace: str, service: str,
                   versions: dict[str, str]) -> str:
    """The rollout's analysed intervals, after the stable's pre-rollout intervals its judge
    started from (the baseline recorded with the start tick), as generic-preset counters
    (http_requests_total by code, http_request_duration_seconds_bucket by le), one point at
    each window's ends; the canary's counters stay at 0 before the rollout."""
    baseline = baseline_samples(store, rollout_id)
    intervals = [r.samples for r in recorded_intervals(store, rollout_id)]
    w = OpenMetricsWriter()
    first = (baseline or intervals)[0].t0.timestamp()
    for role, version in versions.items():
        labels = {"namespace": namespace, "service": service, "version": version}
        ok = [(first - 60 * k, 0.0) for k in range(5, 0, -1)] + [(first, 0.0)]
        bad = list(ok)
        buckets: dict[str, list[tuple[float, float]]] = {}
        n_ok = n_bad = 0
        cum: list[int] | None = None
        le: list[str] = []
        for s in [*baseline, *intervals]:
            v = getattr(s, role) or VersionSample(0, 0, s.stable.latency and Histogram(
                s.stable.latency.le, (0,) * len(s.stable.latency.le)))
            t = s.t1.timestamp()
            n_ok += v.requests - v.errors
            n_bad += v.errors
            ok.append((t, n_ok))
            bad.append((t, n_bad))
            h = v.latency.to_json()
            if cum is None:
                cum = [0] * len(h["counts"])
                le = [str(b) for b in h["le"]]
                for b in le:
                    buckets[b] = [(p, 0.0) for p, _ in ok[:-1]]
            cum = [a + b for a, b in zip(cum, h["counts"], strict=True)]
            for b, c in zip(le, cum, strict=True):
                buckets[b].append((t, c))
        w.add("http_requests_total", {**labels, "code": "200"}, ok)
        w.add("http_requests_total", {**labels, "code": "500"}, bad)
        for b, pts in buckets.items():
            w.add("http_request_duration_seconds_bucket", {**labels, "le": b}, pts)
    return w.text()


@pytest.fixture(scope="session")
def prom_recorded(tmp_path_factory: pytest.TempPathFactory,
                  recorded: Recorded) -> Iterator[PrometheusServer]:
    """A real Prometheus holding both recorded rollouts' traffic."""
    if find_binary("prometheus") is None or find_binary("promtool") is None:
        pytest.fail("prometheus and promtool are required (make test installs them)")
    data = tmp_path_factory.mktemp("prom-sre")
    store = recorded.store()
    # Only the regressed rollout: both rollouts ran at the same times with the same labels.
    text = openmetrics_of(store, recorded.regressed_id, "shop", "web",
                          {"stable": "v1", "canary": "v2"})
    store.dispose()
    backfill(text, data)
    server = PrometheusServer(data).start()
    yield server
    server.stop()
