"""The dashboard in a real browser: Debian's Chromium driven by Playwright for Python (launched
with the system binary, a fresh profile per test; nothing downloads a browser build), against
a real engine in this process: the simulate source, the dry-run router, a SQLite store, the
ASGI app served by uvicorn on a free loopback port. Ticks happen when a test asks, at the
fixed instants of tests/support/clock.py.

Screenshots go to the test's tmp dir (`shots`); look at them when changing the page.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from analyzer.core.rollout import Command
from analyzer.daemon.api import ApiServer, LinkTemplate
from analyzer.daemon.engine import Engine
from analyzer.daemon.store import Store
from analyzer.policy import Policy
from tests.engine.conftest import make_policy
from tests.support import requires
from tests.support.clock import EPOCH

TOKEN = "browser-test-token-51c9"
INTERVAL = timedelta(seconds=5)


@dataclass
class LiveEngine:
    """A store, an engine and the API server over them; `tick` advances one rollout."""

    store: Store
    engine: Engine
    server: ApiServer
    ids: dict[str, int] = field(default_factory=dict)
    clock: dict[str, datetime] = field(default_factory=dict)

    def start(self, policy: Policy, ticks: int = 0) -> int:
        at = EPOCH + INTERVAL * len(self.ids) * 1000  # each rollout on its own stretch
        rec = self.store.create_rollout(policy, at)
        self.ids[policy.name], self.clock[policy.name] = rec.id, at
        for _ in range(ticks):
            self.tick(policy.name)
        return rec.id

    def tick(self, name: str) -> Any:
        out = self.engine.tick(self.ids[name], self.clock[name])
        self.clock[name] += INTERVAL
        return out

    def command(self, name: str, command: Command) -> None:
        self.store.add_command(name, command, "test", self.clock[name])

    def state(self, name: str) -> Any:
        return self.store.get(self.ids[name]).state


@pytest.fixture
def live_engine(tmp_path: Path) -> Iterator[LiveEngine]:
    store = Store(f"sqlite:///{tmp_path / 'canary.db'}")
    engine = Engine(store)
    links = (LinkTemplate.parse("Grafana=https://grafana.example/d/canary?var-rollout={name}"),)
    server = ApiServer(store, engine.metrics, token=TOKEN, port=0, links=links)
    server.start()
    yield LiveEngine(store, engine, server)
    server.stop()
    store.dispose()


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    """A Chromium page (1440x900, a laptop screen) in a fresh profile; fails, never skips,
    without Chromium or Playwright."""
    requires.playwright()
    executable = requires.chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=executable, headless=True,
            args=requires.CHROMIUM_ARGS, viewport={"width": 1440, "height": 900})
        page = context.new_page()
        external: list[str] = []
        page.on("request", lambda r: external.append(r.url)
                if not r.url.startswith(("http://127.0.0.1", "data:")) else None)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.errors = errors  # type: ignore[attr-defined]
        page.external = external  # type: ignore[attr-defined]
        try:
            yield page
        finally:
            context.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    d = tmp_path / "screenshots"
    d.mkdir()
    return d


def healthy(name: str, **kw: Any) -> Policy:
    return make_policy(name=name, **kw)
