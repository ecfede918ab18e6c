"""The RolloutPolicy controller: `canary run --kubernetes`.

Threads: one list-watch of RolloutPolicies (all namespaces, or `--namespace`), one watch per
owned policy's canaryRef object, the status writer, and the reconcile loop. Watch callbacks only
record what changed and wake the loop; the loop (`reconcile`) does the work for every policy
this replica owns, at once when something changed and every `resync` seconds otherwise (that
pass reads the store, so ticks committed by any replica reach the status and the Events):

- a new or deleted policy: the finalizer is added; a deleted one aborts its active rollout
  (traffic back to stable) and the finalizer is removed once the run has ended;
- an invalid spec: status Invalid with `canary validate`'s words (no rollout starts);
- the command annotation (`kubectl canary promote ...`): queued exactly once for the active run
  (the request id goes into the command's actor and the store refuses it twice), recorded in
  status.lastCommand, then the annotation is removed (a JSON patch guarded by `test`);
- a changed spec: stored in the active run, which applies it from its next step;
- a new version (canaryRef, else spec.target.canary): a rollout of it starts against the stable
  version; during a rollout it restarts the analysis (onNewVersion: restart: the running run is
  aborted, then the new one starts) or waits (queue); a promoted version becomes the stable one;
- status (background writer, rate-limited) and one Event per decision of the decision log.

Ownership: each policy is driven by one replica, the holder of its PostgreSQL advisory lock
(`PgPolicyOwnership`, fair share like the scheduler's rollouts; SQLite: this replica owns all).
The rollouts themselves are ticked by whichever replica's scheduler owns them: the controller
talks to them through the store only. One policy's pass is reconcile.py.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from analyzer.daemon.controller import policies as P
from analyzer.daemon.controller.kube import KubeApi
from analyzer.daemon.controller.reconcile import PolicyWork, Tracked
from analyzer.daemon.controller.versions import read_version
from analyzer.daemon.controller.watch import ListWatch, real_sleep
from analyzer.daemon.controller.writer import StatusWriter
from analyzer.daemon.engine import replica_id, utcnow
from analyzer.daemon.scheduler import LocalOwnership, Ownership, PgAdvisoryOwnership
from analyzer.daemon.store import Store, StoreError, lock_key

log = logging.getLogger("analyzer.daemon.controller")

Obj = dict[str, Any]


class PgPolicyOwnership(PgAdvisoryOwnership):
    """Advisory locks on RolloutPolicies (keys `policy:<namespace>/<name>`), on a session of
    their own with a presence key of their own (so counting controllers is not counting
    schedulers)."""

    def key(self, rollout_id: Any) -> int:
        return lock_key(self.namespace, f"policy:{rollout_id}")

    @property
    def _presence(self) -> int:
        return lock_key(self.namespace, "controllers")


class Controller(PolicyWork):
    """See the module docstring. `scheduler` (optional) has `sync_soon()` and `poke(id)`."""

    def __init__(self, store: Store, api_client: Any, *, namespace: str | None = None,
                 scheduler: Any = None, ownership: Ownership | None = None,
                 replica: str | None = None, status_interval: float = 2.0,
                 resync: float = 1.0, watch_timeout: int = 60,
                 clock: Callable[[], datetime] = utcnow,
                 sleep: Callable[[float, threading.Event], None] = real_sleep) -> None:
        self.store = store
        self.api = KubeApi(api_client)
        self.namespace = namespace
        self.scheduler = scheduler
        if ownership is None:
            ownership = (PgPolicyOwnership(store) if store.dialect == "postgresql"
                         else LocalOwnership())
        self.ownership = ownership
        self.replica = replica or replica_id()
        self.resync = resync
        self.watch_timeout = watch_timeout
        self.clock = clock
        self.sleep = sleep
        self.writer = StatusWriter(self.api, min_interval=status_interval)
        self.objects: dict[str, Obj] = {}
        self.tracked: dict[str, Tracked] = {}
        self.owned: set[str] = set()
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.RLock()  # objects, tracked, owned
        self._loop_thread: threading.Thread | None = None
        self.passes = 0
        self.policy_watch = ListWatch(
            "rolloutpolicies", lambda: self.api.list_policies(namespace),
            lambda rv: self.api.watch_policies(namespace, rv, watch_timeout),
            on_list=self._on_list, on_event=self._on_event, sleep=sleep)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, *, loop: bool = True) -> Controller:
        """Start the watches and the writer; with `loop`, the reconcile loop too (tests call
        `reconcile(now)` themselves on a simulated clock)."""
        self.writer.start()
        self.policy_watch.start()
        if loop:
            self._loop_thread = threading.Thread(target=self._loop, name="controller",
                                                 daemon=True)
            self._loop_thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()
        if self._loop_thread is not None:
            self._loop_thread.join(30)
        self.policy_watch.stop(1)
        with self._lock:
            for t in self.tracked.values():
                if t.ref_watch is not None:
                    t.ref_watch.stop(1)
            for key in list(self.owned):
                self.ownership.release(key)  # type: ignore[arg-type]
            self.owned.clear()
        self.writer.stop()
        self.ownership.close()

    @property
    def running(self) -> bool:
        return not self._stop.is_set() and self.policy_watch.alive

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._dirty.wait(self.resync)
            self._dirty.clear()
            if self._stop.is_set():
                return
            try:
                self.reconcile(self.clock())
            except Exception:
                log.exception("controller pass failed (retried at the next one)")

    # -- watch callbacks (record and wake; no I/O) ----------------------------------------

    def _on_list(self, items: list[Obj]) -> None:
        with self._lock:
            self.objects = {P.key_of(o): o for o in items}
        self._dirty.set()

    def _on_event(self, kind: str, obj: Obj) -> None:
        with self._lock:
            if kind == "DELETED":
                self.objects.pop(P.key_of(obj), None)
            else:
                self.objects[P.key_of(obj)] = obj
        self._dirty.set()

    def _on_ref_list(self, key: str, items: list[Obj]) -> None:
        self._on_ref(key, items[0] if items else None)

    def _on_ref_event(self, key: str, kind: str, obj: Obj) -> None:
        self._on_ref(key, None if kind == "DELETED" else obj)

    def _on_ref(self, key: str, obj: Obj | None) -> None:
        with self._lock:
            t = self.tracked.get(key)
            if t is not None:
                t.ref_object, t.ref_seen = obj, True
        self._dirty.set()

    def seen_version(self, key: str) -> str | None:
        """The canaryRef version the watch delivered for policy `namespace/name` (tests wait
        on it before a pass)."""
        with self._lock:
            t = self.tracked.get(key)
            if t is None or t.ref_object is None:
                return None
            obj = self.objects.get(key)
            policy, _ = P.parse(obj) if obj else (None, None)
            ref = policy.spec.target.canaryRef if policy else None
            return read_version(ref, t.ref_object).version if ref else None

    # -- one pass ------------------------------------------------------------------------

    def reconcile(self, now: datetime) -> None:
        """Ownership, then every owned policy once."""
        self.passes += 1
        if not self.policy_watch.synced.is_set():
            return
        self._sync_ownership()
        with self._lock:
            keys = sorted(self.owned)
        for key in keys:
            try:
                self._reconcile(key, now)
            except StoreError as e:
                log.error("RolloutPolicy %s: store unavailable (retried): %s", key, e)
            except Exception:
                log.exception("RolloutPolicy %s: pass failed (retried)", key)

    def _sync_ownership(self) -> None:
        if not self.ownership.healthy():
            log.error("policy lock connection lost: dropping every RolloutPolicy")
            with self._lock:
                for key in list(self.owned):
                    self._drop(key)
        with self._lock:
            present = set(self.objects)
            for key in [k for k in self.owned if k not in present]:
                self._drop(key)
                self.ownership.release(key)  # type: ignore[arg-type]
            share = math.ceil(len(present) / self.ownership.live_replicas()) if present else 0
            if len(self.owned) > share:
                key = max(self.owned)
                log.info("handing RolloutPolicy %s to another replica (share %d)", key, share)
                self._drop(key)
                self.ownership.release(key)  # type: ignore[arg-type]
            candidates = [k for k in present if k not in self.owned]
            random.shuffle(candidates)
            for key in candidates:
                if len(self.owned) >= share:
                    break
                if self.ownership.try_acquire(key):  # type: ignore[arg-type]
                    self.owned.add(key)
                    self.tracked[key] = Tracked()
                    log.info("owning RolloutPolicy %s", key)

    def _drop(self, key: str) -> None:
        t = self.tracked.pop(key, None)
        if t is not None and t.ref_watch is not None:
            t.ref_watch.stop(0)
        self.owned.discard(key)
        ns, _, name = key.partition("/")
        self.writer.forget(ns, name)
