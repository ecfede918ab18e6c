"""Fenced traffic moves, deterministically: the issue's split brain, reproduced step by step with
real engines on the real PostgreSQL (advisory-lock ownership), a real nginx or the real
Kubernetes API server, and one injected stall.

The reproduction (issue 21): replica A reads a rollout and stalls (here: inside its `beforeStep`
gate call, a real HTTP receiver that does not answer); A's database sessions are killed (a
partition: `pg_terminate_backend`), so replica B takes the rollout over, promotes it and
aborts it; then A resumes. Before fencing, A wrote its stale weight to the router and only then
failed to commit: the store said rolled_back at 0 %, the router 50 %, for ever. Now A's write
is refused (its lease is gone, and the router carries B's newer token), A commits nothing,
and the router holds B's final state. A second case stalls A right after its lease check
(the check passed, then the partition): the fencing token alone refuses the write.

Also: the finished rollout's owner repairs a router that disagrees with the final state
(`settle`), a new owner settles a rollout its finisher did not, and a former owner can never
commit after a take-over (the commit's compare-and-set includes the epoch).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from analyzer.core.rollout import Command, Phase
from analyzer.daemon.engine import Engine, TickOutcome
from analyzer.daemon.scheduler import PgAdvisoryOwnership
from analyzer.daemon.store import Store, TickConflict, TickRecord
from analyzer.policy import Policy, parse_policy
from analyzer.routers import fence as fencing
from analyzer.routers.base import Router
from analyzer.routers.factory import build_router
from analyzer.routers.fence import FenceToken, token_of
from analyzer.routers.nginx_file import NginxLocalRouter, render_upstream
from tests.engine.conftest import PG_URL, T0, Receiver, wait_for
from tests.routers.conftest import DESTINATION_RULE, VIRTUAL_SERVICE
from tests.support import requires
from tests.support.kube_cluster import KubeCluster
from tests.support.kube_objects import ClusterObjects

pytestmark = pytest.mark.postgres

VS = ("networking.istio.io/v1", "VirtualService", "checkout")


def policy_text(router: str, gate_url: str, namespace: str = "shop") -> str:
    return f"""
apiVersion: canary-analyzer.io/v1alpha1
kind: RolloutPolicy
metadata: {{name: fenced}}
spec:
  target: {{namespace: {namespace}, service: checkout, stable: v1, canary: v2}}
  router: {router}
  strategy: {{steps: [25, 50, 75, 100]}}
  analysis: {{interval: 5s, minStepDuration: 10s, maxStepDuration: 5m, baselineWindow: 1m}}
  metrics:
    source: simulate
    allowSimulatedMetrics: true
    rps: 2000
    seed: 3
    stable: {{errorRate: 0.01}}
    canary: {{errorRate: 0.01}}
  checks: [{{type: error-rate, tolerance: 0.5}}]
  decision: {{alpha: 0.05, minSamples: 100}}
  gates:
    beforeStep: [{{name: change-window, url: "{gate_url}", timeout: 60s}}]
"""


@dataclass
class RouterSetup:
    """One routed object for the rollout, and how to read it behind the engines' backs."""

    router_yaml: str
    namespace: str
    make: Callable[[Policy], Router]
    weight: Callable[[], int]
    token: Callable[[], FenceToken | None]
    unfenced_write: Callable[[int], None]  # a writer without a fence (a human's `canary route`)


