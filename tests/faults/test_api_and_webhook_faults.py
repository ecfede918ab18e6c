"""Faults of the systems the engine talks to: the real Kubernetes API server behind the fault
proxy of tests/support/fault_proxy.py (answering 500s, 409 Conflict storms and too late) and
webhook receivers that hang (a `beforeStep` gate and a notification receiver).

The API-server case runs the engine in this process (the real Scheduler and its threads, the
real `kubernetes` client over verified TLS, as deploy/'s ServiceAccount) so that the router's
request timeout can be shortened to 1 s; every other case runs `canary run` as a subprocess.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from analyzer.core.rollout import Phase
from analyzer.daemon.engine import Engine
from analyzer.daemon.scheduler import Scheduler
from analyzer.daemon.store import Store
from analyzer.policy import Policy, parse_policy
from analyzer.routers.factory import build_router
from tests.engine.conftest import Receiver

from .conftest import SOAK, Daemon, FaultLedger, Kube, audit_log, fault_policy, wait_for

pytestmark = pytest.mark.slow


def _held_weights(kube: Kube, policy: Policy) -> list[int]:
    """Every canary weight the server stored for the VirtualService, in order (from a watch)."""
    dr = kube.objects.get("networking.istio.io/v1", "DestinationRule", "checkout")
    out: list[int] = []
    for obj in kube.versions():
        w = build_router(policy, current_object=[obj, dr]).get_weight().canary_weight
        if not out or out[-1] != w:
            out.append(int(w))
    return out


def test_api_server_500s_conflict_storms_and_timeouts(tmp_path: Path, kube: Kube,
                                                      ledger: FaultLedger) -> None:
    rounds = 3 if SOAK else 1
    steps = "[5, 10, 20, 30, 40, 50, 60, 70, 80, 100]" if SOAK else "[10, 25, 50, 100]"
    policy = parse_policy(fault_policy("apifaults", steps=steps))
    store = Store(f"sqlite:///{tmp_path / 'canary.db'}")
    proxy = kube.proxy

    def router_factory(p: Policy) -> Any:
        router = build_router(p, api_client=kube.api_client())
        router.objects.request_timeout = (1.0, 1.0)  # so a late answer is a timeout
        return router

    faults: list[tuple[str, Callable[[], Any]]] = [
        ("500", lambda: proxy.inject(500, count=2, path="virtualservices")),
        # 12 conflicts: more than one write's 9 attempts, fewer than 5 refused ticks
        ("409 storm", lambda: proxy.inject(409, count=12, method="PATCH",
                                           path="virtualservices")),
        # forwarded after 1.5 s: the client gave up after 1 s, the write landed all the same
        ("timeout", lambda: proxy.inject(None, count=1, method="PATCH", path="virtualservices",
                                         delay=1.5)),
    ]
    engine = Engine(store, router_factory=router_factory)
    scheduler = Scheduler(engine, policies=[policy], sync_interval=0.2)
    scheduler.start()
    injected: dict[str, int] = {}
    try:
        rid = wait_for(lambda: store.list_rollouts() and store.list_rollouts()[0].id, 30,
                       "the rollout")
        for r in range(rounds):
            if r:
                # Let a write succeed between rounds: ROUTER_FAILURE_LIMIT refusals in a row
                # turn a forward step into a rollback by design, which is not this case.
                seq0 = store.get(rid).tick_seq
                wait_for(lambda s0=seq0: not store.get(rid).active or (
                    store.get(rid).tick_seq > s0 and store.get(rid).state.router_failures == 0),
                    60, "a tick the router accepted")
            for name, inject in faults:
                if not store.get(rid).active:
                    break
                fault = inject()
                injected[name] = injected.get(name, 0) + 1
                wait_for(lambda f=fault: f.exhausted or not store.get(rid).active, 60,
                         f"the {name} fault to be hit")
        wait_for(lambda: not store.get(rid).active, 90, "the rollout to finish")
    finally:
        scheduler.shutdown(wait=True)
    rec = store.get(rid)
    audit = audit_log(store, rid)
    changes = store.weight_changes(rid)
    recorded = {w.weight_after for w in changes} | {
        w.weight_before for w in changes if w.cause == "reconcile"} | {0}
    held = _held_weights(kube, policy)
    refused = [t for t in store.ticks(rid) if t.action == "router-hold"]
    correct = audit.finished_correctly(kube.weight(policy)) and set(held) <= recorded
    for name, n in injected.items():
        ledger.record(f"API server {name}", injected=n, correct=correct, lost=audit.lost)
    assert len(injected) == len(faults), f"the rollout ended before every fault: {injected}"
    assert not audit.problems, audit.problems
    assert rec.phase is Phase.SUCCEEDED, rec.state.reason
    assert kube.weight(policy) == rec.state.weight == 100
    # Every weight the API server ever held is in the store's log (a committed tick, or a
    # reconciliation that found it there and corrected it).
    assert set(held) <= recorded, (held, sorted(recorded))
    assert refused, "no tick recorded a refused router write"
    assert all("router error" in t.reason for t in refused)
    store.dispose()


def test_webhook_receivers_hanging(tmp_path: Path, kube: Kube, ledger: FaultLedger) -> None:
    gate = Receiver(block=threading.Event())
    hook = Receiver(block=threading.Event())
    secret = "T0AAAA/B0BBBB/s3cr3t-webhook-token"
    try:
        extra = f"""  gates:
    beforeStep: [{{name: freeze, url: "{gate.url}", timeout: 1s}}]
  notifications:
    - {{type: slack, url: "{hook.url}/services/{secret}",
       "on": [promote, step, succeeded, rollback, pause, failed]}}
"""
        text = fault_policy("hooks", extra=extra)
        policy = parse_policy(text)
        pdir = tmp_path / "policies"
        pdir.mkdir()
        (pdir / "hooks.yaml").write_text(text)
        db = f"sqlite:///{tmp_path / 'canary.db'}"
        store = Store(db)
        log = tmp_path / "engine.log"
        daemon = Daemon(["--policies", str(pdir), "--db", db, "--no-api", "--sync-interval",
                         "0.2"], kube.env(), log)
        try:
            # The gate hangs: every tick asks, gives up after its 1 s timeout and holds.
            wait_for(lambda: len(gate.requests) >= 3, 30, "three gate calls")
            rec = store.list_rollouts()[0]
            assert rec.state.weight == 0 and kube.weight(policy) == 0
            assert rec.phase in (Phase.PENDING, Phase.PROGRESSING), rec.phase
            assert gate.block is not None
            gate.block.set()  # the gate answers again (200)
            # The notification receiver keeps hanging: decisions go on regardless.
            wait_for(lambda: not store.get(rec.id).active, 180, "the rollout to finish")
            assert hook.entered.is_set()
        finally:
            # Graceful stop with notifications still hanging: bounded by the notifier's 5 s.
            assert daemon.stop() == 0
        text_log = log.read_text(errors="replace")
        final = store.get(rec.id)
        audit = audit_log(store, rec.id)
        correct = audit.finished_correctly(kube.weight(policy))
        ledger.record("webhook receiver hanging (gate, notification)", injected=2,
                      correct=correct, lost=audit.lost)
        assert not audit.problems, audit.problems
        assert final.phase is Phase.SUCCEEDED, final.state.reason
        assert kube.weight(policy) == final.state.weight == 100
        assert "s3cr3t-webhook-token" not in text_log
        assert "Traceback" not in text_log
        store.dispose()
    finally:
        gate.close()
        hook.close()

