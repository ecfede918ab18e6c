"""The store on SQLite and on the real PostgreSQL: schema version, exactly-once ticks and
commands, rollout runs, redaction."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import select, update

from analyzer.core.rollout import Command, Phase, RolloutState
from analyzer.daemon.store import (
    SCHEMA_VERSION,
    RolloutExists,
    Store,
    StoreError,
    TickConflict,
    TickRecord,
    redact_url,
)
from analyzer.daemon.store.codec import dumps
from analyzer.daemon.store.tables import schema_version

from .conftest import PG_URL, T0, make_policy


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request):
    name = "sqlite_store" if request.param == "sqlite" else "pg_store"
    return request.getfixturevalue(name)


def _tick(rid: int, seq: int, before: RolloutState, after: RolloutState, **kw) -> TickRecord:
    return TickRecord(rollout_id=rid, seq=seq, scheduled_at=T0, state_before=before,
                      state_after=after, action="hold", reason="r", **kw)


def test_schema_is_versioned_and_reopens(store):
    with store.engine.connect() as c:
        assert c.execute(select(schema_version.c.version)).scalar() == SCHEMA_VERSION
    again = Store(store.url, schema=store.schema)
    assert again.migrate() == SCHEMA_VERSION
    again.dispose()


def test_version_1_database_is_migrated_to_fencing(store):
    """A store of schema version 1 (before fencing: rebuilt here by dropping what version 2
    added) is upgraded in place: its finished runs count as settled, its running ones get
    claimed like any other."""
    done = store.create_rollout(make_policy(name="old-done"), T0)
    running = store.create_rollout(make_policy(name="old-running"), T0)
    final = RolloutState(phase=Phase.SUCCEEDED, reason="done")
    store.commit_tick(_tick(done.id, 1, done.state, final))
    table = (lambda t: f'"{store.schema}".{t}') if store.schema else (lambda t: t)
    with store.engine.begin() as c:
        for t, col in (("rollouts", "fence_epoch"), ("rollouts", "settled_seq"),
                       ("rollouts", "policy_rev"), ("ticks", "fence_epoch")):
            c.exec_driver_sql(f"ALTER TABLE {table(t)} DROP COLUMN {col}")
        c.exec_driver_sql(f"DROP TABLE {table('fencing')}")
        c.execute(update(schema_version).values(version=1))
    again = Store(store.url, schema=store.schema)
    try:
        assert again.migrate() == SCHEMA_VERSION == 2
        assert again.get(done.id).settled_seq == 1 and not again.get(done.id).unsettled
        assert [r.id for r in again.schedulable()] == [running.id]
        claim = again.claim(running.id, "r1")
        assert claim.epoch == 1 and again.get(running.id).fence_epoch == 1
        again.commit_tick(_tick(running.id, 1, running.state, running.state, epoch=1))
        assert again.ticks(running.id)[0].fence_epoch == 1
    finally:
        again.dispose()


def test_newer_schema_is_refused(store):
    with store.engine.begin() as c:
        c.execute(update(schema_version).values(version=SCHEMA_VERSION + 1))
    with pytest.raises(StoreError, match="newer"):
        Store(store.url, schema=store.schema)


def test_tick_and_command_apply_exactly_once(store):
    policy = make_policy()
    rec = store.create_rollout(policy, T0)
    _, cid = store.add_command(policy.name, Command.PAUSE, "me", T0)
    after = RolloutState(phase=Phase.PAUSED, reason="paused")
    store.commit_tick(_tick(rec.id, 1, rec.state, after, command_id=cid, command="pause",
                            decision={"decision": "hold", "checks": [{"e": math.inf}]}))
    assert store.pending_command(rec.id) is None
    with pytest.raises(TickConflict):  # same tick again
        store.commit_tick(_tick(rec.id, 1, rec.state, after))
    with pytest.raises(TickConflict):  # a tick from a stale view (skipping a number)
        store.commit_tick(_tick(rec.id, 3, rec.state, after))
    rows = store.ticks(rec.id)
    assert [r.seq for r in rows] == [1] and rows[0].command == "pause"
    assert rows[0].verdicts == [{"e": "Infinity"}]  # strict JSON for PostgreSQL
    assert store.get(rec.id).phase is Phase.PAUSED


def test_rollout_runs(store):
    policy = make_policy()
    first = store.create_rollout(policy, T0)
    assert store.create_rollout(policy, T0).id == first.id  # same version: idempotent
    with pytest.raises(RolloutExists, match="abort it first"):
        store.create_rollout(policy, T0, canary_version="v3")
    assert store.ensure_rollout(policy, T0) is None
    done = RolloutState(phase=Phase.ROLLED_BACK)
    store.commit_tick(_tick(first.id, 1, first.state, done))
    second = store.create_rollout(policy, T0, canary_version="v3")
    assert second.generation == 2 and second.canary_version == "v3"
    assert [r.id for r in store.list_rollouts()] == [second.id]
    assert [r.id for r in store.list_rollouts(active_only=True, all_generations=True)] == [
        second.id]
    with pytest.raises(StoreError):
        store.add_command("missing", Command.ABORT, "me", T0)


def test_redaction():
    assert "hunter2" not in redact_url("postgresql+psycopg://u:hunter2@db:5432/x")
    assert redact_url("sqlite:///canary.db") == "sqlite:///canary.db"
    assert dumps({"a": [math.nan, -math.inf]}) == '{"a":[null,"-Infinity"]}'
    s = Store(PG_URL.replace("postgres@", "postgres:pw@"), migrate=False)
    assert "pw" not in s.url_redacted
