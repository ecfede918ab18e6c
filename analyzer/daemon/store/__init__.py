"""The decision log and rollout state: one SQL store, SQLite (default) or PostgreSQL (several
replicas). store.py reads and writes, tables.py is the schema, records.py what it returns,
errors.py what can go wrong, urls.py database URLs, codec.py its JSON, tickpath.py the tick's
own read and fenced commit, claims and settling.

Names are imported lazily (PEP 562), so `from analyzer.daemon.store.urls import DEFAULT_DB`
or a CLI command's `--help` does not load SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOME = {
    "InvalidCommand": "errors", "NotFound": "errors", "RolloutExists": "errors",
    "StoreError": "errors", "StoreUnavailable": "errors", "TickConflict": "errors",
    "CommandRecord": "records", "EventRow": "records", "LastDecision": "records",
    "RolloutRecord": "records", "Claim": "records", "RolloutBrief": "records",
    "TickRecord": "records", "TickRow": "records", "TickView": "records",
    "WeightChange": "records",
    "Store": "store", "lock_key": "store", "SCHEMA_VERSION": "tables",
    "DEFAULT_DB": "urls", "redact_url": "urls",
}
__all__ = [
    "DEFAULT_DB", "SCHEMA_VERSION", "Claim", "CommandRecord", "EventRow", "InvalidCommand",
    "LastDecision", "NotFound", "RolloutBrief", "RolloutExists", "RolloutRecord", "Store",
    "StoreError", "StoreUnavailable", "TickConflict", "TickRecord", "TickRow", "TickView",
    "WeightChange", "lock_key", "redact_url",
]

if TYPE_CHECKING:
    from analyzer.daemon.store.errors import (
        InvalidCommand,
        NotFound,
        RolloutExists,
        StoreError,
        StoreUnavailable,
        TickConflict,
    )
    from analyzer.daemon.store.records import (
        Claim,
        CommandRecord,
        EventRow,
        LastDecision,
        RolloutBrief,
        RolloutRecord,
        TickRecord,
        TickRow,
        TickView,
        WeightChange,
    )
    from analyzer.daemon.store.store import Store, lock_key
    from analyzer.daemon.store.tables import SCHEMA_VERSION
    from analyzer.daemon.store.urls import DEFAULT_DB, redact_url


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
