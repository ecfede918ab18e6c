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
- `schema_version`: one row; `migrate()` upgrades older databases step by step.
"""

from __future__ import annotations

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
)

SCHEMA_VERSION = 1

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
