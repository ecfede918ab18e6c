"""Secrets: the API token (constant-time check, never logged), loopback by default, and
credentials (database URL password, webhook URL tokens, Authorization headers) redacted in the
daemon's log, `canary status`, `canary history --json` (the export) and the HTTP API."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from analyzer.cli.app import app
from analyzer.daemon.api import ApiServer, check_token
from analyzer.daemon.api import auth as auth_mod
from analyzer.daemon.engine import Engine
from analyzer.daemon.store import Store
from analyzer.policy import parse_policy
from analyzer.util.redaction import redact_policy
from tests.engine.conftest import PG_URL, Daemon, daemon_env, free_port
from tests.support import requires

from .conftest import SECRET_POLICY, SECRETS, T0, TOKEN

runner = CliRunner()


def test_token_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = auth_mod.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth_mod.hmac, "compare_digest", spy)
    assert check_token(f"Bearer {TOKEN}", TOKEN) == 0
    assert check_token(f"Bearer {TOKEN[:-1]}x", TOKEN) == 401
    assert check_token(None, TOKEN) == 401 and check_token("Basic abc", TOKEN) == 401
    assert check_token(f"Bearer {TOKEN}", None) == 403
    # Every bearer value went through hmac.compare_digest, none through ==.
    assert calls == [(TOKEN.encode(), TOKEN.encode()), ((TOKEN[:-1] + "x").encode(),
                                                        TOKEN.encode())]


def test_server_binds_loopback_by_default(secret_store: tuple[Store, str]) -> None:
    store, _ = secret_store
    server = ApiServer(store, Engine(store).metrics, port=0)
    try:
        assert server.address[0] == "127.0.0.1"
    finally:
        server.close()
    res = runner.invoke(app, ["run", "--help"], terminal_width=200)
    assert "127.0.0.1:8080" in res.output


@pytest.fixture
def pg_schema_name() -> Iterator[str]:
    eng = create_engine(requires.postgres())
    schema = f"canary_sec_{uuid.uuid4().hex[:10]}"
    yield schema
    with eng.begin() as c:
        c.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    eng.dispose()


@pytest.mark.postgres
def test_daemon_log_never_shows_token_or_password(tmp_path: Path, pg_schema_name: str) -> None:
    password = "hunter2-db-password"
    url = PG_URL.replace("postgres@", f"postgres:{password}@")  # trust auth ignores it
    pdir = tmp_path / "policies"
    pdir.mkdir()
    (pdir / "secret.yaml").write_text(SECRET_POLICY)
    port = free_port()
    log = tmp_path / "engine.log"
    d = Daemon(["--policies", str(pdir), "--db", url, "--listen", f"127.0.0.1:{port}",
                "--log-level", "DEBUG", "--sync-interval", "0.2"],
               daemon_env(CANARY_API_TOKEN=TOKEN, CANARY_DB_SCHEMA=pg_schema_name), log)
    try:
        assert d.info["api"] == f"http://127.0.0.1:{port}"
        base = d.info["api"]
        for token in (TOKEN, "wrong-token", TOKEN + "x"):
            req = urllib.request.Request(f"{base}/rollouts/secret-svc/pause", method="POST",
                                         data=b"", headers={"Authorization": f"Bearer {token}"})
            try:
                urllib.request.urlopen(req, timeout=10).read()
            except urllib.error.HTTPError as e:
                e.read()
        # a client that puts the token in the query string: answered, never logged
        urllib.request.urlopen(f"{base}/rollouts?access_token={TOKEN}", timeout=10).read()
        body = urllib.request.urlopen(f"{base}/rollouts/secret-svc", timeout=10).read().decode()
    finally:
        assert d.stop() == 0
    logged = log.read_text(errors="replace")
    assert "POST /rollouts/secret-svc/pause" in logged or "pause" in logged
    for secret in (TOKEN, password, *SECRETS):
        assert secret not in logged, secret
        assert secret not in body, secret
    assert "***" in logged  # the database URL, masked


def test_status_history_and_api_redact(secret_store: tuple[Store, str], api: ApiServer) -> None:
    _, url = secret_store
    outputs = []
    for args in (["status"], ["status", "--json"], ["status", "secret-svc"],
                 ["status", "secret-svc", "--json"], ["history", "secret-svc", "--json"],
                 ["history", "secret-svc"]):
        res = runner.invoke(app, [*args, "--db", url], terminal_width=200)
        assert res.exit_code == 0, res.output
        outputs.append(res.output)
    for path in ("/rollouts", "/rollouts/secret-svc", "/rollouts/secret-svc/ticks?full=1"):
        outputs.append(urllib.request.urlopen(api.url + path, timeout=10).read().decode())
    detail = json.loads(outputs[3])
    assert detail["policy"]["spec"]["notifications"][0]["url"] == "https://hooks.slack.com/***"
    for out in outputs:
        for secret in SECRETS:
            assert secret not in out, (secret, out[:500])


def test_database_url_password_not_in_errors() -> None:
    res = runner.invoke(app, ["status", "--db", "postgresql://u:pw-sekrit-9@127.0.0.1:1/x"])
    assert res.exit_code == 1
    assert "pw-sekrit-9" not in res.output and "***" in res.output


PROM_SECRET_POLICY = """
apiVersion: canary-analyzer.io/v1alpha1
kind: RolloutPolicy
metadata: {name: prom-secret}
spec:
  target: {service: demo, stable: v1, canary: v2}
  router: {provider: dry-run}
  strategy: {steps: [50, 100]}
  analysis: {interval: 5s}
  metrics:
    source: prometheus
    address: "http://admin:prom-pass-42@127.0.0.1:PORT"
    timeout: 1s
    retries: 0
    headers: {Authorization: "Bearer prom-header-secret"}
  checks: [{type: error-rate}]
