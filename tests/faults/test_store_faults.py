"""Faults of the store: SQLite's disk full (a 16 MiB tmpfs filled with a ballast file) and
PostgreSQL unreachable (a throwaway cluster of our own, stopped and started again).

What must hold: while the store cannot be written no tick is recorded and none is half-written;
the daemon says why in one clear line (no traceback); the router never runs ahead of the store
(a weight change whose commit failed is undone); when the store is back the rollout resumes
from its last committed tick and finishes; the log has no gap and no tick applied twice.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from analyzer.core.rollout import Phase
from analyzer.daemon.store import Store
from analyzer.policy import parse_policy

from .conftest import (
    SOAK,
    Daemon,
    FaultLedger,
    Kube,
    PgCluster,
    audit_log,
    fault_policy,
    fill_disk,
    wait_for,
)

pytestmark = pytest.mark.slow


def _count(log: Path, needle: str) -> int:
    try:
        return log.read_text(errors="replace").count(needle)
    except OSError:
        return 0


def test_sqlite_disk_full(tmp_path: Path, tiny_disk: Path, kube: Kube,
                          ledger: FaultLedger) -> None:
    fills = 3 if SOAK else 2
    text = fault_policy("diskfull", steps="[20, 50, 100]")
    policy = parse_policy(text)
    db = f"sqlite:///{tiny_disk / 'canary.db'}"
    store = Store(db)
    rec = store.create_rollout(policy, datetime.now(UTC))
    log = tmp_path / "engine.log"
    injected = 0
    # The first fill comes before the first tick: that tick starts the rollout (weight 0 ->
    # 20 on the router) and cannot commit it.
    ballast = fill_disk(tiny_disk)
    daemon = Daemon(["--db", db, "--no-api", "--sync-interval", "0.2"], kube.env(), log)
    try:
        for k in range(fills):
            if k:  # later fills: mid-rollout, after the next committed tick
                seq = store.get(rec.id).tick_seq
                wait_for(lambda s=seq: store.get(rec.id).tick_seq > s
                         or not store.get(rec.id).active, 30, "a tick")
                if not store.get(rec.id).active:
                    break
                ballast = fill_disk(tiny_disk)
            injected += 1
            seen = _count(log, "database or disk is full")
            wait_for(lambda s=seen: _count(log, "database or disk is full") > s, 30,
                     "a tick refused by the full disk")
            writes = len(kube.versions())
            wait_for(lambda s=seen: _count(log, "database or disk is full") >= s + 3, 30,
                     "three ticks refused by the full disk")
            # After the first refusal the engine checks the store before the router: the
            # traffic does not flap once per tick of the outage.
            assert len(kube.versions()) == writes
            cur = store.get(rec.id)
            time.sleep(0.3)
            assert store.get(rec.id).tick_seq == cur.tick_seq, "a tick committed on a full disk"
            # The router was put back: it holds what the store says.
            assert kube.weight(policy) == cur.state.weight, (kube.weight(policy), cur.state)
            ballast.unlink()
            if not store.get(rec.id).active:
                break
        wait_for(lambda: not store.get(rec.id).active, 90, "the rollout to finish")
    finally:
        assert daemon.stop() == 0
    text_log = log.read_text(errors="replace")
    final = store.get(rec.id)
    audit = audit_log(store, rec.id)
    correct = audit.finished_correctly(kube.weight(policy))
    ledger.record("SQLite disk full", injected=injected, correct=correct, lost=audit.lost)
    assert "Traceback" not in text_log, text_log[-3000:]
    assert "not recorded" in text_log and "database or disk is full" in text_log
    assert not audit.problems, audit.problems
    assert final.phase is Phase.SUCCEEDED, final.state.reason
    assert kube.weight(policy) == final.state.weight == 100
    store.dispose()


@pytest.mark.postgres
def test_postgres_stopped_and_started(tmp_path: Path, pg_cluster: PgCluster, kube: Kube,
                                      ledger: FaultLedger) -> None:
    outages = 3 if SOAK else 1
    text = fault_policy("pgdown", steps="[20, 50, 100]")
    policy = parse_policy(text)
    pdir = tmp_path / "policies"
    pdir.mkdir()
    (pdir / "pgdown.yaml").write_text(text)
    schema = f"faults_{int(time.time() * 1000) % 10**9}"
    store = Store(pg_cluster.url, schema=schema)
    log = tmp_path / "engine.log"
    daemon = Daemon(["--policies", str(pdir), "--db", pg_cluster.url, "--no-api",
                     "--sync-interval", "0.2"], kube.env(CANARY_DB_SCHEMA=schema), log)
    injected = 0
    try:
        for k in range(outages):
            wait_for(lambda k=k: (rs := store.list_rollouts()) and (
                rs[0].tick_seq >= 2 + 3 * k or not rs[0].active), 60, "ticks before the outage")
            if not store.list_rollouts()[0].active:
                break
            rid = store.list_rollouts()[0].id
            pg_cluster.stop("fast")
            injected += 1
            # Ticks in flight fail ("not recorded"); the sync job sees the lock connection
            # gone and drops the rollout's job until the database answers ("sync failed").
            seen = _count(log, "not recorded") + _count(log, "sync failed")
            wait_for(lambda s=seen: _count(log, "not recorded") + _count(log, "sync failed")
                     >= s + 5, 30, "ticks paused while the database is down")
            pg_cluster.start()
            wait_for(lambda: store.ping(), 30, "the database to answer")
            at = store.get(rid)
            # Whatever the engine did while it could not record, the router is back where the
            # store says (undone, or reconciled after the lock connection was lost).
            if at.active:
                wait_for(lambda a=at: store.get(a.id).tick_seq > a.tick_seq
                         or not store.get(a.id).active, 30, "a tick after the outage")
        wait_for(lambda: not store.list_rollouts(active_only=True), 90, "the rollout to finish")
    finally:
        if not store.ping():
            pg_cluster.start()
        assert daemon.stop() == 0
    text_log = log.read_text(errors="replace")
    final = store.latest("pgdown")
    audit = audit_log(store, final.id)
    correct = audit.finished_correctly(kube.weight(policy))
    ledger.record("PostgreSQL stopped and started", injected=injected, correct=correct,
                  lost=audit.lost)
    assert "Traceback" not in text_log, text_log[-3000:]
    assert not audit.problems, audit.problems
    assert final.phase is Phase.SUCCEEDED, final.state.reason
    assert kube.weight(policy) == final.state.weight == 100
    store.dispose()
