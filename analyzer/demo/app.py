"""The demo's sample HTTP service: one process per version, with real prometheus-client metrics.

Owns the behaviour of one version of the sample service in `canary demo`:

- `GET /` (any path but the two below) answers after a random latency drawn from a lognormal
  with the given median and 99th percentile, with status 500 for a share `--error-rate` of the
  requests (independent draws) and 200 otherwise;
- `GET /metrics` serves the process's own registry in the Prometheus text format:
  `http_requests_total{version, code}` (a counter) and
  `http_request_duration_seconds{version}` (a histogram, the bounds of
  `analyzer.sources.simulate.LATENCY_BUCKETS`), the names of the `generic` preset. The
  `service` and `namespace` labels are added by Prometheus from the scrape target, as in a
  real deployment;
- `GET /healthz` answers 200 (not counted).

Run it as `python -m analyzer.demo.app --port 8001 --version v1 --error-rate 0.02
--latency-median 0.02 --latency-p99 0.12`. It serves HTTP/1.1 with keep-alive on 127.0.0.1
only, one thread per connection, and exits cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

#: Bounds of the latency histogram (seconds): the simulate source's, so that the fallback
#: and the real demo pick the same latency bounds.
BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5,
    2.0, 2.5, 5.0, 10.0,
)
_Z99 = 2.3263478740408408  # standard normal 99th percentile


class Behaviour:
    """How one version answers: error share and a lognormal latency (median, p99)."""

    def __init__(self, error_rate: float, latency_median: float, latency_p99: float,
                 seed: int | None = None) -> None:
        if not 0 <= error_rate <= 1:
            raise ValueError(f"error rate must be within 0..1, got {error_rate}")
        if latency_median <= 0 or latency_p99 < latency_median:
            raise ValueError("latency median must be > 0 and p99 >= median")
        self.error_rate = error_rate
        self.mu = math.log(latency_median)
        self.sigma = (math.log(latency_p99) - self.mu) / _Z99
        self._rng = random.Random(seed)
        self._lock = threading.Lock()  # random.Random is not documented as thread-safe

    def draw(self) -> tuple[float, bool]:
        """(latency in seconds, whether this request fails)."""
        with self._lock:
            latency = math.exp(self._rng.gauss(self.mu, self.sigma))
            fail = self._rng.random() < self.error_rate
        return min(latency, 10.0), fail


class DemoApp:
    """The HTTP server of one version; `serve_forever()` blocks, `shutdown()` stops it."""

    def __init__(self, version: str, behaviour: Behaviour, port: int = 0,
                 host: str = "127.0.0.1") -> None:
        self.version = version
        self.behaviour = behaviour
        self.registry = CollectorRegistry()
        self.requests = Counter("http_requests_total", "HTTP requests served",
                                ["version", "code"], registry=self.registry)
        self.latency = Histogram("http_request_duration_seconds", "HTTP request latency",
                                 ["version"], buckets=BUCKETS, registry=self.registry)
        # Both codes exist from the start, so a first error is an increment Prometheus sees
        # (a series appearing mid-window would need the source's slower raw-sample path).
        for code in ("200", "500"):
            self.requests.labels(version=version, code=code)
        self.latency.labels(version=version)
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the client and nginx reuse connections

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per request would flood the demo's terminal

            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, generate_latest(app.registry), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    self._send(200, b"ok\n", "text/plain")
                else:
                    app.handle(self)

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        started = time.perf_counter()
        latency, fail = self.behaviour.draw()
        time.sleep(latency)
        code = 500 if fail else 200
        body = f"{self.version} {'error' if fail else 'ok'}\n".encode()
        h.send_response(code)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("X-Version", self.version)
        h.end_headers()
        h.wfile.write(body)
        # Counted when answered, as a real service's middleware would.
        self.requests.labels(version=self.version, code=str(code)).inc()
        self.latency.labels(version=self.version).observe(time.perf_counter() - started)

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)
        self.httpd.server_close()

    def shutdown(self) -> None:
        self.httpd.shutdown()


def _watch_parent(parent_pid: int, app: DemoApp) -> None:
    # When the parent dies this process is re-parented (to init or a subreaper).
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    app.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="one version of the canary demo's sample service")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--version", required=True, help="value of the `version` label")
    p.add_argument("--error-rate", type=float, default=0.01, help="share of 500 answers")
    p.add_argument("--latency-median", type=float, default=0.02, help="seconds")
    p.add_argument("--latency-p99", type=float, default=0.1, help="seconds")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--parent-pid", type=int, default=None,
                   help="exit when this process (the demo) is gone, even after a kill -9")
    a = p.parse_args(argv)
    app = DemoApp(a.version, Behaviour(a.error_rate, a.latency_median, a.latency_p99, a.seed),
                  a.port)

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever, so it must run outside the serving thread
        threading.Thread(target=app.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if a.parent_pid is not None:
        threading.Thread(target=_watch_parent, args=(a.parent_pid, app), daemon=True).start()
    app.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
