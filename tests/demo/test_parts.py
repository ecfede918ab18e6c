"""The demo's parts on their own: the sample service, the load generator, the policy overrides."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from analyzer.demo import local_prometheus, scenario
from analyzer.demo.app import BUCKETS, Behaviour, DemoApp
from analyzer.demo.loadgen import LoadGenerator
from analyzer.policy import NginxLocalRouter, PrometheusSource, load_policy
from analyzer.sources.simulate import LATENCY_BUCKETS


@pytest.fixture
def app() -> Iterator[DemoApp]:
    a = DemoApp("v9", Behaviour(error_rate=0.5, latency_median=0.002, latency_p99=0.01, seed=4))
    th = threading.Thread(target=a.serve_forever, daemon=True)
    th.start()
    yield a
    a.shutdown()
    th.join(5)


def _samples(app: DemoApp) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(f"http://127.0.0.1:{app.port}/metrics", timeout=5).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_load_generator_sends_the_scheduled_requests_and_the_app_counts_them(
    app: DemoApp,
) -> None:
    load = LoadGenerator({"svc": f"http://127.0.0.1:{app.port}/"}, rps=100, duration=2.0,
                         threads_per_target=4).start()
    assert load.wait(timeout=15)
    stats = load.stats()["svc"]
    # Slot k is due at k/rps; slots due at or after the end are never sent: exactly 200.
    assert stats.sent + stats.skipped == 200
    assert stats.client_errors == 0
    assert stats.ok + stats.server_errors == stats.sent
    # About half fail (error rate 0.5; 200 draws: 0.35..0.65 is beyond 4 standard deviations).
    assert 0.35 < stats.server_errors / stats.sent < 0.65

    m = _samples(app)
    ok = m[("http_requests_total", (("code", "200"), ("version", "v9")))]
    bad = m[("http_requests_total", (("code", "500"), ("version", "v9")))]
    assert (ok, bad) == (stats.ok, stats.server_errors)
    count = m[("http_request_duration_seconds_count", (("version", "v9"),))]
    assert count == stats.sent
    les = sorted(float(dict(k[1])["le"]) for k in m
                 if k[0] == "http_request_duration_seconds_bucket")
    # The simulate source's bounds: the real and the simulated demo pick the same bounds.
    assert tuple(les) == LATENCY_BUCKETS and LATENCY_BUCKETS[:-1] == BUCKETS


def test_load_generator_stops_on_request(app: DemoApp) -> None:
    load = LoadGenerator({"svc": f"http://127.0.0.1:{app.port}/"}, rps=50, duration=60,
                         threads_per_target=2).start()
    load.stop(timeout=10)
    assert not load.running
    assert load.stats()["svc"].sent < 60 * 50


def test_load_generator_counts_refused_connections() -> None:
    port = local_prometheus.free_port()  # nothing listens there
    load = LoadGenerator({"gone": f"http://127.0.0.1:{port}/"}, rps=20, duration=0.5,
                         threads_per_target=2).start()
    load.stop(timeout=10)
    s = load.stats()["gone"]
    assert s.sent > 0 and s.client_errors == s.sent and s.ok == 0


@pytest.mark.parametrize("bad", [{"rps": 0}, {"duration": 0}])
def test_load_generator_is_always_bounded_and_positive(bad: dict[str, float]) -> None:
    kw = {"rps": 10.0, "duration": 1.0, **bad}
    with pytest.raises(ValueError):
        LoadGenerator({"x": "http://127.0.0.1:1/"}, **kw)


def test_behaviour_matches_its_median_and_p99() -> None:
    b = Behaviour(error_rate=0.0, latency_median=0.02, latency_p99=0.15, seed=1)
    draws = sorted(b.draw()[0] for _ in range(20000))
    assert draws[10000] == pytest.approx(0.02, rel=0.05)
    assert draws[19800] == pytest.approx(0.15, rel=0.1)
    with pytest.raises(ValueError):
        Behaviour(error_rate=1.5, latency_median=0.02, latency_p99=0.15)


def test_localize_policy_changes_only_the_run_time_addresses(tmp_path: Path) -> None:
    original = load_policy(scenario.REPO_POLICIES / "demo-healthy.yaml")
    p = scenario.localize_policy(
        original, upstream_file=tmp_path / "u.conf", nginx_config=tmp_path / "nginx.conf",
        stable_server="127.0.0.1:40001", canary_server="127.0.0.1:40002",
        prometheus_url="http://127.0.0.1:40003")
    assert isinstance(p.spec.router, NginxLocalRouter)
    assert isinstance(p.spec.metrics, PrometheusSource)
    assert (p.spec.router.upstreamFile, p.spec.router.nginxConfig) == (
        str(tmp_path / "u.conf"), str(tmp_path / "nginx.conf"))
    assert (p.spec.router.stableServer, p.spec.router.canaryServer) == (
        "127.0.0.1:40001", "127.0.0.1:40002")
    assert p.spec.metrics.address == "http://127.0.0.1:40003"
    # Everything else is as written in the file.
    assert p.spec.checks == original.spec.checks
    assert p.spec.analysis == original.spec.analysis
    assert p.spec.strategy == original.spec.strategy
    assert p.spec.router.upstreamName == original.spec.router.upstreamName


def test_demo_policies_use_the_nginx_router_and_the_generic_preset() -> None:
    for r in scenario.ROLLOUTS:
        p = load_policy(scenario.REPO_POLICIES / r.policy_file)
        assert p.spec.router.provider == "nginx"
        assert isinstance(p.spec.metrics, PrometheusSource)
        assert p.spec.metrics.preset == "generic"
    short = scenario.load_demo_policies(scenario.DemoOptions(short=True))
    assert all(p.spec.strategy.steps == scenario.SHORT_STEPS for p in short)
