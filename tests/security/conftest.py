"""Fixtures of the security tests: an API server over a store holding one rollout whose policy
carries secrets (a Slack webhook token, a gate's Authorization header and URL token)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from analyzer.daemon.api import ApiContext, ApiServer, create_app
from analyzer.daemon.engine import Engine
from analyzer.daemon.metrics import EngineMetrics
from analyzer.daemon.store import Store
from analyzer.policy import Policy, parse_policy
from tests.support.clock import EPOCH

TOKEN = "tok-7f3a9c2e51d04b8e"
SECRETS = ("xoxb-SLACK-SECRET-1234", "GATE-HEADER-SECRET", "hooktoken-5678")
T0 = EPOCH

SECRET_POLICY = f"""
apiVersion: canary-analyzer.io/v1alpha1
kind: RolloutPolicy
metadata: {{name: secret-svc}}
spec:
  target: {{service: demo, stable: v1, canary: v2}}
  router: {{provider: dry-run}}
  strategy: {{steps: [20, 50, 100]}}
  analysis: {{interval: 5s, minStepDuration: 10s, baselineWindow: 1m}}
  metrics:
    source: simulate
    rps: 2000
    seed: 3
  checks: [{{type: error-rate, tolerance: 0.5}}]
  decision: {{alpha: 0.05, minSamples: 100}}
  gates:
    beforeStep:
      - name: freeze
        url: "http://127.0.0.1:9/gate?token={SECRETS[2]}"
        timeout: 1s
        headers: {{Authorization: "Bearer {SECRETS[1]}"}}
  notifications:
    - {{type: slack, url: "https://hooks.slack.com/services/T0/B0/{SECRETS[0]}"}}
"""


def generated_openapi() -> dict[str, Any]:
    """The OpenAPI document FastAPI generates from the app's routes and models (the same one
    the server serves at /openapi.json: test_api_fuzz checks that)."""
    store = Store("sqlite://")
    try:
        return create_app(ApiContext(store=store, metrics=EngineMetrics())).openapi()
    finally:
        store.dispose()


def secret_policy() -> Policy:
    return parse_policy(SECRET_POLICY)


@pytest.fixture
def secret_store(tmp_path: Path) -> Iterator[tuple[Store, str]]:
    """A SQLite store with a few ticks of `secret-svc` (gates answered by a stub: allowed)."""
    url = f"sqlite:///{tmp_path / 'canary.db'}"
    store = Store(url)
    engine = Engine(store, gate_post=lambda *a, **k: type("R", (), {"status_code": 200})())
    rec = store.create_rollout(secret_policy(), T0)
    for k in range(4):
        engine.tick(rec.id, T0 + k * timedelta(seconds=5))
    yield store, url
    store.dispose()


@pytest.fixture
def api(secret_store: tuple[Store, str]) -> Iterator[ApiServer]:
    store, _ = secret_store
    server = ApiServer(store, Engine(store).metrics, token=TOKEN, port=0)
    server.start()
    yield server
    server.stop()
