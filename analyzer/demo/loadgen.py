"""A bounded load generator: steady requests per second to a few URLs, stopping by itself.

Owns the demo's traffic. `LoadGenerator({"catalog": url, ...}, rps=..., duration=...)` runs,
per target, a pool of threads sharing one send schedule: slot k of a target is due at
`start + k / rps`, each thread takes the next slot, sleeps until it is due and sends one
`GET /` over its own keep-alive HTTP/1.1 connection. The rate therefore stays steady whatever
the latency (as long as threads are free: a slot more than one second late is skipped and
counted as `skipped`, so a stalled server is not flooded afterwards). It stops after
`duration` seconds, on `stop()`, or when the process exits (daemon threads).

`stats()` returns per target the requests sent, the answers by status class and the client
errors (connection refused or reset), for the demo's summary.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

#: A slot this late is skipped rather than sent (no catch-up burst after a stall).
MAX_LAG_SECONDS = 1.0


@dataclass(frozen=True)
class TargetStats:
    """What one target received so far."""

    sent: int
    ok: int  # 2xx/3xx answers
    server_errors: int  # 5xx answers
    client_errors: int  # no answer: refused, reset, timed out
    skipped: int  # slots dropped because every thread was busy for over MAX_LAG_SECONDS


class _Target:
    def __init__(self, name: str, url: str, rps: float) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"load target {name}: only http://host:port URLs, got {url!r}")
        self.name = name
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = parts.path or "/"
        self.rps = rps
        self.lock = threading.Lock()
        self.next_slot = 0
        self.sent = self.ok = self.server_errors = self.client_errors = self.skipped = 0


class LoadGenerator:
    """Steady traffic to each target until `duration` passes or `stop()` is called."""

    def __init__(self, targets: Mapping[str, str], *, rps: float | Mapping[str, float],
                 duration: float, threads_per_target: int = 16, timeout: float = 10.0) -> None:
        if duration <= 0:
            raise ValueError("duration must be positive: the load generator always stops")
        self.targets = [
            _Target(name, url, float(rps[name] if isinstance(rps, Mapping) else rps))
            for name, url in targets.items()
        ]
        for t in self.targets:
            if t.rps <= 0:
                raise ValueError(f"load target {t.name}: rps must be positive")
        self.duration = duration
        self.threads_per_target = threads_per_target
        self.timeout = timeout
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._start = 0.0

    def start(self) -> LoadGenerator:
        self._start = time.monotonic()
        for t in self.targets:
            for i in range(self.threads_per_target):
                th = threading.Thread(target=self._worker, args=(t,), daemon=True,
                                      name=f"load-{t.name}-{i}")
                th.start()
                self._threads.append(th)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop sending and wait (bounded) for requests in flight."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for th in self._threads:
            th.join(max(0.0, deadline - time.monotonic()))

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the schedule is done (or `timeout`); True when every thread ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for th in self._threads:
            th.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not self.running

    @property
    def running(self) -> bool:
        return any(th.is_alive() for th in self._threads)

    def stats(self) -> dict[str, TargetStats]:
        out = {}
        for t in self.targets:
            with t.lock:
                out[t.name] = TargetStats(t.sent, t.ok, t.server_errors, t.client_errors,
                                          t.skipped)
        return out

    # ------------------------------------------------------------------ the worker

    def _next_due(self, t: _Target) -> float | None:
        """The due time of the next slot of `t` (monotonic clock), or None when done."""
        end = self._start + self.duration
        with t.lock:
            while True:
                due = self._start + t.next_slot / t.rps
                t.next_slot += 1
                if due >= end:
                    return None
                if time.monotonic() - due > MAX_LAG_SECONDS:
                    t.skipped += 1
                    continue
                return due

    def _worker(self, t: _Target) -> None:
        conn: http.client.HTTPConnection | None = None
        try:
            while not self._stop.is_set():
                due = self._next_due(t)
                if due is None:
                    return
                wait = due - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    return
                if conn is None:
                    conn = http.client.HTTPConnection(t.host, t.port, timeout=self.timeout)
                status = self._send(conn, t)
                if status is None:
                    conn.close()
                    conn = None
                with t.lock:
                    t.sent += 1
                    if status is None:
                        t.client_errors += 1
                    elif status >= 500:
                        t.server_errors += 1
                    else:
                        t.ok += 1
        finally:
            if conn is not None:
                conn.close()

    @staticmethod
    def _send(conn: http.client.HTTPConnection, t: _Target) -> int | None:
        try:
            conn.request("GET", t.path, headers={"User-Agent": "canary-demo-loadgen"})
            resp = conn.getresponse()
            resp.read()
            if resp.will_close:
                conn.close()  # the next request opens a new connection
            return int(resp.status)
        except (OSError, http.client.HTTPException):
            return None
