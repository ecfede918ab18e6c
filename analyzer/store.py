"""The decision log and rollout state: one SQL store (SQLAlchemy 2), SQLite or PostgreSQL.

Owns the schema, its version and migrations, and every read and write of rollouts, ticks,
weight changes, events and manual commands.

Tables:
- `rollouts`: one row per run of a policy (name + generation), with the policy snapshot it
  runs with, the state machine's state, the judge's state, and `tick_seq`, the sequence
  number of the last committed tick;
- `ticks`: one row per evaluation: window, samples, every verdict, decision, weight before and
  after, judge state after. Unique on (rollout_id, seq): the tick id;
- `weight_changes`, `events`: what moved and why (including restarts' reconciliations);
- `commands`: manual promote/abort/pause/resume, queued by the CLI or the HTTP API and consumed
  by the next tick inside its transaction (so a command is applied exactly once);
- `schema_version`: one row; `migrate()` upgrades older databases step by step.

Crash consistency: a tick is committed in ONE transaction that advances `rollouts.tick_seq`
from n to n+1 with a compare-and-set (`WHERE tick_seq = n`) and inserts tick n+1; a second
attempt at the same tick (a restarted or competing replica) fails the compare-and-set and the
unique constraint, so a tick is never applied twice.

SQLite (default, a file) runs in WAL mode with `BEGIN IMMEDIATE` so the CLI and the daemon
can write the same file; PostgreSQL is for several replicas.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
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

from analyzer.policy import Policy
from analyzer.rollout import Command, Phase, RolloutState

DEFAULT_DB = "sqlite:///canary.db"
SCHEMA_VERSION = 1


class StoreError(Exception):
    """The database cannot be used (unreachable, wrong schema version, bad URL)."""


class TickConflict(StoreError):
    """The tick was already committed (by this or another replica): nothing was written."""


class RolloutExists(StoreError):
    """An active rollout of this policy exists already."""


class NotFound(StoreError):
    """No rollout of that name."""


metadata = MetaData()

schema_version = Table(
    "schema_version", metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

rollouts = Table(
    "rollouts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(253), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("canary_version", String(256), nullable=False),
    Column("stable_version", String(256), nullable=False),
    Column("policy", Text, nullable=False),  # JSON: the policy snapshot this run uses
    Column("phase", String(32), nullable=False),
    Column("step", Integer, nullable=False),
    Column("weight", Integer, nullable=False),
    Column("state", Text, nullable=False),  # JSON: RolloutState
    Column("judge_state", Text),  # JSON: Judge.to_state()
    Column("tick_seq", Integer, nullable=False, default=0),
    Column("last_t1", DateTime(timezone=True)),  # end of the last analysed window
    Column("reason", Text, nullable=False, default=""),
    Column("owner", String(128)),  # replica that committed the last tick (informational)
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    UniqueConstraint("name", "generation", name="uq_rollouts_name_generation"),
)
Index("ix_rollouts_phase", rollouts.c.phase)

ticks = Table(
    "ticks", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rollout_id", Integer, ForeignKey("rollouts.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("scheduled_at", DateTime(timezone=True), nullable=False),
    Column("t0", DateTime(timezone=True)),
    Column("t1", DateTime(timezone=True)),
    Column("phase_before", String(32), nullable=False),
    Column("phase_after", String(32), nullable=False),
    Column("step_before", Integer, nullable=False),
    Column("step_after", Integer, nullable=False),
    Column("weight_before", Integer, nullable=False),
    Column("weight_after", Integer, nullable=False),
    Column("action", String(32), nullable=False),  # what the state machine did
    Column("decision", String(32)),  # the judge's action, when it was asked
    Column("reason", Text, nullable=False),
    Column("samples", Text),  # JSON: Samples.to_json()
    Column("verdicts", Text),  # JSON: [Verdict.to_json()]
    Column("decision_detail", Text),  # JSON: Decision.to_json() minus checks
    Column("judge_state", Text),  # JSON after this tick
    Column("gate", Text),  # JSON: webhook answers
    Column("command", String(16)),
    Column("replica", String(128)),
    Column("duration_ms", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("rollout_id", "seq", name="uq_ticks_rollout_seq"),
)

weight_changes = Table(
    "weight_changes", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rollout_id", Integer, ForeignKey("rollouts.id"), nullable=False),
    Column("tick_seq", Integer),  # None: a reconciliation outside a tick
    Column("at", DateTime(timezone=True), nullable=False),
    Column("weight_before", Integer, nullable=False),
    Column("weight_after", Integer, nullable=False),
    Column("traffic", Text, nullable=False),  # JSON: Traffic after
    Column("cause", String(32), nullable=False),
)
Index("ix_weight_changes_rollout", weight_changes.c.rollout_id)

events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rollout_id", Integer, ForeignKey("rollouts.id"), nullable=False),
    Column("tick_seq", Integer),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("message", Text, nullable=False),
)
Index("ix_events_rollout", events.c.rollout_id)

commands = Table(
    "commands", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rollout_id", Integer, ForeignKey("rollouts.id"), nullable=False),
    Column("command", String(16), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("consumed_at", DateTime(timezone=True)),
    Column("consumed_seq", Integer),
    Column("result", Text),
)
Index("ix_commands_pending", commands.c.rollout_id, commands.c.consumed_at)

#: Migrations from version v to v+1: functions run inside one transaction. Version 1 is the
#: initial schema (created by metadata.create_all); add `2: _migrate_1_to_2` and so on.
MIGRATIONS: dict[int, Any] = {}


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class RolloutRecord:
    id: int
    name: str
    generation: int
    canary_version: str
    stable_version: str
    policy: dict[str, Any]
    state: RolloutState
    judge_state: dict[str, Any] | None
    tick_seq: int
    last_t1: datetime | None
    owner: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def phase(self) -> Phase:
        return self.state.phase

    @property
    def active(self) -> bool:
        return not self.state.phase.terminal

    def load_policy(self) -> Policy:
        return Policy.model_validate(self.policy)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "generation": self.generation,
            "canary_version": self.canary_version,
            "stable_version": self.stable_version,
            "phase": str(self.state.phase),
            "step": self.state.step,
            "weight": self.state.weight,
            "traffic": self.state.traffic.to_json(),
            "reason": self.state.reason,
            "rollback_pending": self.state.rollback_pending,
            "pause_until": _iso(self.state.pause_until),
            "tick_seq": self.tick_seq,
            "owner": self.owner,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "finished_at": _iso(self.finished_at),
        }


@dataclass(frozen=True)
class TickRecord:
    """One evaluation to commit (built by the engine from a Transition)."""

    rollout_id: int
    seq: int
    scheduled_at: datetime
    state_before: RolloutState
    state_after: RolloutState
    action: str
    reason: str
    t0: datetime | None = None
    t1: datetime | None = None
    decision: dict[str, Any] | None = None  # Decision.to_json()
    samples: dict[str, Any] | None = None
    judge_state: dict[str, Any] | None = None  # after the tick (None: unchanged)
    gate: list[dict[str, Any]] | None = None
    command_id: int | None = None
    command: str | None = None
    replica: str | None = None
    duration_ms: int | None = None
    weight_cause: str | None = None  # set when traffic changed
    events: tuple[tuple[str, str], ...] = ()  # (kind, message)


@dataclass(frozen=True)
class TickRow:
    """A committed tick as read back."""

    rollout_id: int
    seq: int
    scheduled_at: datetime
    t0: datetime | None
    t1: datetime | None
    phase_before: str
    phase_after: str
    step_before: int
    step_after: int
    weight_before: int
    weight_after: int
    action: str
    decision: str | None
    reason: str
    samples: dict[str, Any] | None
    verdicts: list[dict[str, Any]]
    decision_detail: dict[str, Any] | None
    judge_state: dict[str, Any] | None
    gate: list[dict[str, Any]] | None
    command: str | None
    replica: str | None
    duration_ms: int | None

    def to_json(self, *, full: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seq": self.seq,
            "scheduled_at": _iso(self.scheduled_at),
            "t0": _iso(self.t0),
            "t1": _iso(self.t1),
            "phase_before": self.phase_before,
            "phase_after": self.phase_after,
            "step_before": self.step_before,
            "step_after": self.step_after,
            "weight_before": self.weight_before,
            "weight_after": self.weight_after,
            "action": self.action,
            "decision": self.decision,
            "reason": self.reason,
            "checks": self.verdicts,
            "command": self.command,
            "replica": self.replica,
            "duration_ms": self.duration_ms,
        }
        if self.decision_detail is not None:
            out["time_needed_seconds"] = self.decision_detail.get("time_needed_seconds")
        if full:
            out["samples"] = self.samples
            out["judge_state"] = self.judge_state
            out["gate"] = self.gate
        return out


@dataclass(frozen=True)
class CommandRecord:
    id: int
    rollout_id: int
    command: Command
    actor: str
    requested_at: datetime


@dataclass(frozen=True)
class WeightChange:
    tick_seq: int | None
    at: datetime
    weight_before: int
    weight_after: int
    traffic: dict[str, Any]
    cause: str


@dataclass(frozen=True)
class EventRow:
    tick_seq: int | None
    at: datetime
    kind: str
    message: str


# --------------------------------------------------------------------------- helpers


def redact_url(url: str) -> str:
    """The URL with its password (and query string secrets) masked, for logs and status."""
    try:
        u = make_url(url)
    except Exception:
        return "<unparseable database URL>"
    return u.render_as_string(hide_password=True)


def normalize_url(url: str) -> str:
    """`postgresql://` and `postgres://` mean psycopg 3 (the driver this project ships)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def dumps(value: Any) -> str | None:
    """Strict JSON (PostgreSQL rejects NaN/Infinity): non-finite floats become strings."""
    if value is None:
        return None
    try:  # the common case, in C: no NaN or infinity anywhere
        return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)
    except (ValueError, TypeError):  # NaN/infinity, or keys json cannot sort or write
        return json.dumps(_finite(value), separators=(",", ":"), sort_keys=True)