@pytest.fixture(params=["nginx", "istio"])
def routed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RouterSetup]:
    if request.param == "nginx":
        requires.binary("nginx")
        from analyzer.demo.local_nginx import LocalNginx

        upstream = tmp_path / "upstream.conf"
        upstream.write_text(render_upstream("shop", "127.0.0.1:9", "127.0.0.1:10", 0))
        nginx = LocalNginx(tmp_path / "nginx", upstream, "shop").start()
        router_yaml = ("{provider: nginx, upstreamFile: " + str(upstream) + ", upstreamName: "
                       "shop, stableServer: '127.0.0.1:9', canaryServer: '127.0.0.1:10', "
                       f"nginxConfig: {nginx.config_path}}}")
        plain: list[NginxLocalRouter] = []

        def reader() -> NginxLocalRouter:
            if not plain:
                plain.append(NginxLocalRouter(parse_policy(policy_text(router_yaml, "http://x"))))
            return plain[0]

        def nginx_token() -> FenceToken | None:
            return fencing.TokenFile(fencing.token_path(upstream)).held

        try:
            yield RouterSetup(router_yaml, "shop", lambda p: build_router(p),
                              lambda: reader().get_weight().canary_weight, nginx_token,
                              lambda w: reader().set_weight(w))
        finally:
            nginx.stop()
        return
    cluster: KubeCluster = request.getfixturevalue("kube_cluster")
    namespace: str = request.getfixturevalue("kube_namespace")
    objects = ClusterObjects(cluster, namespace)
    objects.seed(VIRTUAL_SERVICE)
    objects.seed(DESTINATION_RULE)
    api = cluster.api_client()
    router_yaml = ("{provider: istio, virtualService: checkout, destinationRule: checkout, "
                   "stableSubset: stable, canarySubset: canary}")
    policy = parse_policy(policy_text(router_yaml, "http://x", namespace))

    def istio_token() -> FenceToken | None:
        return token_of(objects.get(*VS))

    try:
        yield RouterSetup(router_yaml, namespace, lambda p: build_router(p, api_client=api),
                          lambda: build_router(policy, api_client=api).get_weight().canary_weight,
                          istio_token,
                          lambda w: build_router(policy, api_client=api).set_weight(w))
    finally:
        api.close()


class Replica:
    """One engine with its own store handle (its own database sessions) and its own
    advisory-lock session, as a separate process would have."""

    def __init__(self, name: str, schema: str, routed: RouterSetup) -> None:
        self.store = Store(PG_URL, schema=schema)
        self.ownership = PgAdvisoryOwnership(self.store)
        self.engine = Engine(self.store, replica=name, router_factory=routed.make)
        self.engine.claims_by_scheduler = True

    def take(self, rollout_id: int, timeout: float = 20) -> int:
        wait_for(lambda: self.ownership.try_acquire(rollout_id), timeout,
                 f"{self.engine.replica} to get the rollout's lock")
        return self.engine.claim(rollout_id, self.ownership.lease(rollout_id))

    def partition(self) -> None:
        """Kill this replica's database sessions from the server side, as a network partition
        (or a failover) would: its advisory locks are freed at once."""
        assert self.ownership.session_pid
        eng = create_engine(PG_URL)
        with eng.begin() as c:
            c.execute(text("SELECT pg_terminate_backend(:p)"), {"p": self.ownership.session_pid})
        eng.dispose()

    def close(self) -> None:
        self.ownership.close()
        self.store.dispose()


class StallingGate:
    """A real `beforeStep` webhook that answers 200, except the call it is armed for: that
    one waits until released (the replica asking it stalls mid-tick)."""

    def __init__(self, receiver_factory: Callable[..., Receiver]) -> None:
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self.receiver = receiver_factory(statuses=self._status)

    def _status(self, i: int) -> int:
        if self.armed:
            self.armed = False
            self.entered.set()
            self.release.wait(60)
        return 200


