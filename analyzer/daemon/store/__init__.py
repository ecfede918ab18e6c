"""The decision log and rollout state: one SQL store, SQLite (default) or PostgreSQL (several
replicas). store.py reads and writes, tables.py is the schema, records.py what it returns,
errors.py what can go wrong, urls.py database URLs, codec.py its JSON."""

from analyzer.daemon.store.errors import (
    InvalidCommand,
    NotFound,
    RolloutExists,
    StoreError,
    StoreUnavailable,
    TickConflict,
)
from analyzer.daemon.store.records import (
    CommandRecord,
    EventRow,
    LastDecision,
    RolloutRecord,
    TickRecord,
    TickRow,
    WeightChange,
)
from analyzer.daemon.store.store import Store, lock_key
from analyzer.daemon.store.tables import SCHEMA_VERSION
from analyzer.daemon.store.urls import DEFAULT_DB, redact_url

__all__ = [
    "DEFAULT_DB", "SCHEMA_VERSION", "CommandRecord", "EventRow", "InvalidCommand", "LastDecision",
    "NotFound", "RolloutExists", "RolloutRecord", "Store", "StoreError", "StoreUnavailable",
    "TickConflict", "TickRecord", "TickRow", "WeightChange", "lock_key", "redact_url",
]
