"""Runs the engine: APScheduler jobs per active rollout, and who owns which rollout.

Owns the daemon's timing and ownership:
- one APScheduler 3 `BackgroundScheduler` job per rollout this replica owns, at the policy's
  `analysis.interval`, with `coalesce=True` (missed runs collapse into one) and
  `max_instances=1` (a rollout's ticks never overlap); the store's tick sequence number
  guards against double application anyway;
- a `sync` job (every `sync_interval` seconds, its own single-thread executor so slow ticks
  cannot starve it) that creates rollouts for the `--policies` files, takes ownership of
  unowned active rollouts (and of finished ones whose router has not been settled yet), drops
  jobs of finished and settled ones and checks the lock connection;
- graceful shutdown: `shutdown()` stops new runs, waits for ticks in flight, then frees the
  rollouts.

Ownership (DESIGN.md "State, scheduling, scale"):
- SQLite: one replica; it owns everything (`LocalOwnership`).
- PostgreSQL: one session-level advisory lock per rollout (`pg_try_advisory_lock`), all held
  on ONE dedicated connection of this replica (`PgAdvisoryOwnership`). When the replica dies
  its session ends and PostgreSQL frees the locks; the other replicas' next sync acquires them
  and ticks on, first reconciling the router with the stored weight. If the lock connection
  breaks, this replica drops every job at once (it may no longer own anything) and
  reconnects.
- Fencing: taking a rollout over claims the store's next fencing epoch for it
  (`Engine.claim`); the lease a router write checks right before it is written is the
  advisory lock itself, asked on the lock connection (`PgAdvisoryOwnership.holds`), so a
  replica whose connection was killed (a partition) stops writing at once, not at its next
  sync; on SQLite the store's epoch (analyzer/routers/fence.py, docs/engine.md).
- Fair share: every replica also holds a shared "presence" advisory lock, so counting its
  holders in `pg_locks` gives the number of live replicas n. A replica owns at most
  ceil(active / n) rollouts: below that it takes free ones (in random order), above it hands
  the idle ones above its share back in one sync pass. Replicas that start together or one
  after the other end up sharing; when one dies, n drops at once and the survivors take its
  rollouts over at their next sync pass. A rollout taken over keeps its cadence: its first
  tick under the new owner is due one interval after its last one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, Protocol

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from analyzer.daemon.engine import Engine, utcnow
from analyzer.daemon.store import Store, StoreError, lock_key
from analyzer.daemon.store.store import application_name
from analyzer.policy import Policy

log = logging.getLogger("analyzer.daemon.scheduler")


class Ownership(Protocol):
    def live_replicas(self) -> int: ...
    def try_acquire(self, rollout_id: int) -> bool: ...
    def release(self, rollout_id: int) -> None: ...
    def healthy(self) -> bool: ...
    def close(self) -> None: ...

    def lease(self, rollout_id: int) -> Callable[[], bool] | None:
        """What a router write asks right before it is written (None: the store's epoch)."""


class LocalOwnership:
    """SQLite mode: a single replica owns every rollout."""

    def live_replicas(self) -> int:
        return 1

    def try_acquire(self, rollout_id: int) -> bool:
        return True

    def release(self, rollout_id: int) -> None:
        pass

    def healthy(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def lease(self, rollout_id: int) -> Callable[[], bool] | None:
        return None  # no lock: the store's fence epoch is the lease


class PgAdvisoryOwnership:
    """Session-level advisory locks on one dedicated PostgreSQL connection.

    Thread-safe: the sync job takes and frees locks, tick threads ask `holds` right before a
    router write; one mutex serializes them on the connection.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.namespace = store.lock_namespace
        # NullPool: this connection is ours alone and dies with the process (freeing locks).
        self._engine = create_engine(
            store.url, poolclass=NullPool,
            connect_args={"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 10,
                          "keepalives_interval": 5, "keepalives_count": 3,
                          "application_name": application_name("canary-analyzer-locks")},
        )
        self._conn: Connection | None = None
        self._mutex = threading.RLock()
        self.held: set[int] = set()
        self._lost = False  # the session died with locks held: `healthy` must say so once
        self.session_pid: int | None = None  # the lock session's backend (pg_stat_activity)

    def _connection(self) -> Connection:
        if self._conn is None:
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            # Presence: every live replica holds this key in shared mode on its lock session,
            # so counting its holders counts the live replicas (dead sessions drop out).
            conn.execute(text("SELECT pg_advisory_lock_shared(:k)"), {"k": self._presence})
            self.session_pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar() or 0)
            log.info("lock session: PostgreSQL backend pid %d", self.session_pid)
            self._conn = conn
        return self._conn

    @property
    def _presence(self) -> int:
        return lock_key(self.namespace, "replicas")

    def live_replicas(self) -> int:
        k = self._presence
        with self._mutex:
            n = self._connection().execute(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = "
                "current_database()) AND classid = CAST(:hi AS oid) "
                "AND objid = CAST(:lo AS oid) AND objsubid = 1"),
                {"hi": (k >> 32) & 0xFFFFFFFF, "lo": k & 0xFFFFFFFF}).scalar()
        return max(1, int(n or 0))

    def try_acquire(self, rollout_id: int) -> bool:
        with self._mutex:
            if rollout_id in self.held:
                return True  # session locks stack: never take one twice
            got = bool(self._connection().execute(
                text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key(rollout_id)}).scalar())
            if got:
                self.held.add(rollout_id)
            return got

    def release(self, rollout_id: int) -> None:
        with self._mutex:
            if rollout_id not in self.held:
                return
            self.held.discard(rollout_id)
            try:
                self._connection().execute(text("SELECT pg_advisory_unlock(:k)"),
                                           {"k": self.key(rollout_id)})
            except SQLAlchemyError:
                self._drop()

    def healthy(self) -> bool:
        with self._mutex:
            if self._lost:  # a tick's `holds` found the session dead
                self._lost = False
                return False
            if self._conn is None:
                return not self.held
            try:
                self._conn.execute(text("SELECT 1"))
                return True
            except SQLAlchemyError:
                self._drop()
                self._lost = False  # said here and now
                return False

    def holds(self, rollout_id: int) -> bool:
        """True when this session holds the rollout's advisory lock now: asked of PostgreSQL
        on the lock connection itself (a killed connection, as in a partition, answers no).
        Never reconnects: a new session would hold nothing."""
        k = self.key(rollout_id)
        with self._mutex:
            if self._conn is None or rollout_id not in self.held:
                return False
            try:
                n = self._conn.execute(text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND pid = pg_backend_pid() AND classid = CAST(:hi AS oid) "
                    "AND objid = CAST(:lo AS oid) AND objsubid = 1"),
                    {"hi": (k >> 32) & 0xFFFFFFFF, "lo": k & 0xFFFFFFFF}).scalar()
            except SQLAlchemyError:
                self._drop()
                return False
        return bool(n)

    def lease(self, rollout_id: int) -> Callable[[], bool] | None:
        return lambda: self.holds(rollout_id)

    def key(self, rollout_id: int) -> int:
        return lock_key(self.namespace, rollout_id)

    def _drop(self) -> None:
        # The session is gone and with it every lock: we own nothing any more.
        self._lost = self._lost or bool(self.held)
        self.held.clear()
        if self._conn is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._conn.close()
        self._conn = None

    def close(self) -> None:
        with self._mutex:
            self._drop()
        self._engine.dispose()


class Scheduler:
    """The daemon's clockwork around an `Engine`."""

    def __init__(self, engine: Engine, *, policies: Iterable[Policy] = (),
                 sync_interval: float = 5.0, max_workers: int = 8,
                 ownership: Ownership | None = None) -> None:
        self.engine = engine
        engine.claims_by_scheduler = True  # ticks only what this scheduler claimed
        self.store = engine.store
        self.policies = list(policies)
        self.sync_interval = sync_interval
        if ownership is None:
            ownership = (PgAdvisoryOwnership(self.store) if self.store.dialect == "postgresql"
                         else LocalOwnership())
        self.ownership = ownership
        self.owned: dict[int, str] = {}  # rollout id -> name
        self._owned_lock = threading.Lock()
        self._sched = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers),
                       "sync": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone="UTC",
        )
        self._in_flight: set[int] = set()
        self._jobs_running = 0  # sync and tick jobs executing now (shutdown waits for them)
        self._idle = threading.Condition()
        self._started = False
        self._stopping = threading.Event()
        self.last_sync_ok: bool = False

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        for policy in self.policies:
            try:
                if self.store.ensure_rollout(policy, utcnow()) is not None:
                    log.info("rollout %s created from its policy file", policy.name)
            except StoreError as e:
                log.error("cannot create rollout %s: %s", policy.name, e)
        self.sync()
        self._sched.add_job(self.sync, IntervalTrigger(seconds=self.sync_interval),
                            id="sync", executor="sync", coalesce=True, max_instances=1,
                            misfire_grace_time=None)
        self._sched.start()
        self._started = True

    @property
    def running(self) -> bool:
        return self._started and self._sched.running and not self._stopping.is_set()

    def shutdown(self, wait: bool = True) -> None:
        """Stop scheduling; with `wait`, let every tick in flight finish; free the rollouts."""
        self._stopping.set()
        if self._started:
            # APScheduler 3 joins its worker threads while holding its job-store lock; a job
            # that touches the job store at that moment (sync releasing a finished rollout)
            # would deadlock it. So stop it without joining, and wait for our own jobs.
            self._sched.shutdown(wait=False)
            if wait:
                with self._idle:
                    self._idle.wait_for(lambda: self._jobs_running == 0, timeout=120)
        with self._owned_lock:
            for rid in list(self.owned):
                self.ownership.release(rid)
            self.owned.clear()
        self.ownership.close()
        self.engine.metrics.active.set(0)

    # -- ownership and jobs ----------------------------------------------------------------

    @contextlib.contextmanager
    def _job(self) -> Iterator[None]:
        with self._idle:
            self._jobs_running += 1
        try:
            yield
        finally:
            with self._idle:
                self._jobs_running -= 1
                self._idle.notify_all()

    def sync(self) -> None:
        """Take over unowned active rollouts, drop finished ones, check our locks."""
        with self._job():
            self._sync()

    def _sync(self) -> None:
        if self._stopping.is_set():
            return
        try:
            if not self.ownership.healthy():
                log.error("lock connection lost: dropping every rollout of this replica")
                self._drop_all()
            # Active rollouts, and finished ones whose router was not settled yet (their
            # owner makes the router agree with the final state once more, then lets go).
            wanted = {r.id: r for r in self.store.schedulable()}
            # Fair share: each live replica owns at most ceil(wanted / replicas); a replica
            # above it hands the rollouts above it back (so a replica that started alone
            # shares once others join), below it takes free ones. When a replica dies the
            # count drops at once and the survivors' share covers its rollouts.
            share = math.ceil(len(wanted) / self.ownership.live_replicas())
            with self._owned_lock:
                for rid in [r for r in self.owned if r not in wanted]:
                    self._release(rid)
                if len(self.owned) > share:
                    # everything above the share at once (one per pass took a replica that
                    # started first hours to share 15,000 rollouts)
                    idle = sorted(r for r in self.owned if r not in self._in_flight)
                    excess = idle[-(len(self.owned) - share):]
                    log.info("handing %d rollout(s) to other replicas (share %d)",
                             len(excess), share)
                    for rid in excess:
                        self._release(rid)
                candidates = [rid for rid in wanted if rid not in self.owned]
                random.shuffle(candidates)
                for rid in candidates:
                    if len(self.owned) >= share or self._stopping.is_set():
                        break
                    if self.ownership.try_acquire(rid):
                        self._take(rid)
                self.engine.metrics.active.set(len(self.owned))
            self.last_sync_ok = True
        except (StoreError, SQLAlchemyError) as e:
            self.last_sync_ok = False
            log.error("sync failed: %s", e)
        except Exception:
            self.last_sync_ok = False
            log.exception("sync failed")

    def _take(self, rollout_id: int) -> None:
        """We hold the rollout's lock: claim its next fencing epoch, then schedule it."""
        try:
            rec = self.store.get(rollout_id)
            self.engine.claim(rollout_id, self.ownership.lease(rollout_id))
        except StoreError:
            self.ownership.release(rollout_id)
            raise
        self.owned[rollout_id] = rec.name
        policy = rec.load_policy()
        # Keep the rollout's cadence across owners: its next tick is due one interval after
        # the last one (now for a new or finished one). The claim already fences the former
        # owner out: it can neither write nor commit until then.
        due = (rec.updated_at + policy.spec.analysis.interval if rec.tick_seq and rec.active
               else None)
        self._schedule(rollout_id, policy, first=due)
        log.info("owning rollout %s (#%d, %s, step %d)", rec.name, rollout_id, rec.phase,
                 rec.state.step)

    def _release(self, rollout_id: int) -> None:
        self._unschedule(rollout_id)
        self.ownership.release(rollout_id)
        self.engine.forget(rollout_id)
        self.owned.pop(rollout_id, None)

    def _drop_all(self) -> None:
        with self._owned_lock:
            for rid in list(self.owned):
                self._unschedule(rid)
                self.engine.forget(rid)
            self.owned.clear()

    def _schedule(self, rollout_id: int, policy: Policy, first: datetime | None = None) -> None:
        seconds = policy.spec.analysis.interval.total_seconds()
        now = _now_local()
        self._sched.add_job(
            self._run_tick, IntervalTrigger(seconds=seconds), args=(rollout_id,),
            id=_job_id(rollout_id), replace_existing=True, coalesce=True, max_instances=1,
            misfire_grace_time=max(1, int(seconds)),
            next_run_time=max(now, first) if first is not None else now,
        )

    def _unschedule(self, rollout_id: int) -> None:
        with contextlib.suppress(JobLookupError):
            self._sched.remove_job(_job_id(rollout_id))

    def sync_soon(self) -> None:
        """Run the sync job now rather than at its next interval (the controller created a
        rollout: its first tick should not wait for `sync_interval`)."""
        if not self.running:
            return
        with contextlib.suppress(JobLookupError):
            self._sched.modify_job("sync", next_run_time=_now_local())

    def poke(self, rollout_id: int) -> bool:
        """Run the rollout's next tick now (after a manual command); False if not ours."""
        with self._owned_lock:
            if rollout_id not in self.owned:
                return False
        try:
            self._sched.modify_job(_job_id(rollout_id), next_run_time=_now_local())
            return True
        except JobLookupError:
            return False

    def _run_tick(self, rollout_id: int) -> None:
        with self._job():
            self._tick(rollout_id)

    def _tick(self, rollout_id: int) -> None:
        if self._stopping.is_set():
            return
        self._in_flight.add(rollout_id)
        try:
            out = self.engine.tick(rollout_id)
            if out.phase is not None and out.phase.terminal:
                log.info("rollout #%d finished: %s", rollout_id, out.phase)
        except StoreError as e:
            # An outage of the database, not a bug: one line per tick, no traceback.
            log.error("tick of rollout #%d not recorded (retried at the next interval): %s",
                      rollout_id, e)
        except Exception:
            # Logged and retried at the next interval; nothing was committed.
            log.exception("tick of rollout #%d failed", rollout_id)
        finally:
            self._in_flight.discard(rollout_id)


def _job_id(rollout_id: int) -> str:
    return f"rollout-{rollout_id}"


def _now_local() -> datetime:
    return utcnow()


def describe_owned(s: Scheduler) -> list[dict[str, Any]]:
    return [{"id": rid, "name": name} for rid, name in sorted(s.owned.items())]


__all__ = ["LocalOwnership", "PgAdvisoryOwnership", "Scheduler"]
