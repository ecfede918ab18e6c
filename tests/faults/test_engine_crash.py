"""Fault: the engine (`canary run`, a real process) SIGKILLed at random points of its ticks.

The Istio router writes to the real Kubernetes API server through the fault proxy, which holds
VirtualService writes 0.3 s before forwarding them so that a kill often lands between the
router write and the commit: the write is applied after the engine died, the store still holds
the previous tick. Half the kills wait for such a write to be in flight; the others come at a
random time. After each restart the router must be reconciled with the store, and at the end
the log must be complete and the router hold exactly what the store says.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from analyzer.core.rollout import Phase
from analyzer.daemon.store import Store
from analyzer.policy import parse_policy

from .conftest import SOAK, Daemon, FaultLedger, Kube, audit_log, fault_policy, wait_for

pytestmark = pytest.mark.slow


def test_engine_sigkilled_mid_tick(tmp_path: Path, kube: Kube, ledger: FaultLedger) -> None:
    rng = random.Random(int(os.environ.get("CANARY_FAULT_SEED", "11")))
    kills = 12 if SOAK else 4
    # the soak's longer rollout leaves room for all its kills before it finishes
    steps = "[5, 10, 20, 30, 40, 50, 60, 70, 80, 100]" if SOAK else "[10, 25, 50, 100]"
    text = fault_policy("killed", steps=steps)
    policy = parse_policy(text)
    pdir = tmp_path / "policies"
    pdir.mkdir()
    (pdir / "killed.yaml").write_text(text)
    db = f"sqlite:///{tmp_path / 'canary.db'}"
    args = ["--policies", str(pdir), "--db", db, "--no-api", "--sync-interval", "0.2"]
    writes = [kube.proxy.inject(None, count=None, method=m, path="virtualservices", delay=0.3)
              for m in ("PATCH", "PUT")]
    kube.proxy.inject(None, count=None, method="GET", path="virtualservices", delay=0.1)
    store = Store(db)

    def active() -> bool:
        rs = store.list_rollouts()
        return not rs or rs[0].active

    injected, ahead = 0, 0
    for i in range(kills):
        d = Daemon(args, kube.env(), tmp_path / f"engine-{i}.log")
        try:
            if i % 2 == 0:  # wait for a router write in flight, then kill
                hits = sum(f.hits for f in writes)
                wait_for(lambda h=hits: sum(f.hits for f in writes) > h or not active(), 60,
                         "a router write")
            else:
                time.sleep(rng.uniform(0.1, 2.5))
        finally:
            if active():
                d.kill()
                injected += 1
            d.stop()
        if not active():
            break
        time.sleep(0.4)  # let a write in flight land (the proxy forwards it after the delay)
        rec = store.latest("killed")
        ahead += int(kube.weight(policy) != rec.state.weight)
    last = Daemon(args, kube.env(), tmp_path / "engine-last.log")
    try:
        wait_for(lambda: not active(), 120, "the rollout to finish")
    finally:
        assert last.stop() == 0
    rec = store.latest("killed")
    audit = audit_log(store, rec.id)
    router_weight = kube.weight(policy)
    reconciles = [e for e in store.events(rec.id) if e.kind == "reconcile"]
    correct = audit.finished_correctly(router_weight) and router_weight == 100
    ledger.record("engine SIGKILLed mid-tick", injected=injected, correct=correct,
                  lost=audit.lost)
    assert injected >= 2, "the rollout ended before the faults could be injected"
    assert not audit.problems, audit.problems
    assert rec.phase is Phase.SUCCEEDED, rec.state.reason
    assert router_weight == rec.state.weight == 100
    # A kill that left the router ahead of the store was reconciled by the next process (a
    # reconciliation inside a tick that was itself killed is redone, and may find nothing to do).
    assert not ahead or reconciles, f"the router was ahead {ahead} times, never reconciled"
    print(f"kills {injected}, router ahead of the store after {ahead}, "
          f"reconciliations {len(reconciles)}, ticks {audit.ticks}")
    store.dispose()
