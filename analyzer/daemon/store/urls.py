"""Database URLs: the default, where a command's URL comes from, the driver this project ships
for `postgresql://`, masking the password for logs, and the file of a SQLite URL."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DB = "sqlite:///canary.db"
DB_ENV = "CANARY_DB"


def resolve_url(url: str | None) -> str:
    """The URL a command uses: the one given, else $CANARY_DB, else the default SQLite file."""
    return url or os.environ.get(DB_ENV) or DEFAULT_DB


def redact_url(url: str) -> str:
    """The URL with its password (and query string secrets) masked, for logs and status."""
    from sqlalchemy.engine import make_url

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


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names (None for other databases and in-memory SQLite). Raises
    ValueError when `url` is not a database URL at all."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        raise ValueError(f"{url!r} is not a database URL (sqlite:///file.db or "
                         "postgresql://user@host/db)") from None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(str(parsed.database))