def in_thread(fn: Callable[[], TickOutcome]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as e:  # reported by the test
            result.append(e)

    t = threading.Thread(target=run)
    t.start()
    return t, result


def test_stalled_replica_cannot_move_traffic_after_a_takeover(
        routed: RouterSetup, pg_schema: str, receiver_factory: Callable[..., Receiver]) -> None:
    gate = StallingGate(receiver_factory)
    policy = parse_policy(policy_text(routed.router_yaml, gate.receiver.url, routed.namespace))
    a, b = Replica("A", pg_schema, routed), Replica("B", pg_schema, routed)
    try:
        rid = a.store.create_rollout(policy, T0).id
        assert a.take(rid) == 1
        assert a.engine.tick(rid, T0).recorded  # started: 25 %
        assert routed.weight() == 25
        # A reads the rollout and a pending promote, and stalls in the promotion's gate.
        a.store.add_command("fenced", Command.PROMOTE, "ci", T0)
        gate.armed = True
        thread, a_result = in_thread(lambda: a.engine.tick(rid, T0 + timedelta(seconds=5)))
        assert gate.entered.wait(30)
        # A partition: A's sessions die, its lock with them; B takes the rollout over,
        # promotes (the same pending command) and then aborts.
        a.partition()
        assert b.take(rid) == 2
        out = b.engine.tick(rid, T0 + timedelta(seconds=6))
        assert out.recorded and out.transition is not None and out.transition.after.weight == 50
        b.store.add_command("fenced", Command.ABORT, "oncall", T0 + timedelta(seconds=7))
        out = b.engine.tick(rid, T0 + timedelta(seconds=8))
        assert out.recorded and out.phase is Phase.ROLLED_BACK
        assert routed.weight() == 0
        # A resumes: its stale write (50 %) must not land, and it commits nothing.
        gate.release.set()
        thread.join(60)
        (a_out,) = a_result
        assert isinstance(a_out, TickOutcome), a_out
        assert a_out.fenced and not a_out.recorded
        assert a_out.transition is not None and a_out.transition.after.weight == 50
        assert routed.weight() == 0
        token = routed.token()
        assert token is not None and (token.epoch, token.replica) == (2, "B")
        rec = b.store.get(rid)
        assert rec.phase is Phase.ROLLED_BACK and rec.state.weight == 0
        ticks = b.store.ticks(rid)
        assert [(t.seq, t.fence_epoch, t.replica) for t in ticks] == [
            (1, 1, "A"), (2, 2, "B"), (3, 2, "B")]
        # B settles the finished rollout: its router already agrees, nothing to repair.
        assert b.engine.tick(rid, T0 + timedelta(seconds=13)).settled
        assert b.store.get(rid).settled_seq == 3
        assert routed.weight() == 0 and b.store.schedulable() == []
    finally:
        gate.release.set()
        a.close()
        b.close()


def test_a_stall_after_the_lease_check_is_refused_by_the_token(
        pg_schema: str, receiver_factory: Callable[..., Receiver], kube_cluster: KubeCluster,
        kube_namespace: str) -> None:
    """The stall comes right after A's lease check passed (a GC pause between the check and
    the write): the lease cannot help; the token on the VirtualService and its resourceVersion
    refuse A's write."""
    objects = ClusterObjects(kube_cluster, kube_namespace)
    objects.seed(VIRTUAL_SERVICE)
    objects.seed(DESTINATION_RULE)
    api = kube_cluster.api_client()
    router_yaml = ("{provider: istio, virtualService: checkout, destinationRule: checkout, "
                   "stableSubset: stable, canarySubset: canary}")
    gate = StallingGate(receiver_factory)  # never armed here: the stall is in the lease
    policy = parse_policy(policy_text(router_yaml, gate.receiver.url, kube_namespace))
    stalled, resume = threading.Event(), threading.Event()
    thread = threading.Thread(target=lambda: None)
    routed = RouterSetup(router_yaml, kube_namespace, lambda p: build_router(p, api_client=api),
                         lambda: 0, lambda: None, lambda w: None)
    a, b = Replica("A", pg_schema, routed), Replica("B", pg_schema, routed)
    try:
        rid = a.store.create_rollout(policy, T0).id
        a.take(rid)
        assert a.engine.tick(rid, T0).recorded
        holds = a.ownership.lease(rid)
        assert holds is not None

        def lease_then_stall() -> bool:
            ok = holds()
            if ok and not stalled.is_set():
                stalled.set()
                resume.wait(60)
            return ok

        owner = a.engine.ownership(rid)
        assert owner is not None
        a.engine._owned[rid] = type(owner)(owner.epoch, owner.store_id, owner.replica,
                                           lease_then_stall)
        a.store.add_command("fenced", Command.PROMOTE, "ci", T0)
        thread, a_result = in_thread(lambda: a.engine.tick(rid, T0 + timedelta(seconds=5)))
        assert stalled.wait(30)  # A checked its lease (held) and stalls before writing
        a.partition()
        b.take(rid)
        assert b.engine.tick(rid, T0 + timedelta(seconds=6)).transition.after.weight == 50
        b.store.add_command("fenced", Command.ABORT, "oncall", T0)
        assert b.engine.tick(rid, T0 + timedelta(seconds=7)).phase is Phase.ROLLED_BACK
        resume.set()
        thread.join(60)
        (a_out,) = a_result
        assert isinstance(a_out, TickOutcome) and a_out.fenced, a_out
        vs = objects.get(*VS)
        token = token_of(vs)
        assert token is not None and (token.epoch, token.replica) == (2, "B")
        weights = [d.get("weight") for r in vs["spec"]["http"] if r.get("name") == "primary"
                   for d in r["route"]]
        assert weights == [100, 0]
        assert b.store.get(rid).phase is Phase.ROLLED_BACK
    finally:
        resume.set()
        if thread.is_alive():
            thread.join(60)
        a.close()
        b.close()
        api.close()


def test_owner_repairs_a_finished_rollouts_router_and_a_new_owner_settles_it(
        routed: RouterSetup, pg_schema: str, receiver_factory: Callable[..., Receiver]) -> None:
    gate = StallingGate(receiver_factory)
    policy = parse_policy(policy_text(routed.router_yaml, gate.receiver.url, routed.namespace))
    a, b = Replica("A", pg_schema, routed), Replica("B", pg_schema, routed)
    try:
        rid = a.store.create_rollout(policy, T0).id
        a.take(rid)
        a.engine.tick(rid, T0)
        a.store.add_command("fenced", Command.ABORT, "oncall", T0)
        assert a.engine.tick(rid, T0 + timedelta(seconds=5)).phase is Phase.ROLLED_BACK
        # Someone moves the finished rollout's traffic (an unfenced write), and A dies before
        # its next tick: the rollout is finished but not settled, so B takes it over.
        routed.unfenced_write(40)
        a.partition()
        assert [r.id for r in b.store.schedulable()] == [rid]
        b.take(rid)
        out = b.engine.tick(rid, T0 + timedelta(seconds=10))
        assert out.settled and routed.weight() == 0
        token = routed.token()
        assert token is not None and token.replica == "B"
        assert any(e.kind == "reconcile" and "finished rollout" in e.message
                   for e in b.store.events(rid))
        assert b.store.schedulable() == []
    finally:
        a.close()
        b.close()


def test_a_former_owner_cannot_commit_after_a_takeover(pg_store: Store) -> None:
    """The compare-and-set of a commit includes the owner's epoch."""
    policy = parse_policy(policy_text("{provider: dry-run}", "http://127.0.0.1:9/"))
    rec = pg_store.create_rollout(policy, T0)
    first = pg_store.claim(rec.id, "A")
    second = pg_store.claim(rec.id, "B")
    assert second.epoch == first.epoch + 1 and second.store_id == first.store_id
    state = pg_store.get(rec.id).state
    stale = TickRecord(rollout_id=rec.id, seq=1, scheduled_at=T0, state_before=state,
                       state_after=state, action="hold", reason="stale", epoch=first.epoch)
    with pytest.raises(TickConflict, match=r"taken over by B \(fence epoch 2, ours 1\)"):
        pg_store.commit_tick(stale)
    pg_store.commit_tick(TickRecord(rollout_id=rec.id, seq=1, scheduled_at=T0,
                                    state_before=state, state_after=state, action="hold",
                                    reason="owner", epoch=second.epoch))
    assert [t.reason for t in pg_store.ticks(rec.id)] == ["owner"]
