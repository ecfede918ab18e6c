"""The decision log and rollout state: one SQL store (SQLAlchemy 2), SQLite or PostgreSQL.

Owns the schema, its version and migrations, and every read and write of rollouts, ticks,
weight changes, events and manual commands.

The tables are in tables.py, the records it returns in records.py.

The tables are in tables.py, the records it returns in records.py, and the tick's own reads
and writes (one read transaction, the fenced commit, claims and settling) in tickpath.py.

Crash consistency: a tick is committed in ONE transaction that advances `rollouts.tick_seq`
from n to n+1 with a compare-and-set (`WHERE tick_seq = n AND fence_epoch = e`) and inserts
tick n+1; a second attempt at the same tick (a restarted or competing replica) fails the
compare-and-set and the unique constraint, so a tick is never applied twice, and a replica
that lost the run to another (a newer epoch) cannot commit at all.

SQLite (default, a file) runs in WAL mode; write transactions take the write lock up front
(`BEGIN IMMEDIATE`) so the CLI and the daemon can write the same file, reads do not (a
deferred `BEGIN`). PostgreSQL is for several replicas.
"""

from __future__ import annotations

import os
import socket
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Engine,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from analyzer.core.rollout import Command, Phase, RolloutState
from analyzer.daemon.store.codec import dumps, loads
from analyzer.daemon.store.errors import (
    InvalidCommand,
    NotFound,
    RolloutExists,
    StoreError,
    StoreUnavailable,
)
from analyzer.daemon.store.records import (
    CommandRecord,
    EventRow,
    LastDecision,
    RolloutRecord,
    TickRow,
    WeightChange,
    rollout_from_row,
    tick_from_row,
)
from analyzer.daemon.store.tables import (
    MIGRATIONS,
    SCHEMA_VERSION,
    commands,
    events,
    init_fencing,
    metadata,
    rollouts,
    schema_version,
    ticks,
    weight_changes,
)
from analyzer.daemon.store.tickpath import TickPath
from analyzer.daemon.store.urls import normalize_url, redact_url, resolve_url, sqlite_file
from analyzer.policy import Policy
from analyzer.util.times import as_utc

# --------------------------------------------------------------------------- the store


#: Read transactions carry this execution option: on SQLite they begin without the write lock.
READ_ONLY = "canary_read_only"


def application_name(role: str = "canary-analyzer") -> str:
    """What PostgreSQL shows for this process's connections (pg_stat_activity): the role and
    host:pid, so an operator (or the chaos test) can tell replicas apart."""
    return f"{role} {socket.gethostname()}:{os.getpid()}"[:63]


