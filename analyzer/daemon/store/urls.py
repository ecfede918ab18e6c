"""Database URLs: the default, the driver this project ships for `postgresql://`, masking the
password for logs, and telling a missing SQLite file from a new one.
"""

from __future__ import annotations

from sqlalchemy.engine import make_url

DEFAULT_DB = "sqlite:///canary.db"
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
