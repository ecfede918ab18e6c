"""`canary demo` serves the dashboard: its URL is printed first, and both demo rollouts are
listed there and move live while the demo runs (simulated mode, slowed down so that a browser
can watch it; the real mode serves the same app over the same store)."""

from __future__ import annotations

import io
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from rich.console import Console

import analyzer.demo.run as demo
from analyzer.demo import scenario


def test_the_demo_prints_its_dashboard_and_both_rollouts_are_live_there(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, browser_page: Any,
        shots: Path) -> None:
    monkeypatch.setattr(demo, "missing_binaries", lambda: ["nginx"])
    out = io.StringIO()
    results: list[Any] = []
    opts = scenario.DemoOptions(short=True, out_dir=tmp_path / "out", speed=2, live=False)
    runner = threading.Thread(target=lambda: results.append(
        demo.run_demo(opts, Console(file=out, width=200))), daemon=True)
    runner.start()
    deadline = time.monotonic() + 30
    while not (m := re.search(r"dashboard: (http://127\.0\.0\.1:\d+)/", out.getvalue())):
        assert time.monotonic() < deadline and runner.is_alive(), out.getvalue()
        time.sleep(0.05)
    page = browser_page
    page.goto(m[1] + "/")
    rows = page.locator("#rollouts tbody tr")
    expect(rows).to_have_count(2, timeout=20_000)
    assert {r.get_attribute("data-rollout") for r in rows.all()} == {
        "demo-healthy", "demo-regressed"}
    regressed = page.locator("tr[data-rollout=demo-regressed] .badge")
    expect(regressed).to_have_text("rolled back", timeout=60_000)  # live: no reload
    healthy = page.locator("tr[data-rollout=demo-healthy] td.weight")
    expect(healthy).to_have_attribute("data-weight", re.compile(r"^(50|100)$"), timeout=60_000)
    page.screenshot(path=str(shots / "demo-table.png"))
    page.click("a[href='#/rollouts/demo-healthy']")
    expect(page.locator("#weight-value")).to_have_attribute("data-weight", "100",
                                                            timeout=90_000)
    page.screenshot(path=str(shots / "demo-healthy.png"), full_page=True)
    runner.join(120)
    assert results and results[0].ok and results[0].dashboard_url == m[1]
    assert page.errors == [] and page.external == []
