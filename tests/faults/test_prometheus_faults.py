"""Faults of the metric source: the real Prometheus SIGKILLed and restarted mid-step, and a
Prometheus answering more slowly than the tick's query budget (a SLOW HTTP PROXY in front of
the real server, the policy's `metrics.timeout: 1s`).

The rollout reads live data: a LiveExporter (an application's /metrics whose traffic follows
the weight the real API server holds) scraped every second by the real Prometheus, and
`canary run` as a subprocess. While the data is missing every tick must hold (recorded, with the
reason), the weight must not move, nothing is promoted without data, and the rollout must
resume and finish once Prometheus answers again.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from analyzer.core.rollout import Phase
from analyzer.daemon.store import Store
from analyzer.policy import parse_policy

from .conftest import (
    SOAK,
    Daemon,
    FaultLedger,
    Kube,
    SlowProxy,
    audit_log,
    fault_policy,
    prometheus_source,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.prometheus]


def _no_data_ticks(store: Store, rollout_id: int, after_seq: int) -> list[Any]:
    return [t for t in store.ticks(rollout_id, since_seq=after_seq)
            if t.samples is not None and t.samples.get("no_data_reason")]


def _run_with_outages(name: str, fault: str, address: str, timeout: str, tmp_path: Path,
                      kube: Kube, exporter: Any, ledger: FaultLedger, outages: int,
                      begin: Any, end: Any) -> None:
    text = fault_policy(name, metrics=prometheus_source(address, timeout=timeout))
    policy = parse_policy(text)
    exporter.weight = lambda: kube.weight(policy)  # the mesh routes by the VirtualService
    pdir = tmp_path / "policies"
    pdir.mkdir()
    (pdir / f"{name}.yaml").write_text(text)
    db = f"sqlite:///{tmp_path / 'canary.db'}"
    store = Store(db)
    daemon = Daemon(["--policies", str(pdir), "--db", db, "--no-api", "--sync-interval", "0.2"],
                    kube.env(), tmp_path / "engine.log")
    injected, held = 0, 0
    try:
        for k in range(outages):
            # Inject once a step has begun (the first outage right at the first step: the
            # judge's first window then has the canary's traffic, which keeps the run short;
            # with a window of 0 canary requests first it accumulates evidence much slower).
            wait_for(lambda k=k: (rs := store.list_rollouts()) and (
                (rs[0].tick_seq >= 1 + 4 * k and rs[0].state.step >= 0) or not rs[0].active),
                60, "the rollout to be analysing")
            at = store.list_rollouts()[0]
            if not at.active:
                break
            begin()
            injected += 1
            wait_for(lambda a=at: len(_no_data_ticks(store, a.id, a.tick_seq)) >= 3, 60,
                     "three ticks without data")
            during = store.get(at.id)
            end()
            # Without data the weight stayed where it was and every such tick held.
            assert during.state.weight == at.state.weight and during.state.step == at.state.step
            missing = _no_data_ticks(store, at.id, at.tick_seq)
            assert all(t.action == "hold" for t in missing), [(t.seq, t.action) for t in missing]
            assert all(t.weight_after == t.weight_before for t in missing)
            held += len(missing)
        wait_for(lambda: not store.list_rollouts(active_only=True), 120,
                 "the rollout to finish")
    finally:
        assert daemon.stop() == 0
    rec = store.latest(name)
    audit = audit_log(store, rec.id)
    resumed = [t for t in store.ticks(rec.id) if t.decision == "promote"]
    correct = audit.finished_correctly(kube.weight(policy))
    ledger.record(fault, injected=injected, correct=correct, lost=audit.lost)
    assert injected >= 1 and held >= 3
    assert audit.promotions_without_data == 0 and not audit.problems, audit.problems
    assert rec.phase is Phase.SUCCEEDED, rec.state.reason
    assert resumed, "nothing was promoted on real data"
    assert kube.weight(policy) == rec.state.weight == 100
    store.dispose()


def test_prometheus_killed_and_restarted(tmp_path: Path, kube: Kube, live_prometheus: Any,
                                         ledger: FaultLedger) -> None:
    prom, exporter = live_prometheus

    def kill() -> None:
        proc = prom._proc  # the server's process: SIGKILL, no clean shutdown
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    _run_with_outages("promkill", "Prometheus SIGKILLed, restarted", prom.url, "2s", tmp_path,
                      kube, exporter, ledger, 3 if SOAK else 1, kill, prom.restart)


def test_prometheus_slower_than_the_tick_budget(tmp_path: Path, kube: Kube,
                                                live_prometheus: Any,
                                                ledger: FaultLedger) -> None:
    prom, exporter = live_prometheus
    proxy = SlowProxy(prom.url)

    def slow() -> None:
        proxy.delay = 2.5  # beyond metrics.timeout (1 s) and the 1 s interval

    def fast() -> None:
        proxy.delay = 0.0

    try:
        _run_with_outages("promslow", "Prometheus slow (proxy, 2.5 s > 1 s timeout)",
                          proxy.url, "1s", tmp_path, kube, exporter, ledger,
                          3 if SOAK else 1, slow, fast)
        assert proxy.delayed > 0
    finally:
        proxy.close()
