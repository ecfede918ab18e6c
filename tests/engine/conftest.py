"""Fixtures for the engine tests: policy builder, stores (SQLite file, PostgreSQL schema),
a local HTTP receiver (webhooks, gates) and helpers to run `canary run` as a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from analyzer.daemon.store import Store
from analyzer.policy import Policy, parse_policy
from tests.support import requires
from tests.support.clock import EPOCH

T0 = EPOCH
PG_URL = requires.PG_URL
REPO = Path(__file__).resolve().parents[2]
CANARY = [str(Path(sys.executable).with_name("canary"))]


def policy_yaml(name: str = "demo", *, canary_error: float = 0.01, strategy: str | None = None,
                steps: str = "[20, 50, 100]", rps: float = 2000, interval: str = "5s",
                min_step: str = "10s", max_step: str = "5m", seed: int = 3,
                extra: str = "") -> str:
    """A fast-deciding policy: simulate source (high rps), dry-run router."""
    strategy = strategy or f"steps: {steps}"
    return f"""
apiVersion: canary-analyzer.io/v1alpha1
kind: RolloutPolicy
metadata: {{name: {name}}}
spec:
  target: {{service: demo, stable: v1, canary: v2}}
  router: {{provider: dry-run}}
  strategy: {{{strategy}}}
  analysis: {{interval: {interval}, minStepDuration: {min_step}, maxStepDuration: {max_step},
             baselineWindow: 1m}}
  metrics:
    source: simulate
    rps: {rps}
    seed: {seed}
    stable: {{errorRate: 0.01}}
    canary: {{errorRate: {canary_error}}}
  checks: [{{type: error-rate, tolerance: 0.5}}, {{type: latency}}]
  decision: {{alpha: 0.05, minSamples: 100}}
{extra}
"""


def make_policy(**kw: Any) -> Policy:
    return parse_policy(policy_yaml(**kw))


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'canary.db'}")
    yield store
    store.dispose()


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped afterwards (tests stay isolated)."""
    requires.postgres()
    schema = f"canary_test_{uuid.uuid4().hex[:10]}"
    yield schema
    eng = create_engine(PG_URL)
    with eng.begin() as c:
        c.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    eng.dispose()


@pytest.fixture
def pg_store(pg_schema: str) -> Iterator[Store]:
    store = Store(PG_URL, schema=pg_schema)
    yield store
    store.dispose()


class Receiver:
    """A local HTTP endpoint answering with scripted statuses; records every request."""

    def __init__(self, statuses: list[int] | Callable[[int], int] | None = None,
                 block: threading.Event | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses = statuses
        self.block = block  # handlers wait on it (a hanging receiver)
        self.entered = threading.Event()
        recv = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"null")
                recv.requests.append({"path": self.path, "body": body,
                                      "headers": dict(self.headers)})
                recv.entered.set()
                if recv.block is not None:
                    recv.block.wait(30)
                i = len(recv.requests) - 1
                st = recv.statuses
                code = st(i) if callable(st) else (st[min(i, len(st) - 1)] if st else 200)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def close(self) -> None:
        if self.block is not None:
            self.block.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(*a: Any, **kw: Any) -> Receiver:
        r = Receiver(*a, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """`canary run` in a subprocess (a real process: it can be SIGKILLed)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen([*CANARY, "run", *args], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=self._log)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line:
            raise AssertionError(f"daemon did not start:\n{log.read_text()[-3000:]}")
        self.info = json.loads(line)

    @property
    def replica(self) -> str:
        return str(self.info["replica"])

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return int(self.proc.returncode)


def daemon_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CANARY_API_TOKEN", None)
    env.update(extra)
    return env


def wait_for(pred: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