def loads(value: str | None) -> Any:
    return json.loads(value) if value else None


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _utc(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    if t.tzinfo is None:  # SQLite returns naive datetimes; we only ever store UTC
        return t.replace(tzinfo=UTC)
    return t.astimezone(UTC)


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z") if t is not None else None


# --------------------------------------------------------------------------- the store


class Store:
    """The engine's database. Thread-safe (one SQLAlchemy Engine with a pool)."""

    def __init__(self, url: str | None = None, *, schema: str | None = None,
                 migrate: bool = True) -> None:
        raw = url or os.environ.get("CANARY_DB") or DEFAULT_DB
        self.url = normalize_url(raw)
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
            kwargs["connect_args"] = {"connect_timeout": 10}
        engine = create_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            _sqlite_setup(engine)
        if self.schema:
            engine = engine.execution_options(schema_translate_map={None: self.schema})
        self.engine: Engine = engine
        if migrate:
            self.migrate()

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
            raise StoreError(f"cannot use database {self.url_redacted}: "
                             f"{_short(e)}") from None

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    def check_writable(self, rollout_id: int) -> None:
        """StoreError unless a write transaction commits (it touches the rollout's
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
            raise StoreError(f"database {self.url_redacted}: {_short(e)}") from None

    # -- rollouts ------------------------------------------------------------------------

    def create_rollout(self, policy: Policy, now: datetime, *,
                       canary_version: str | None = None) -> RolloutRecord:
        """A new pending run of `policy`. Raises RolloutExists when one is active; starting
        the same canary version again returns the active run (CD pipelines retry)."""
        if canary_version:
            policy = policy.with_canary_version(canary_version)
        target = policy.spec.target
        for _ in range(5):
            try:
                with self._tx() as conn:
                    latest = conn.execute(
                        select(rollouts).where(rollouts.c.name == policy.name)
                        .order_by(rollouts.c.generation.desc()).limit(1)
                    ).first()
                    if latest is not None and not Phase(latest.phase).terminal:
                        rec = _rollout(latest)
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
        raise StoreError(f"could not create rollout {policy.name}: concurrent starts")

    def ensure_rollout(self, policy: Policy, now: datetime) -> RolloutRecord | None:
        """Create generation 1 of `policy` unless any run of it exists (what `canary run
        --policies DIR` does for each file). Race-free across replicas."""
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
        return _rollout(row)

    def get(self, rollout_id: int) -> RolloutRecord:
        with self._tx() as conn:
            row = conn.execute(select(rollouts).where(rollouts.c.id == rollout_id)).first()
        if row is None:
            raise NotFound(f"no rollout with id {rollout_id}")
        return _rollout(row)

    def latest(self, name: str) -> RolloutRecord:
        """The newest run of the policy `name`."""
        with self._tx() as conn:
            row = conn.execute(
                select(rollouts).where(rollouts.c.name == name)
                .order_by(rollouts.c.generation.desc()).limit(1)
            ).first()
        if row is None:
            raise NotFound(f"no rollout named {name!r} (canary status lists them)")
        return _rollout(row)

    def list_rollouts(self, *, active_only: bool = False,
                      all_generations: bool = False) -> list[RolloutRecord]:
        with self._tx() as conn:
            q = select(rollouts)
            if not all_generations:
                newest = (select(rollouts.c.name, func.max(rollouts.c.generation).label("g"))
                          .group_by(rollouts.c.name).subquery())
                q = q.join(newest, (rollouts.c.name == newest.c.name)
                           & (rollouts.c.generation == newest.c.g))
            if active_only:
                q = q.where(rollouts.c.phase.not_in([p.value for p in Phase if p.terminal]))
            rows = conn.execute(q.order_by(rollouts.c.name, rollouts.c.generation)).all()
        return [_rollout(r) for r in rows]

    # -- ticks ---------------------------------------------------------------------------

    def commit_tick(self, rec: TickRecord) -> None:
        """Commit one tick atomically; TickConflict when tick `rec.seq` exists already."""
        now = rec.scheduled_at
        after = rec.state_after
        values: dict[str, Any] = {
            "tick_seq": rec.seq, "phase": str(after.phase), "step": after.step,
            "weight": after.weight, "state": dumps(after.to_json()), "reason": after.reason,
            "owner": rec.replica, "updated_at": now,
        }
        if rec.judge_state is not None:
            values["judge_state"] = dumps(rec.judge_state)
        if rec.t1 is not None:
            values["last_t1"] = rec.t1
        if after.phase.terminal and not rec.state_before.phase.terminal:
            values["finished_at"] = now
        decision = rec.decision or {}
        detail = {k: v for k, v in decision.items() if k != "checks"} if decision else None
        try:
            with self._tx() as conn:
                res = conn.execute(
                    update(rollouts)
                    .where(rollouts.c.id == rec.rollout_id, rollouts.c.tick_seq == rec.seq - 1)
                    .values(**values)
                )
                if res.rowcount != 1:
                    raise TickConflict(
                        f"tick {rec.rollout_id}:{rec.seq} was already committed elsewhere")
                conn.execute(insert(ticks).values(
                    rollout_id=rec.rollout_id, seq=rec.seq, scheduled_at=rec.scheduled_at,
                    t0=rec.t0, t1=rec.t1,
                    phase_before=str(rec.state_before.phase), phase_after=str(after.phase),
                    step_before=rec.state_before.step, step_after=after.step,
                    weight_before=rec.state_before.weight, weight_after=after.weight,
                    action=rec.action, decision=decision.get("decision"),
                    reason=rec.reason, samples=dumps(rec.samples),
                    verdicts=dumps(decision.get("checks", [])), decision_detail=dumps(detail),
                    judge_state=dumps(rec.judge_state), gate=dumps(rec.gate),
                    command=rec.command, replica=rec.replica, duration_ms=rec.duration_ms,
                    created_at=datetime.now(UTC),
                ))
                if rec.state_before.traffic != after.traffic:
                    conn.execute(insert(weight_changes).values(
                        rollout_id=rec.rollout_id, tick_seq=rec.seq, at=now,
                        weight_before=rec.state_before.weight, weight_after=after.weight,
                        traffic=dumps(after.traffic.to_json()),
                        cause=rec.weight_cause or rec.action,
                    ))
                for kind, message in rec.events:
                    conn.execute(insert(events).values(
                        rollout_id=rec.rollout_id, tick_seq=rec.seq, at=now, kind=kind,
                        message=message))
                if rec.command_id is not None:
                    res = conn.execute(
                        update(commands)
                        .where(commands.c.id == rec.command_id, commands.c.consumed_at.is_(None))
                        .values(consumed_at=now, consumed_seq=rec.seq, result=rec.reason)
                    )
                    if res.rowcount != 1:
                        raise TickConflict(f"command {rec.command_id} was already consumed")
        except IntegrityError:
            raise TickConflict(
                f"tick {rec.rollout_id}:{rec.seq} was already committed elsewhere") from None

    def ticks(self, rollout_id: int, *, since_seq: int = 0,
              limit: int | None = None) -> list[TickRow]:
        with self._tx() as conn:
            q = (select(ticks).where(ticks.c.rollout_id == rollout_id, ticks.c.seq > since_seq)
                 .order_by(ticks.c.seq))
            if limit is not None:
                q = q.limit(limit)
            rows = conn.execute(q).all()
        return [_tick(r) for r in rows]

    def weight_changes(self, rollout_id: int) -> list[WeightChange]:
        with self._tx() as conn:
            rows = conn.execute(select(weight_changes)
                                .where(weight_changes.c.rollout_id == rollout_id)
                                .order_by(weight_changes.c.id)).all()
        return [WeightChange(r.tick_seq, _utc(r.at), r.weight_before, r.weight_after,  # type: ignore[arg-type]
                             loads(r.traffic), r.cause) for r in rows]

    def events(self, rollout_id: int) -> list[EventRow]:
        with self._tx() as conn:
            rows = conn.execute(select(events).where(events.c.rollout_id == rollout_id)
                                .order_by(events.c.id)).all()
        return [EventRow(r.tick_seq, _utc(r.at), r.kind, r.message) for r in rows]  # type: ignore[arg-type]

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
            raise StoreError(f"rollout {name} is {rec.phase}: nothing to {command}")
        with self._tx() as conn:
            res = conn.execute(insert(commands).values(
                rollout_id=rec.id, command=str(command), actor=actor[:128], requested_at=now))
            cid = int(res.inserted_primary_key[0])
            conn.execute(insert(events).values(
                rollout_id=rec.id, tick_seq=None, at=now, kind="command",
                message=f"{command} requested by {actor}"))
        return rec, cid

    def pending_command(self, rollout_id: int) -> CommandRecord | None:
        with self._tx() as conn:
            row = conn.execute(
                select(commands)
                .where(commands.c.rollout_id == rollout_id, commands.c.consumed_at.is_(None))
                .order_by(commands.c.id).limit(1)
            ).first()
        if row is None:
            return None
        return CommandRecord(row.id, row.rollout_id, Command(row.command), row.actor,
                             _utc(row.requested_at))  # type: ignore[arg-type]

    def pending_commands(self, rollout_id: int) -> list[CommandRecord]:
        with self._tx() as conn:
            rows = conn.execute(
                select(commands)
                .where(commands.c.rollout_id == rollout_id, commands.c.consumed_at.is_(None))
                .order_by(commands.c.id)
            ).all()
        return [CommandRecord(r.id, r.rollout_id, Command(r.command), r.actor,
                              _utc(r.requested_at)) for r in rows]  # type: ignore[arg-type]


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
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _short(e: Exception) -> str:
    msg = str(getattr(e, "orig", e)).strip().splitlines()
    return msg[0] if msg else type(e).__name__


def _rollout(row: Any) -> RolloutRecord:
    return RolloutRecord(
        id=row.id, name=row.name, generation=row.generation,
        canary_version=row.canary_version, stable_version=row.stable_version,
        policy=loads(row.policy), state=RolloutState.from_json(loads(row.state)),
        judge_state=loads(row.judge_state), tick_seq=row.tick_seq,
        last_t1=_utc(row.last_t1), owner=row.owner,
        created_at=_utc(row.created_at),  # type: ignore[arg-type]
        updated_at=_utc(row.updated_at),  # type: ignore[arg-type]
        finished_at=_utc(row.finished_at),
    )


def _tick(r: Any) -> TickRow:
    return TickRow(
        rollout_id=r.rollout_id, seq=r.seq, scheduled_at=_utc(r.scheduled_at),  # type: ignore[arg-type]
        t0=_utc(r.t0), t1=_utc(r.t1), phase_before=r.phase_before, phase_after=r.phase_after,
        step_before=r.step_before, step_after=r.step_after, weight_before=r.weight_before,
        weight_after=r.weight_after, action=r.action, decision=r.decision, reason=r.reason,
        samples=loads(r.samples), verdicts=loads(r.verdicts) or [],
        decision_detail=loads(r.decision_detail), judge_state=loads(r.judge_state),
        gate=loads(r.gate), command=r.command, replica=r.replica, duration_ms=r.duration_ms,
    )


__all__ = [
    "DEFAULT_DB", "SCHEMA_VERSION", "CommandRecord", "EventRow", "NotFound",
    "RolloutExists", "RolloutRecord", "Store", "StoreError", "TickConflict", "TickRecord",
    "TickRow", "WeightChange", "lock_key", "redact_url",
]
