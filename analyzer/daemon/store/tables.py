"""The store's schema: tables, indexes, schema version and migrations.

Tables:
- `rollouts`: one row per run of a policy (name + generation), with the policy snapshot it
  runs with, the state machine's state, the judge's state, and `tick_seq`, the sequence
  number of the last committed tick;
- `ticks`: one row per evaluation: window, samples, every verdict, decision, weight before and
  after, judge state after. Unique on (rollout_id, seq): the tick id;
- `weight_changes`, `events`: what moved and why (including restarts' reconciliations);
- `commands`: manual promote/abort/pause/resume, queued by the CLI or the HTTP API and consumed
  by the next tick inside its transaction (so a command is applied exactly once);
- `fencing`: one row: this store's identity and the last fencing epoch handed out (every
  take-over of a rollout gets the next one; `rollouts.fence_epoch` holds the current owner's,
  and a tick commits only under it: analyzer/routers/fence.py, docs/engine.md);
- `schema_version`: one row; `migrate()` upgrades older databases step by step.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    insert,
    text,
)
from sqlalchemy.engine import Connection

SCHEMA_VERSION = 2

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
    # The fencing epoch of the replica that owns the run now (Store.claim); commits need it.
    Column("fence_epoch", Integer, nullable=False, default=0, server_default="0"),
    # Finished runs: the tick at which the owner last made the router agree with the final
    # state (None: not yet; the owner of an unsettled finished run repairs its router).
    Column("settled_seq", Integer),
    # Bumped by every change of `policy` (Store.update_policy): a tick compares a number, not
    # the policy document, to see the change.
    Column("policy_rev", Integer, nullable=False, default=0, server_default="0"),
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
    Column("fence_epoch", Integer),  # the epoch the tick was committed under
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

fencing = Table(
    "fencing", metadata,
    Column("id", Integer, primary_key=True),
    Column("store_id", String(32), nullable=False),  # tokens of other stores never compare
    Column("last_epoch", Integer, nullable=False),
)


def new_store_id() -> str:
    return secrets.token_hex(8)


def init_fencing(conn: Connection) -> None:
    """The `fencing` row of a new (or newly migrated) store."""
    conn.execute(insert(fencing).values(id=1, store_id=new_store_id(), last_epoch=0))


def _migrate_1_to_2(conn: Connection) -> None:
    """Fencing: the owner's epoch on rollouts and ticks, settled finished runs, the counter;
    the policy's revision number."""
    schema = (conn.get_execution_options().get("schema_translate_map") or {}).get(None)

    def table(name: str) -> str:
        return f'"{schema}"."{name}"' if schema else name

    conn.execute(text(f"ALTER TABLE {table('rollouts')} "
                      "ADD COLUMN fence_epoch INTEGER NOT NULL DEFAULT 0"))
    conn.execute(text(f"ALTER TABLE {table('rollouts')} ADD COLUMN settled_seq INTEGER"))
    conn.execute(text(f"ALTER TABLE {table('rollouts')} "
                      "ADD COLUMN policy_rev INTEGER NOT NULL DEFAULT 0"))
    conn.execute(text(f"ALTER TABLE {table('ticks')} ADD COLUMN fence_epoch INTEGER"))
    # Runs that finished before fencing existed are left as they are.
    conn.execute(text(f"UPDATE {table('rollouts')} SET settled_seq = tick_seq WHERE phase IN "
                      "('succeeded', 'rolled_back', 'failed')"))
    metadata.create_all(conn, tables=[fencing])
    init_fencing(conn)


#: Migrations from version v to v+1: functions run inside one transaction. Version 1 is the
#: initial schema (created by metadata.create_all).
MIGRATIONS: dict[int, Any] = {2: _migrate_1_to_2}
