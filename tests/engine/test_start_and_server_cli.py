"""Starting rollouts by hand and from CD pipelines: after a promotion the promoted version is
the stable one (v1 -> v2 promoted, then v3 runs v2 -> v3, not v1 -> v3); `POST /rollouts`
behind the token; and the `canary` commands against the HTTP API with `--server` instead of
`--db`."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from analyzer.core.rollout import Command, Phase
from analyzer.daemon.api import ApiServer
from analyzer.daemon.engine import Engine, run_rollout
from analyzer.daemon.store import InvalidCommand, Store
from analyzer.policy import Policy

from .conftest import CANARY, T0, make_policy, policy_yaml

TOKEN = "start-token-value"


def test_the_promoted_version_is_the_stable_one_of_the_next_rollout() -> None:
    store = Store("sqlite://")
    policy = make_policy(name="checkout")  # stable v1, canary v2
    first = run_rollout(policy, store=store, start=T0)
    assert first.phase is Phase.SUCCEEDED
    second = store.create_rollout(policy, T0, canary_version="v3")
    assert (second.stable_version, second.canary_version) == ("v2", "v3")
    # the run's policy snapshot says so too: sources and routers read it
    assert second.load_policy().spec.target.stable == "v2"
    # a policy that names its own, newer stable keeps it
    own = policy.with_versions(stable="v2b", canary="v4")
    store.add_command("checkout", Command.ABORT, "test", T0)
    Engine(store).tick(second.id, T0)
    third = store.create_rollout(own, T0)
    assert (third.stable_version, third.canary_version) == ("v2b", "v4")


def test_a_rolled_back_canary_leaves_the_stable_as_it_was() -> None:
    store = Store("sqlite://")
    bad = make_policy(name="checkout", canary_error=0.2)
    assert run_rollout(bad, store=store, start=T0).phase is Phase.ROLLED_BACK
    again = store.create_rollout(bad, T0, canary_version="v3")
    assert again.stable_version == "v1"


def test_the_last_promotion_counts_after_a_rollback() -> None:
    """v1 -> v2 promoted, v2 -> v3 rolled back: v4 still runs against v2."""
    store = Store("sqlite://")
    policy = make_policy(name="checkout")
    assert run_rollout(policy, store=store, start=T0).phase is Phase.SUCCEEDED
    third = store.create_rollout(policy, T0, canary_version="v3")
    store.add_command("checkout", Command.ABORT, "test", T0)
    Engine(store).tick(third.id, T0)
    assert store.get(third.id).phase is Phase.ROLLED_BACK
    fourth = store.create_rollout(policy, T0, canary_version="v4")
    assert (fourth.stable_version, fourth.canary_version) == ("v2", "v4")


def test_a_canary_ref_policy_without_versions_cannot_start_by_hand() -> None:
    store = Store("sqlite://")
    policy = make_policy(name="checkout")
    ref = json.loads(policy.model_dump_json(exclude_none=True))
    ref["spec"]["target"] = {"service": "demo", "canaryRef": {"kind": "Deployment",
                                                              "name": "demo-canary"}}
    with pytest.raises(InvalidCommand, match=r"target\.stable and target\.canary"):
        store.create_rollout(Policy.model_validate(ref), T0)


@pytest.fixture
def server(sqlite_store: Store) -> Iterator[ApiServer]:
    s = ApiServer(sqlite_store, Engine(sqlite_store).metrics, token=TOKEN, port=0)
    s.start()
    yield s
    s.stop()


def _known(store: Store, name: str = "checkout") -> None:
    """The engine knows the policy (as `canary run --policies` or the controller makes it
    known): a first run, finished (rolled back)."""
    rec = store.create_rollout(make_policy(name=name), T0)
    store.add_command(name, Command.ABORT, "test", T0)
    Engine(store).tick(rec.id, T0)
    assert store.get(rec.id).phase is Phase.ROLLED_BACK


def test_post_rollouts_starts_one_behind_the_token(server: ApiServer,
                                                   sqlite_store: Store) -> None:
    url = f"{server.url}/rollouts"
    assert requests.post(url, json={"name": "checkout"}, timeout=10).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    missing = requests.post(url, json={"name": "checkout"}, headers=auth, timeout=10)
    assert missing.status_code == 404 and "checkout" in missing.json()["message"]
    _known(sqlite_store)
    resp = requests.post(url, json={"name": "checkout", "canaryVersion": "v7"}, headers=auth,
                         timeout=10)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert (body["name"], body["generation"], body["canary_version"], body["phase"]) == (
        "checkout", 2, "v7", "pending")
    # pipelines retry: the same version answers the active run
    again = requests.post(url, json={"name": "checkout", "canaryVersion": "v7"}, headers=auth,
                          timeout=10)
    assert again.status_code == 201 and again.json()["id"] == body["id"]
    other = requests.post(url, json={"name": "checkout", "canaryVersion": "v8"}, headers=auth,
                          timeout=10)
    assert other.status_code == 409 and "abort it first" in other.json()["message"]
    bad = requests.post(url, json={"name": "checkout", "policy": {}}, headers=auth, timeout=10)
    assert bad.status_code == 400 and bad.json()["field"] == "policy"
    assert "post" in requests.get(f"{server.url}/openapi.json",
                                  timeout=10).json()["paths"]["/rollouts"]


def _canary(*args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CANARY_API_TOKEN", "CANARY_DB")}
    if token:
        env["CANARY_API_TOKEN"] = token
    return subprocess.run([*CANARY, *args], capture_output=True, text=True, env=env,
                          timeout=60, check=False)


def test_canary_commands_with_server_instead_of_db(server: ApiServer, sqlite_store: Store,
                                                   tmp_path: Path) -> None:
    f = tmp_path / "checkout.yaml"
    f.write_text(policy_yaml("checkout"))
    _known(sqlite_store)
    started = _canary("start", str(f), "--canary-version", "v5", "--server", server.url)
    assert started.returncode == 0, started.stderr
    assert "checkout #2" in started.stdout and "v1 -> v5" in started.stdout
    rec = sqlite_store.latest("checkout")
    engine = Engine(sqlite_store)
    engine.tick(rec.id, T0)
    status = _canary("status", "--server", server.url, token=None)
    assert status.returncode == 0 and "checkout" in status.stdout and "20%" in status.stdout
    one = json.loads(_canary("status", "checkout", "--json", "--server", server.url).stdout)
    assert one["canary_version"] == "v5" and one["weight"] == 20
    paused = _canary("pause", "checkout", "--server", server.url)
    assert paused.returncode == 0 and "pause queued" in paused.stdout
    engine.tick(rec.id, T0 + make_policy().spec.analysis.interval)
    assert sqlite_store.latest("checkout").phase is Phase.PAUSED
    history = _canary("history", "checkout", "--server", server.url)
    assert "pause (pause)" in history.stdout and "rollout started" in history.stdout
    # a write without the token is refused with the API's own words, no traceback
    refused = _canary("abort", "checkout", "--server", server.url, token=None)
    assert refused.returncode == 1 and "CANARY_API_TOKEN" in refused.stderr
    assert "Traceback" not in refused.stderr
    wrong = _canary("abort", "checkout", "--server", server.url, token="wrong")
    assert wrong.returncode == 1 and "401" in wrong.stderr
    gone = _canary("status", "--server", "http://127.0.0.1:9", token=None)
    assert gone.returncode == 1 and "http://127.0.0.1:9/rollouts" in gone.stderr
