"""What a test needs from the machine, as a clear failure when it is missing: never a skip.

`make test` (scripts/sysdeps.sh) installs and starts every one of these on a fresh Debian
machine; a test that cannot find one fails naming what is missing and how to get it, so CI can
never pass by silently dropping a tier.
"""

from __future__ import annotations

import os
import shutil

import pytest
from sqlalchemy import create_engine, text

HOW = "run `make test` (scripts/sysdeps.sh installs and starts it) or install it yourself"
PG_URL = os.environ.get("CANARY_TEST_DATABASE_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def binary(name: str) -> str:
    """The path of `name` (PATH, /usr/bin, /usr/sbin); fails the test when absent."""
    for found in (shutil.which(name), f"/usr/bin/{name}", f"/usr/sbin/{name}"):
        if found and os.access(found, os.X_OK):
            return found
    pytest.fail(f"this test needs the {name} binary, which is not installed: {HOW}",
                pytrace=False)


def postgres() -> str:
    """The test database URL; fails the test when nothing answers there."""
    try:
        eng = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with eng.connect() as c:
            c.execute(text("SELECT 1"))
        eng.dispose()
    except Exception as e:
        pytest.fail(f"this test needs PostgreSQL at {PG_URL} (CANARY_TEST_DATABASE_URL), which "
                    f"does not answer ({type(e).__name__}): {HOW}", pytrace=False)
    return PG_URL


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    """Debian's Chromium (the browser tests drive it; nothing downloads a browser build)."""
    return binary("chromium")


def playwright() -> None:
    """Playwright for Python (the browser tests' driver); fails the test when absent."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("this test needs Playwright for Python, which is not installed: run `make "
                    "test` (it installs the package's test extras) or `pip install playwright`; "
                    "never `playwright install`: the tests use Debian's chromium",
                    pytrace=False)
