"""Failures give no-data with the reason and the query, never a crash or a made-up zero."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from analyzer.demo.local_prometheus import PrometheusServer, backfill
from analyzer.sources.prometheus.source import PrometheusMetricSource, QueryCoalescer
from tests.prometheus import datasets
from tests.prometheus.conftest import CountingSession, make_policy

pytestmark = pytest.mark.prometheus

T0 = datetime.fromtimestamp(datasets.T0, UTC)
T1 = datetime.fromtimestamp(datasets.T1, UTC)


def _source(address: str, **kw: object) -> tuple[PrometheusMetricSource, CountingSession]:
    session = CountingSession()
    preset = str(kw.pop("preset", "generic"))
    policy = make_policy(preset, address, service="svc1", namespace="fleet", **kw)
    src = PrometheusMetricSource(policy, coalescer=QueryCoalescer(), session=session,
                                 sleep=lambda s: None)
    return src, session


def test_prometheus_stopped_mid_run_then_recovers(
    tmp_path: Path, dataset: datasets.Dataset
) -> None:
    backfill(dataset.text, tmp_path)
    server = PrometheusServer(tmp_path).start()
    try:
        src, session = _source(server.url)
        first = src.fetch(T0, T1)
        assert first.ok, first.no_data_reason
        server.stop()
        sent = len(session.sent)
        down = src.fetch(T0, T1)
        assert not down.ok
        assert down.stable is None and down.canary is None  # no made-up zeros
        reason = down.no_data_reason or ""
        assert "requests query failed" in reason and "cannot connect" in reason
        assert "http_requests_total" in reason  # names the query
        assert "after 2 attempts" in reason
        assert len(session.sent) - sent == 2  # retries: 1, bounded
        server.restart()
        again = src.fetch(T0, T1)
        assert again.ok, again.no_data_reason
        assert again.stable == first.stable and again.canary == first.canary
    finally:
        server.stop()


def test_promql_error_is_not_retried(prom: PrometheusServer) -> None:
    bad = {"requests": "sum by (version) (http_requests_total{", "errors": "vector(0)"}
    src, session = _source(prom.url, preset="custom", queries=bad,
                           checks=[{"type": "error-rate"}])
    samples = src.fetch(T0, T1)
    assert not samples.ok
    reason = samples.no_data_reason or ""
    assert "HTTP 400" in reason and "bad_data" in reason
    assert bad["requests"] in reason
    assert len(session.sent) == 1


def test_nan_is_no_data(prom: PrometheusServer) -> None:
    policy = make_policy("generic", prom.url, service="nan", namespace="odd",
                         checks=[{"type": "error-rate"}])
    src = PrometheusMetricSource(policy, coalescer=QueryCoalescer())
    # the NaN sample is the latest one at the window's end
    t1 = datetime.fromtimestamp(datasets.BASE + 50 * datasets.STEP, UTC)
    samples = src.fetch(t1 - timedelta(minutes=2), t1)
    assert not samples.ok
    assert "nan" in (samples.no_data_reason or "").lower()
    assert samples.stable is None


def test_empty_window(prom: PrometheusServer) -> None:
    src, _ = _source(prom.url)
    samples = src.fetch(T1, T1)
    assert not samples.ok and "empty window" in (samples.no_data_reason or "")


class _Flaky(http.server.BaseHTTPRequestHandler):
    """A stand-in HTTP server for failures a healthy Prometheus will not produce on demand:
    it answers 503, or answers too slowly. It is a test double, not a Prometheus."""

    mode = "503"

    def do_GET(self) -> None:
        if self.server.mode == "slow":  # type: ignore[attr-defined]
            time.sleep(1.5)
        body = b'{"status":"error","errorType":"unavailable","error":"overloaded"}'
        try:
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass

    def do_POST(self) -> None:  # instant queries come as a POST form
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[http.server.ThreadingHTTPServer]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    srv.mode = "503"  # type: ignore[attr-defined]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_5xx_is_retried_then_no_data(flaky: http.server.ThreadingHTTPServer) -> None:
    src, session = _source(f"http://127.0.0.1:{flaky.server_address[1]}", retries=2)
    samples = src.fetch(T0, T1)
    assert not samples.ok
    reason = samples.no_data_reason or ""
    assert "HTTP 503" in reason and "overloaded" in reason and "after 3 attempts" in reason
    assert len(session.sent) == 3  # one metric failed: the tick stops there


def test_timeout_is_no_data(flaky: http.server.ThreadingHTTPServer) -> None:
    flaky.mode = "slow"  # type: ignore[attr-defined]
    src, session = _source(f"http://127.0.0.1:{flaky.server_address[1]}", retries=1,
                           timeout="500ms")
    samples = src.fetch(T0, T1)
    assert not samples.ok
    assert "timed out after 0.5s" in (samples.no_data_reason or "")
    assert len(session.sent) == 2
