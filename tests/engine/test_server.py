"""The HTTP API: reads, token-protected writes, /metrics in the Prometheus format."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from analyzer.daemon.api import ApiServer
from analyzer.daemon.engine import Engine

from .conftest import T0, make_policy

TOKEN = "s3cret-token-value"


def call(url: str, method: str = "GET", token: str | None = None) -> tuple[int, Any, str]:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read().decode()
            return resp.status, body, resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers.get("Content-Type", "")


@pytest.fixture
def api(sqlite_store) -> Iterator[tuple[ApiServer, Engine, int]]:
    engine = Engine(sqlite_store)
    rec = sqlite_store.create_rollout(make_policy(name="checkout"), T0)
    for k in range(4):
        engine.tick(rec.id, T0 + k * make_policy().spec.analysis.interval)
    server = ApiServer(sqlite_store, engine.metrics, token=TOKEN, port=0)
    server.start()
    yield server, engine, rec.id
    server.stop()


def test_reads(api):
    server, _, rid = api
    status, body, ctype = call(f"{server.url}/rollouts")
    assert status == 200 and "json" in ctype
    rollouts = json.loads(body)["rollouts"]
    assert [r["name"] for r in rollouts] == ["checkout"]
    assert rollouts[0]["phase"] == "progressing"
    status, body, _ = call(f"{server.url}/rollouts/checkout")
    detail = json.loads(body)
    assert status == 200 and detail["id"] == rid and detail["weight_changes"]
    status, body, _ = call(f"{server.url}/rollouts/checkout/ticks?since=1")
    ticks = json.loads(body)["ticks"]
    assert status == 200 and [t["seq"] for t in ticks] == [2, 3, 4]
    assert all(t["checks"] for t in ticks)
    assert call(f"{server.url}/rollouts/nope")[0] == 404
    assert call(f"{server.url}/healthz")[0] == 200
    assert call(f"{server.url}/readyz")[0] == 200
    status, body, _ = call(f"{server.url}/openapi.json")
    spec = json.loads(body)
    assert status == 200 and "/rollouts/{name}/abort" in spec["paths"]


def test_writes_need_the_token(api, sqlite_store, caplog):
    server, _, rid = api
    caplog.set_level(logging.DEBUG)
    url = f"{server.url}/rollouts/checkout/pause"
    assert call(url, "POST")[0] == 401
    assert call(url, "POST", token="wrong")[0] == 401
    assert call(url, "POST", token=TOKEN[:-1])[0] == 401
    assert sqlite_store.pending_command(rid) is None
    status, body, _ = call(url, "POST", token=TOKEN)
    assert status == 202 and json.loads(body)["command"] == "pause"
    cmd = sqlite_store.pending_command(rid)
    assert cmd is not None and str(cmd.command) == "pause"
    assert call(f"{server.url}/rollouts/checkout/explode", "POST", token=TOKEN)[0] == 404
    assert TOKEN not in caplog.text


def test_writes_disabled_without_configured_token(sqlite_store):
    engine = Engine(sqlite_store)
    sqlite_store.create_rollout(make_policy(name="checkout"), T0)
    server = ApiServer(sqlite_store, engine.metrics, token=None, port=0)
    server.start()
    try:
        status, body, _ = call(f"{server.url}/rollouts/checkout/abort", "POST", token="x")
        assert status == 403 and "CANARY_API_TOKEN" in body
    finally:
        server.stop()


def test_metrics_parse_with_prometheus_client(api):
    server, _, _ = api
    status, body, ctype = call(f"{server.url}/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body)}
    weight = families["canary_rollout_weight_percent"].samples
    assert [(s.labels["rollout"], s.value) for s in weight] == [("checkout", 20.0)]
    states = {s.labels["state"]: s.value for s in families["canary_rollout_state"].samples}
    assert states["progressing"] == 1 and sum(states.values()) == 1
    assert "canary_tick_duration_seconds" in families
    decisions = families["canary_decisions"].samples
    assert sum(s.value for s in decisions if s.name == "canary_decisions_total") == 4
