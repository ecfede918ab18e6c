"""Suite-wide pytest setup: the real-Kubernetes fixtures, and no silent skips in CI.

With `CI=true` (set by .ci/run), a skipped test is reported as a failure: CI must never pass by
dropping a tier whose dependency is missing. Tests needing a binary or a server use
tests/support/requires.py, which fails with the fix in the message rather than skipping.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

pytest_plugins = ["tests.support.kube_fixtures"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (f"skipped in CI (CI=true): {reason}; a test must fail naming what is "
                           "missing, never skip (tests/support/requires.py)")