"""


def _prom_secret_run(tmp_path: Path) -> tuple[str, str]:
    """The redacted policy dump and the exported ticks of a rollout whose Prometheus (with
    basic-auth credentials in its address, unreachable) fails every query."""
    policy = parse_policy(PROM_SECRET_POLICY.replace("PORT", str(free_port())))
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    engine = Engine(store)
    rec = store.create_rollout(policy, T0)
    for k in range(3):
        engine.tick(rec.id, T0 + k * timedelta(seconds=5))
    dumped = json.dumps(redact_policy(store.get(rec.id).policy))
    exported = json.dumps([t.to_json(full=True) for t in store.ticks(rec.id)])
    store.dispose()
    return dumped, exported


def test_prometheus_credentials_redacted_in_policy_dump(tmp_path: Path) -> None:
    dumped, exported = _prom_secret_run(tmp_path)
    assert "admin:***@127.0.0.1" in dumped
    for secret in ("prom-pass-42", "prom-header-secret"):
        assert secret not in dumped, secret
    assert "prom-header-secret" not in exported


def test_prometheus_password_not_in_recorded_reasons(tmp_path: Path) -> None:
    _, exported = _prom_secret_run(tmp_path)
    assert "prom-pass-42" not in exported


def _report_page(secret_store: tuple[Store, str], tmp_path: Path) -> str:
    from analyzer.offline.report import write_report

    store, _ = secret_store
    index = Path(write_report(store, store.latest("secret-svc").id, tmp_path / "report"))
    return (index if index.is_file() else index / "index.html").read_text()


def test_report_redacts_webhook_urls(secret_store: tuple[Store, str], tmp_path: Path) -> None:
    page = _report_page(secret_store, tmp_path)
    assert "secret-svc" in page
    for secret in (SECRETS[0], SECRETS[2]):  # the Slack token, the gate URL's token
        assert secret not in page, secret


def test_report_redacts_gate_headers(secret_store: tuple[Store, str], tmp_path: Path) -> None:
    assert SECRETS[1] not in _report_page(secret_store, tmp_path)


def test_replay_export_carries_no_secrets(secret_store: tuple[Store, str]) -> None:
    from analyzer.offline.export import export_jsonl

    store, _ = secret_store
    lines = json.dumps(export_jsonl(store, store.latest("secret-svc").id))
    assert '"stable"' in lines
    for secret in SECRETS:
        assert secret not in lines, secret