class Store(TickPath):
    """The engine's database. Thread-safe (one SQLAlchemy Engine with a pool)."""

    def __init__(self, url: str | None = None, *, schema: str | None = None,
                 migrate: bool = True) -> None:
        self.url = normalize_url(resolve_url(url))
        self.url_redacted = redact_url(self.url)
        schema = schema or os.environ.get("CANARY_DB_SCHEMA") or None
        try:
            parsed = make_url(self.url)
        except Exception:
            raise StoreError(
                f"database URL {self.url_redacted!r} is not a valid SQLAlchemy URL "
                "(expected sqlite:///path/to/file.db or postgresql://user@host/db)"
            ) from None
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise StoreError(f"database {self.url_redacted}: only sqlite and postgresql "
                             "are supported")
        self.schema = schema if self.dialect == "postgresql" else None
        kwargs: dict[str, Any] = {"future": True}
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            if parsed.database in (None, "", ":memory:"):
                # One shared connection, or every pooled connection sees its own empty DB.
                kwargs["poolclass"] = StaticPool
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["connect_args"] = {"connect_timeout": 10,
                                      "application_name": application_name()}
        engine = create_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            _sqlite_setup(engine)
        if self.schema:
            engine = engine.execution_options(schema_translate_map={None: self.schema})
        self.engine: Engine = engine
        if migrate:
            self.migrate()

    @classmethod
    def open_existing(cls, url: str | None) -> Store:
        """A store that must exist already (what the read-only commands open): a missing SQLite
        file is an error naming it, not a new empty store."""
        url = resolve_url(url)
        try:
            path = sqlite_file(url)
        except ValueError as e:
            raise StoreError(str(e)) from None
        if path is not None and not path.is_file():
            raise StoreError(f"database file {path} not found ({url}); give the store the "
                             "engine wrote, e.g. --db sqlite:///canary.db")
        return cls(url)

    # -- schema --------------------------------------------------------------------------

    @property
    def lock_namespace(self) -> str:
        """Distinguishes advisory-lock keys of stores sharing one PostgreSQL database."""
        return self.schema or "public"

    def migrate(self) -> int:
        """Create or upgrade the schema; return the version. Safe to run from many replicas."""
        try:
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    # Serialize concurrent migrations of replicas starting together.
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                                 {"k": lock_key(self.lock_namespace, "schema")})
                    if self.schema:
                        conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
                metadata.create_all(conn, tables=[schema_version])
                row = conn.execute(select(schema_version.c.version)).first()
                if row is None:
                    metadata.create_all(conn)
                    init_fencing(conn)
                    conn.execute(insert(schema_version).values(
                        id=1, version=SCHEMA_VERSION, applied_at=datetime.now(UTC)))
                    return SCHEMA_VERSION
                version = int(row[0])
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"database {self.url_redacted} has schema version {version}, newer "
                        f"than this canary-analyzer understands ({SCHEMA_VERSION}): upgrade it"
                    )
                while version < SCHEMA_VERSION:
                    MIGRATIONS[version + 1](conn)
                    version += 1
                    conn.execute(update(schema_version).values(
                        version=version, applied_at=datetime.now(UTC)))
                return version
        except IntegrityError:
            # Another SQLite process created the schema at the same moment: it is there now.
            return SCHEMA_VERSION
        except OperationalError as e:
            raise StoreUnavailable(f"cannot use database {self.url_redacted}: "
                                   f"{_short(e)}") from None

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    def check_writable(self, rollout_id: int) -> None:
        """StoreUnavailable unless a write transaction commits (it touches the rollout's
        `updated_at`; SQLite skips writes that change nothing): the engine asks before moving
        traffic again after a failed commit."""
        with self._tx() as conn:
            conn.execute(update(rollouts).where(rollouts.c.id == rollout_id)
                         .values(updated_at=datetime.now(UTC)))

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as e:
            raise StoreUnavailable(f"database {self.url_redacted}: {_short(e)}") from None

    @contextmanager
    def _read_tx(self, *, single: bool = False) -> Iterator[Connection]:
        """A transaction that only reads (on SQLite: no write lock, so readers never queue
        behind each other or block the CLI). `single`: the caller runs one statement, which is
        consistent on its own: on PostgreSQL it runs without BEGIN and COMMIT (one round trip
        instead of three)."""
        try:
            with self.engine.connect() as conn:
                if single and self.dialect == "postgresql":
                    conn.execution_options(isolation_level="AUTOCOMMIT")
                else:
                    conn.execution_options(**{READ_ONLY: True})
                with conn.begin():
                    yield conn
        except OperationalError as e:
            raise StoreUnavailable(f"database {self.url_redacted}: {_short(e)}") from None

    # -- rollouts ------------------------------------------------------------------------

    def create_rollout(self, policy: Policy, now: datetime, *,
                       canary_version: str | None = None) -> RolloutRecord:
        """A new pending run of `policy`. Raises RolloutExists when one is active; starting
        the same canary version again returns the active run (CD pipelines retry)."""
        if canary_version:
            policy = policy.with_canary_version(canary_version)
        if not policy.versions_known:
            raise InvalidCommand(
                f"policy {policy.name}: target.stable and target.canary must both be known to "
                "start a rollout (a canaryRef policy gets them from `canary run --kubernetes`; "
                "by hand: give both, or --canary-version)")
        for _ in range(5):
            try:
                with self._tx() as conn:
                    latest = conn.execute(
                        select(rollouts).where(rollouts.c.name == policy.name)
                        .order_by(rollouts.c.generation.desc()).limit(1)
                    ).first()
                    promoted = conn.execute(
                        select(rollouts.c.stable_version, rollouts.c.canary_version)
                        .where(rollouts.c.name == policy.name,
                               rollouts.c.phase == Phase.SUCCEEDED.value)
                        .order_by(rollouts.c.generation.desc()).limit(1)
                    ).first()
                    policy = _stable_after_promotion(policy, promoted)
                    target = policy.spec.target
                    if latest is not None and not Phase(latest.phase).terminal:
                        rec = rollout_from_row(latest)
                        if rec.canary_version == target.canary:
                            return rec
                        raise RolloutExists(
                            f"rollout {policy.name} is already {latest.phase} with canary "
                            f"{latest.canary_version} (step {latest.step}, weight "
                            f"{latest.weight}%); abort it first: canary abort {policy.name}"
                        )
                    gen = (latest.generation + 1) if latest is not None else 1
                    return self._insert_rollout(conn, policy, gen, now)
            except IntegrityError:
                continue  # a concurrent start took this generation; look again
        raise InvalidCommand(f"could not create rollout {policy.name}: concurrent starts")

    def update_policy(self, rollout_id: int, policy: Policy) -> None:
        """Replace an active run's policy snapshot (a RolloutPolicy's spec changed); the engine
        adopts it from the run's next step (Engine.tick). Versions stay the run's."""
        with self._tx() as conn:
            conn.execute(update(rollouts).where(rollouts.c.id == rollout_id)
                         .values(policy=dumps(policy.model_dump(mode="json")),
                                 policy_rev=rollouts.c.policy_rev + 1))

    def ensure_rollout(self, policy: Policy, now: datetime) -> RolloutRecord | None:
        """Create generation 1 of `policy` unless any run of it exists (what `canary run
        --policies DIR` does for each file). Race-free across replicas."""
        if not policy.versions_known:
            raise InvalidCommand(
                f"policy {policy.name}: a canaryRef policy without target.stable and "
                "target.canary runs as a RolloutPolicy object (canary run --kubernetes), not "
                "from a policy directory")
        try:
            with self._tx() as conn:
                exists = conn.execute(
                    select(rollouts.c.id).where(rollouts.c.name == policy.name).limit(1)
                ).first()
                if exists is not None:
                    return None
                return self._insert_rollout(conn, policy, 1, now)
        except IntegrityError:
            return None

    def _insert_rollout(self, conn: Connection, policy: Policy, generation: int,
                        now: datetime) -> RolloutRecord:
        state = RolloutState(reason="waiting for the first tick")
        target = policy.spec.target
        res = conn.execute(insert(rollouts).values(
            name=policy.name, generation=generation, canary_version=target.canary,
            stable_version=target.stable, policy=dumps(policy.model_dump(mode="json")),
            phase=str(state.phase), step=state.step, weight=state.weight,
            state=dumps(state.to_json()), judge_state=None, tick_seq=0, last_t1=None,
            reason=state.reason, owner=None, created_at=now, updated_at=now,
        ))
        rid = int(res.inserted_primary_key[0])
        conn.execute(insert(events).values(
            rollout_id=rid, tick_seq=None, at=now, kind="created",
            message=f"rollout {policy.name} #{generation}: {target.stable} -> {target.canary}"))
        row = conn.execute(select(rollouts).where(rollouts.c.id == rid)).one()
        return rollout_from_row(row)

    def get(self, rollout_id: int) -> RolloutRecord:
        with self._read_tx() as conn:
            row = conn.execute(select(rollouts).where(rollouts.c.id == rollout_id)).first()
        if row is None:
            raise NotFound(f"no rollout with id {rollout_id}")
        return rollout_from_row(row)

    def latest(self, name: str) -> RolloutRecord:
        """The newest run of the policy `name`."""
        with self._read_tx() as conn:
            row = conn.execute(
                select(rollouts).where(rollouts.c.name == name)
                .order_by(rollouts.c.generation.desc()).limit(1)
            ).first()
        if row is None:
            raise NotFound(f"no rollout named {name!r} (canary status lists them)")
        return rollout_from_row(row)

    def run(self, name: str, generation: int) -> RolloutRecord:
        """Run number `generation` of the policy `name` (past runs stay readable)."""
        with self._read_tx() as conn:
            row = conn.execute(
                select(rollouts).where(rollouts.c.name == name,
                                       rollouts.c.generation == generation)
            ).first()
        if row is None:
            raise NotFound(f"rollout {name!r} has no run #{generation} (GET /rollouts/{name} "
                           "lists its runs)")
        return rollout_from_row(row)

    def generations(self, name: str) -> list[int]:
        """The run numbers of the policy `name`, newest first."""
        with self._read_tx() as conn:
            rows = conn.execute(select(rollouts.c.generation).where(rollouts.c.name == name)
                                .order_by(rollouts.c.generation.desc())).all()
        return [int(r[0]) for r in rows]

    def list_rollouts(self, *, active_only: bool = False,
                      all_generations: bool = False) -> list[RolloutRecord]:
        with self._read_tx() as conn:
            q = select(rollouts)
            if not all_generations:
                newest = (select(rollouts.c.name, func.max(rollouts.c.generation).label("g"))
                          .group_by(rollouts.c.name).subquery())
                q = q.join(newest, (rollouts.c.name == newest.c.name)
                           & (rollouts.c.generation == newest.c.g))
            if active_only:
                q = q.where(rollouts.c.phase.not_in([p.value for p in Phase if p.terminal]))
            rows = conn.execute(q.order_by(rollouts.c.name, rollouts.c.generation)).all()
        return [rollout_from_row(r) for r in rows]

    # -- ticks ---------------------------------------------------------------------------

    def ticks(self, rollout_id: int, *, since_seq: int = 0,
              limit: int | None = None) -> list[TickRow]:
        with self._read_tx() as conn:
            q = (select(ticks).where(ticks.c.rollout_id == rollout_id, ticks.c.seq > since_seq)
                 .order_by(ticks.c.seq))
            if limit is not None:
                q = q.limit(limit)
            rows = conn.execute(q).all()
        return [tick_from_row(r) for r in rows]

    def last_decisions(self, rollout_ids: list[int]) -> dict[int, LastDecision]:
        """Per rollout, its latest tick with a judge's decision (one query for all)."""
        if not rollout_ids:
            return {}
        newest = (select(ticks.c.rollout_id, func.max(ticks.c.seq).label("seq"))
                  .where(ticks.c.rollout_id.in_(rollout_ids), ticks.c.decision.is_not(None))
                  .group_by(ticks.c.rollout_id).subquery())
        with self._read_tx() as conn:
            rows = conn.execute(
                select(ticks.c.rollout_id, ticks.c.seq, ticks.c.scheduled_at, ticks.c.decision,
                       ticks.c.reason)
                .join(newest, (ticks.c.rollout_id == newest.c.rollout_id)
                      & (ticks.c.seq == newest.c.seq))).all()
        return {r.rollout_id: LastDecision(r.rollout_id, r.seq, as_utc(r.scheduled_at),  # type: ignore[arg-type]
                                           r.decision, r.reason) for r in rows}

    def weight_changes(self, rollout_id: int) -> list[WeightChange]:
        with self._read_tx() as conn:
            rows = conn.execute(select(weight_changes)
                                .where(weight_changes.c.rollout_id == rollout_id)
                                .order_by(weight_changes.c.id)).all()
        return [WeightChange(r.tick_seq, as_utc(r.at), r.weight_before, r.weight_after,  # type: ignore[arg-type]
                             loads(r.traffic), r.cause) for r in rows]

    def events(self, rollout_id: int) -> list[EventRow]:
        with self._read_tx() as conn:
            rows = conn.execute(select(events).where(events.c.rollout_id == rollout_id)
                                .order_by(events.c.id)).all()
        return [EventRow(r.tick_seq, as_utc(r.at), r.kind, r.message) for r in rows]  # type: ignore[arg-type]

    def record_event(self, rollout_id: int, kind: str, message: str, now: datetime) -> None:
        with self._tx() as conn:
            conn.execute(insert(events).values(rollout_id=rollout_id, tick_seq=None, at=now,
                                               kind=kind, message=message))

    def record_reconcile(self, rollout_id: int, before: int, traffic: dict[str, Any],
                         now: datetime, message: str) -> None:
        """A restart re-applied the stored traffic to the router (outside any tick)."""
        with self._tx() as conn:
            conn.execute(insert(weight_changes).values(
                rollout_id=rollout_id, tick_seq=None, at=now, weight_before=before,
                weight_after=int(traffic["weight"]), traffic=dumps(traffic), cause="reconcile"))
            conn.execute(insert(events).values(rollout_id=rollout_id, tick_seq=None, at=now,
                                               kind="reconcile", message=message))

    # -- commands ------------------------------------------------------------------------

    def add_command(self, name: str, command: Command, actor: str,
                    now: datetime) -> tuple[RolloutRecord, int]:
        """Queue a manual command for the newest run of `name` (applied by its next tick)."""
        rec = self.latest(name)
        if not rec.active:
            raise InvalidCommand(f"rollout {name} is {rec.phase}: nothing to {command}")
        with self._tx() as conn:
            res = conn.execute(insert(commands).values(
                rollout_id=rec.id, command=str(command), actor=actor[:128], requested_at=now))
            cid = int(res.inserted_primary_key[0])
            conn.execute(insert(events).values(
                rollout_id=rec.id, tick_seq=None, at=now, kind="command",
                message=f"{command} requested by {actor}"))
        return rec, cid

    def add_command_once(self, name: str, command: Command, actor: str,
                         now: datetime) -> tuple[RolloutRecord, int, bool]:
        """`add_command`, unless a command of this run already has this exact actor (the
        controller puts the request's id in it): then that command's id and False. A request
        seen twice (a crash between queueing it and clearing it) is queued once."""
        rec = self.latest(name)
        with self._tx() as conn:
            row = conn.execute(select(commands.c.id).where(
                commands.c.rollout_id == rec.id, commands.c.actor == actor[:128]).limit(1)
            ).first()
        if row is not None:
            return rec, int(row[0]), False
        rec, cid = self.add_command(name, command, actor, now)
        return rec, cid, True

    def pending_command(self, rollout_id: int) -> CommandRecord | None:
        with self._read_tx() as conn:
            row = conn.execute(
                select(commands)
                .where(commands.c.rollout_id == rollout_id, commands.c.consumed_at.is_(None))
                .order_by(commands.c.id).limit(1)
            ).first()
        if row is None:
            return None
        return CommandRecord(row.id, row.rollout_id, Command(row.command), row.actor,
                             as_utc(row.requested_at))  # type: ignore[arg-type]

    def pending_commands(self, rollout_id: int) -> list[CommandRecord]:
        with self._read_tx() as conn:
            rows = conn.execute(
                select(commands)
                .where(commands.c.rollout_id == rollout_id, commands.c.consumed_at.is_(None))
                .order_by(commands.c.id)
            ).all()
        return [CommandRecord(r.id, r.rollout_id, Command(r.command), r.actor,
                              as_utc(r.requested_at)) for r in rows]  # type: ignore[arg-type]


