"""The HTTP layer's bounds, measured against a real server (uvicorn on loopback):

- slowloris: 60 connections trickling a request head a byte at a time are closed within the
  promised request-head timeout, and meanwhile the API keeps answering with a bounded number
  of threads (the stdlib server held 125 of 150 such sockets after 40 s, one thread each);
- a slow database: the answer is a 503 at the request deadline, and no more database calls
  run at once than the pool allows;
- a token in the query string never reaches the log, at any level, also when the request is
  refused or malformed (the stdlib server wrote the request line at DEBUG).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from typing import Any

import pytest

from analyzer.daemon.api import ApiServer, Limits
from analyzer.daemon.engine import Engine
from analyzer.daemon.store import Store

from .conftest import TOKEN

SLOW_SOCKETS = 60


def get(server: ApiServer, path: str, headers: dict[str, str] | None = None,
        method: str = "GET", timeout: float = 10) -> tuple[int, Any]:
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        ctype = resp.getheader("Content-Type") or ""
        return resp.status, json.loads(body) if ctype.startswith("application/json") else body
    finally:
        conn.close()


def test_slowloris_sockets_are_closed_within_the_head_timeout(api: ApiServer) -> None:
    bound = api.limits.head_timeout  # the promise (docs/engine.md): 10 s by default
    threads_before = threading.active_count()
    socks = []
    for _ in range(SLOW_SOCKETS):
        s = socket.create_connection(api.address, timeout=5)
        s.sendall(b"GET /rollouts HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    opened = time.monotonic()
    closed_after: dict[int, float] = {}
    answered = []
    deadline = opened + bound + 5  # liveness bound: the promise plus scheduling slack
    while len(closed_after) < len(socks) and time.monotonic() < deadline:
        for i, s in enumerate(socks):
            if i in closed_after:
                continue
            try:
                s.sendall(b"X-a: b\r\n")  # one more header line, never the end of the head
                s.settimeout(0.001)
                if s.recv(1) == b"":
                    closed_after[i] = time.monotonic() - opened
            except (BlockingIOError, TimeoutError):
                pass
            except OSError:  # reset or broken pipe: closed by the server
                closed_after[i] = time.monotonic() - opened
        status, _ = get(api, "/healthz", timeout=5)  # the API answers meanwhile
        answered.append(status)
        assert threading.active_count() <= threads_before + api.limits.db_threads + 2
        time.sleep(0.5)
    for s in socks:
        s.close()
    assert len(closed_after) == SLOW_SOCKETS, f"{SLOW_SOCKETS - len(closed_after)} still open"
    assert max(closed_after.values()) <= bound + 1.5, sorted(closed_after.values())[-5:]
    assert min(closed_after.values()) >= bound - 1.5  # closed by the timeout, not at once
    assert answered and set(answered) == {200}
    assert get(api, "/rollouts")[0] == 200


def test_slow_database_answers_503_at_the_deadline_and_db_calls_stay_bounded(
        secret_store: tuple[Store, str], monkeypatch: pytest.MonkeyPatch) -> None:
    store, _ = secret_store
    running, most = 0, 0
    lock = threading.Lock()
    release = threading.Event()
    real = store.list_rollouts

    def slow_list(**kw: Any) -> Any:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            release.wait(5)  # a database that hangs
            return real(**kw)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(store, "list_rollouts", slow_list)
    limits = Limits(db_threads=2, request_deadline=1.0)
    server = ApiServer(store, Engine(store).metrics, port=0, limits=limits)
    server.start()
    try:
        results: list[tuple[int, Any, float]] = []

        def one() -> None:
            t0 = time.monotonic()
            status, body = get(server, "/rollouts")
            results.append((status, body, time.monotonic() - t0))

        workers = [threading.Thread(target=one) for _ in range(6)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(15)
        assert [r[0] for r in results] == [503] * 6, results
        assert all("deadline" in r[1]["message"] for r in results)
        assert max(r[2] for r in results) < 1.0 + 2  # answered at the deadline, not at 5 s
        assert most <= 2  # the pool's size, though six requests waited
        assert get(server, "/healthz")[0] == 200  # routes without the database still answer
        release.set()
    finally:
        release.set()
        server.stop()


def test_a_token_in_the_query_string_never_reaches_the_log(
        api: ApiServer, caplog: pytest.LogCaptureFixture) -> None:
    secret = "QS-SECRET-9f2e41"
    caplog.set_level(1)  # everything, below DEBUG too (uvicorn's TRACE is 5)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "analyzer"):
        caplog.set_level(1, logger=name)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    requests = [
        ("GET", f"/rollouts?token={secret}", {}),
        ("GET", f"/rollouts/secret-svc/ticks?limit={secret}", {}),  # refused: 400
        ("GET", f"/rollouts/secret-svc/ticks?access_token={secret}&since=1", {}),
        ("POST", f"/rollouts/secret-svc/pause?token={secret}", {}),  # refused: 401
        ("POST", f"/rollouts/secret-svc/resume?token={secret}", auth),  # accepted: 202
        ("GET", f"/nowhere?token={secret}", {}),  # 404
        ("DELETE", f"/rollouts?token={secret}", {}),  # 405
        ("GET", f"/?token={secret}", {}),  # the dashboard
    ]
    statuses = [get(api, path, headers, method)[0] for method, path, headers in requests]
    assert statuses == [200, 400, 200, 401, 202, 404, 405, 200]
    # a request the HTTP parser refuses, with the token in its request line
    s = socket.create_connection(api.address, timeout=5)
    s.sendall(f"GET /rollouts?token={secret} HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n"
              "\r\n".encode())
    answer = s.recv(4096)
    s.close()
    assert answer.startswith(b"HTTP/1.1 400") and b"application/json" in answer
    assert caplog.records, "nothing was logged: the test would prove nothing"
    assert any("/rollouts/secret-svc/pause" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert secret not in record.getMessage(), record.getMessage()
        assert TOKEN not in record.getMessage(), record.getMessage()
    assert secret not in caplog.text and TOKEN not in caplog.text
