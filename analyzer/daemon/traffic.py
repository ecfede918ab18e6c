"""Moving traffic for the engine: fenced router writes, the claim write that raises the fence,
reconciliation, putting traffic back, and settling finished rollouts.

Owns how a tick's traffic reaches a router (analyzer/daemon/engine.py decides what and when;
`TrafficMoves` is the part of the Engine that does it):
- `Ownership`: a replica's claim on a rollout (the store's epoch and identity) and its lease
  (the PostgreSQL advisory lock, or the store's epoch where there is no lock);
- `arm(router, owner, tick)`: the `Fence` every write of the router carries until the next
  arm: the token (store, epoch, tick whose traffic is written, replica) and the lease check
  (analyzer/routers/fence.py). Routers without fencing (dry-run: in memory) are left alone;
- `claim_write(router, desired)`: the first write of an owner, and every reconciliation: the
  weight is written whatever the router holds (so the object carries this owner's token from
  now on and no former owner's write can land after it), then the router is read again and
  the rest (A/B route, mirror) fixed where it differs;
- `apply(router, current, desired)`: only what differs (a router may not support mirroring or
  header routes at all);
- `TrafficMoves`: a tick's traffic (reset first on rollback; the claim write when the router
  must be made to agree; router errors become holds), the put-back after a lost commit, the
  undo after a failed one, and settling a finished rollout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from analyzer.core.rollout import STABLE_ONLY, Phase, RolloutMachine, Traffic, Transition
from analyzer.daemon.metrics import EngineMetrics
from analyzer.daemon.store import Store, StoreError, TickView
from analyzer.policy import Policy
from analyzer.routers.base import Router, RouterError, TrafficSplit
from analyzer.routers.fence import Fence, Fenced, FenceToken

log = logging.getLogger("analyzer.daemon.engine")


@dataclass(frozen=True)
class Ownership:
    """This replica's claim on one rollout: the store's epoch for it, and its lease."""

    epoch: int
    store_id: str
    replica: str
    lease: Callable[[], bool]


def fenceable(router: Router) -> bool:
    return hasattr(router, "fence")


def arm(router: Router, owner: Ownership, tick: int) -> None:
    """Every following write of `router` checks `owner`'s lease and carries its token, naming
    `tick` as the committed (or about to be committed) tick whose traffic it writes."""
    if fenceable(router):
        token = FenceToken(owner.store_id, owner.epoch, tick, owner.replica)
        router.fence = Fence(token, owner.lease)  # type: ignore[attr-defined]


def from_split(split: TrafficSplit) -> Traffic:
    return Traffic(weight=int(split.canary_weight), header_route=split.header_route,
                   mirror_percent=split.mirror_percent)


def apply(router: Router, current: Traffic, desired: Traffic) -> None:
    """Write only what differs between `current` and `desired`."""
    if desired == STABLE_ONLY and current != STABLE_ONLY:
        router.reset()
        return
    if desired.weight != current.weight:
        router.set_weight(desired.weight)
    if desired.header_route != current.header_route:
        router.set_header_route(desired.header_route)
    if desired.mirror_percent != current.mirror_percent:
        router.set_mirror(desired.mirror_percent)


def claim_write(router: Router, desired: Traffic) -> Traffic:
    """Make the router hold `desired` with this owner's token on it; returns what it held.

    On a fenced router the weight is written even when the router already holds it: the write
    raises the fence. The router is then read again: a former owner may have written between
    the first read and our write, but not after it. A router without fencing (in memory) gets
    only what differs."""
    held = from_split(router.get_weight())
    if not fenceable(router):
        apply(router, held, desired)
        return held
    router.set_weight(desired.weight)
    apply(router, from_split(router.get_weight()), desired)
    return held


class RolloutRuntime(Protocol):
    """What the engine keeps per rollout that moving its traffic uses."""

    policy: Policy
    machine: RolloutMachine
    router: Router | None
    router_error: str | None
    needs_reconcile: bool
    store_failed: bool


class TrafficMoves:
    """The Engine's traffic side (mixed into `Engine`, which provides the store and metrics)."""

    store: Store
    metrics: EngineMetrics

    def _move_traffic(self, rt: RolloutRuntime, owner: Ownership, view: TickView, t: Transition,
                      now: datetime) -> tuple[Transition, Traffic | None]:
        """Apply the transition's traffic (reset first on rollback), fenced. On the first tick
        under a claim, and after a router error or a conflict, write the whole traffic whatever
        the router holds (`traffic.claim_write`: a reconciliation that raises the fence).

        Returns the (possibly router-failed) transition and, when a reconciliation changed
        the router, the traffic the router had before. Raises `Fenced` when this replica may
        not write (nothing was written)."""
        before = t.before.traffic
        reconciled_from: Traffic | None = None
        for _attempt in range(2):
            desired = t.after.traffic
            moves = t.reset or desired != before
            try:
                router = self._router(rt)
                # The token names the tick whose traffic is written: this one when it moves
                # traffic, else the committed one.
                arm(router, owner, view.tick_seq + 1 if moves else view.tick_seq)
                if t.reset:
                    # A rollback resets before anything else, whatever we believe is applied.
                    router.reset()
                    rt.needs_reconcile = False
                    return t, None
                if rt.needs_reconcile:
                    held = claim_write(router, desired)
                    if held != before:
                        reconciled_from = held
                    rt.needs_reconcile = False
                elif moves:
                    apply(router, before, desired)
                return t, reconciled_from
            except Fenced:
                rt.needs_reconcile = True
                raise
            except RouterError as e:
                self.metrics.router_errors.labels(rollout=rt.policy.name).inc()
                log.warning("%s: router error: %s", rt.policy.name, e)
                rt.needs_reconcile = True  # we no longer know what the router holds
                failed = rt.machine.router_failed(t, now, str(e))
                if failed.reset and not t.reset:
                    t = failed  # too many refusals: now a rollback, which resets first
                    continue
                return failed, None
        return t, None

    def _note_fenced(self, rt: RolloutRuntime, e: Fenced, what: str) -> None:
        """This replica may not move the rollout's traffic (its lease is gone, or a later
        owner's token is on the router): say so; the caller commits nothing."""
        self.metrics.fenced.labels(rollout=rt.policy.name).inc()
        log.warning("%s: %s dropped, this replica does not own the rollout: %s",
                    rt.policy.name, what, e)

    def _restore_committed(self, rt: RolloutRuntime, owner: Ownership, rollout_id: int) -> None:
        """The commit lost (another replica committed this tick, or took the rollout over):
        put the router back to the COMMITTED state's traffic. Fenced like every write: a former
        owner's put-back needs the lease, and is refused once the new owner has written."""
        rt.needs_reconcile = True
        try:
            view = self.store.tick_view(rollout_id)
            router = self._router(rt)
            arm(router, owner, view.tick_seq)
            held = from_split(router.get_weight())
            if held != view.state.traffic:
                apply(router, held, view.state.traffic)
                log.info("%s: router put back to the committed weight %d (tick %d)",
                         rt.policy.name, view.state.traffic.weight, view.tick_seq)
        except Fenced as e:
            self.metrics.fenced.labels(rollout=rt.policy.name).inc()
            log.info("%s: router left to its owner: %s", rt.policy.name, e)
        except (RouterError, StoreError) as e:
            log.warning("%s: could not put the router back to the committed state: %s",
                        rt.policy.name, e)

    def _undo_traffic(self, rt: RolloutRuntime, owner: Ownership, view: TickView,
                      t: Transition) -> None:
        """The commit failed: nothing of this tick is recorded, so put the router back to the
        committed traffic (store and router agree while the store is down). A rollback stays
        applied: all traffic on stable is always safe, and the next tick decides again."""
        rt.needs_reconcile = True  # the commit may have landed after all: check next tick
        rt.store_failed = True
        committed = view.state.traffic
        if t.reset or t.after.traffic == committed:
            return
        try:
            router = self._router(rt)
            arm(router, owner, view.tick_seq)
            apply(router, t.after.traffic, committed)
        except RouterError as e:
            log.warning("%s: could not undo the weight change of an unrecorded tick: %s",
                        rt.policy.name, e)

    def _settle(self, rt: RolloutRuntime, owner: Ownership, view: TickView,
                now: datetime) -> bool:
        """A finished rollout this replica owns: make the router hold its final traffic under
        this owner's token (a former owner's late write is repaired, and none can land after
        it), then record the rollout settled (True). A failed rollout (its rollback was
        refused: what the traffic should be is for a human to decide) is recorded settled
        without a write. False: not settled yet (a router error; the next tick tries again).
        Raises `Fenced` when this replica may not write."""
        if view.state.phase is not Phase.FAILED:
            final = view.state.traffic
            try:
                router = self._router(rt)
                arm(router, owner, view.tick_seq)
                held = claim_write(router, final)
            except Fenced:
                raise
            except RouterError as e:
                self.metrics.router_errors.labels(rollout=rt.policy.name).inc()
                log.warning("%s: finished; its router not checked yet: %s", rt.policy.name, e)
                return False
            if held != final:
                self._record_reconcile(view.id, held, final, now, finished=True)
        return self.store.settle(view.id, view.tick_seq, owner.epoch)

    def _router(self, rt: RolloutRuntime) -> Router:
        if rt.router is None:
            raise RouterError(rt.router_error or "no router")
        return rt.router

    def _record_reconcile(self, rollout_id: int, was: Traffic, now_traffic: Traffic,
                          now: datetime, *, finished: bool = False) -> None:
        msg = (f"router held weight {was.weight} (header {was.header_route}, mirror "
               f"{was.mirror_percent}); re-applied the committed weight {now_traffic.weight}"
               + (" of the finished rollout" if finished else ""))
        log.info("rollout %s: %s", rollout_id, msg)
        self.store.record_reconcile(rollout_id, was.weight, now_traffic.to_json(), now, msg)


__all__ = ["Ownership", "RolloutRuntime", "TrafficMoves", "apply", "arm", "claim_write",
           "fenceable", "from_split"]