def _stable_after_promotion(policy: Policy, promoted: Any) -> Policy:
    """After a promotion, the promoted version is the stable one for the next run: a policy
    that still names the old stable (v1) starting v3 after v2 succeeded runs v2 -> v3.
    `promoted`: the newest succeeded run's (stable_version, canary_version), or None."""
    if promoted is None:
        return policy
    target = policy.spec.target
    was_stable, version = promoted
    if version in (target.stable, target.canary) or was_stable != target.stable:
        return policy  # already stable, the same canary again, or the policy names its own
    return policy.with_versions(stable=version)


def lock_key(namespace: str, item: Any) -> int:
    """A signed 64-bit advisory-lock key for (namespace, item): stable across processes."""
    data = f"canary-analyzer:{namespace}:{item}".encode()
    hi, lo = zlib.crc32(data), zlib.crc32(data[::-1])
    key = (hi << 32) | lo
    return key - (1 << 64) if key >= (1 << 63) else key


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's `begin` below issue BEGIN IMMEDIATE: a write transaction takes the
        # write lock up front instead of failing to upgrade a read lock (SQLITE_BUSY).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY)
        # Straight to the driver: a statement through SQLAlchemy costs more than the BEGIN.
        conn.connection.dbapi_connection.execute(  # type: ignore[union-attr]
            "BEGIN" if read_only else "BEGIN IMMEDIATE")


def _short(e: Exception) -> str:
    msg = str(getattr(e, "orig", e)).strip().splitlines()
    return msg[0] if msg else type(e).__name__


