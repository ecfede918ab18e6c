"""The dashboard in Chromium against a real engine (see conftest.py): the table lists the
rollouts; a tick moves the weight on screen without a reload; promote with the token acts
once, without it (or with a wrong one) it is refused and the page says why; a paused rollout
shows its banner with the power estimate; nothing is loaded from outside the engine."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from analyzer.core.rollout import Command, Phase

from .conftest import TOKEN, LiveEngine, healthy

FAST = 20000  # requests/s of the simulated traffic: a healthy step is decided in 3 ticks


def no_page_errors(page: Any) -> None:
    assert page.errors == [], page.errors
    assert page.external == [], f"the page loaded from outside the engine: {page.external}"


def test_the_table_lists_every_rollout(live_engine: LiveEngine, browser_page: Any,
                                       shots: Path) -> None:
    live_engine.start(healthy("checkout", rps=FAST), ticks=4)  # promoted to step 2
    live_engine.start(healthy("payments", canary_error=0.05), ticks=4)  # rolled back
    live_engine.start(healthy("search"), ticks=2)  # progressing at 20 %
    page = browser_page
    page.goto(live_engine.server.url + "/")
    rows = page.locator("#rollouts tbody tr")
    expect(rows).to_have_count(3)
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    table = {r.get_attribute("data-rollout"): r for r in rows.all()}
    assert set(table) == {"checkout", "payments", "search"}
    expect(table["checkout"].locator("td.weight")).to_have_attribute("data-weight", "50")
    expect(table["checkout"].locator("td").nth(3)).to_have_text("2 of 3")
    expect(table["payments"].locator(".badge")).to_have_text("rolled back")
    expect(table["payments"].locator("td.weight")).to_have_attribute("data-weight", "0")
    expect(table["search"].locator(".badge")).to_have_text("progressing")
    expect(table["payments"].locator("td.reason")).to_contain_text("rollback")
    page.screenshot(path=str(shots / "table.png"))
    # filter by phase, sort by weight
    page.select_option("#phase-filter", "rolled_back")
    expect(rows).to_have_count(1)
    page.select_option("#phase-filter", "")
    page.click("th[data-key=weight]")
    expect(rows.first).to_have_attribute("data-rollout", "payments")
    page.click("th[data-key=weight]")
    expect(rows.first).to_have_attribute("data-rollout", "checkout")
    no_page_errors(page)


def test_a_tick_moves_the_weight_on_screen_without_reload(live_engine: LiveEngine,
                                                          browser_page: Any,
                                                          shots: Path) -> None:
    live_engine.start(healthy("checkout", rps=FAST), ticks=3)  # at 20 %, about to promote
    page = browser_page
    page.goto(live_engine.server.url + "/#/rollouts/checkout")
    weight = page.locator("#weight-value")
    expect(weight).to_have_attribute("data-weight", "20")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    page.evaluate("window.__noReload = true")  # gone if the page reloads
    log_rows = page.locator("#decision-log tbody tr")
    expect(log_rows).to_have_count(3)
    live_engine.tick("checkout")  # the judge promotes: 20 -> 50
    assert live_engine.state("checkout").weight == 50
    expect(weight).to_have_attribute("data-weight", "50", timeout=10_000)
    expect(log_rows).to_have_count(4)
    expect(log_rows.first).to_contain_text("promote")
    assert page.evaluate("window.__noReload") is True
    # the weight chart and a check's band and evidence are drawn
    expect(page.locator("#charts .card")).to_have_count(3 + 2 * 3)
    assert page.locator("#charts path.series").count() >= 10
    assert page.locator("#charts polygon.band").count() >= 2
    # the sample-ratio check says what it plots: the canary's share against the router's
    # weight, and a mismatch e-value (issue 22, item 9)
    srm = page.locator("#charts .card", has_text="Check sample-ratio: estimate")
    expect(srm.locator("svg text", has_text="canary share of requests (%)")).to_have_count(1)
    expected = "expected: the router's canary weight"
    expect(srm.locator(f'path.series[data-label="{expected}"]')).to_have_count(1)
    srm_evidence = page.locator("#charts .card", has_text="Check sample-ratio: evidence")
    expect(srm_evidence).to_contain_text("sample-ratio mismatch e-value")
    expect(srm_evidence).not_to_contain_text("regression")
    page.screenshot(path=str(shots / "rollout.png"), full_page=True)
    # and the table, too, follows without reload
    page.click("text=← all rollouts")
    row = page.locator("#rollouts tbody tr[data-rollout=checkout] td.weight")
    expect(row).to_have_attribute("data-weight", "50")
    live_engine.tick("checkout")
    live_engine.tick("checkout")  # 50 -> 100 (promoting)
    expect(row).to_have_attribute("data-weight", "100", timeout=10_000)
    assert page.evaluate("window.__noReload") is True
    no_page_errors(page)


def test_promote_needs_the_token_and_acts_once(live_engine: LiveEngine, browser_page: Any,
                                               shots: Path) -> None:
    rid = live_engine.start(healthy("checkout"), ticks=2)  # holding at 20 % (step 1 of 3)
    page = browser_page
    page.goto(live_engine.server.url + "/#/rollouts/checkout")
    promote = page.locator("button[data-command=promote]")
    expect(promote).to_be_disabled()  # no token given: every action is off
    expect(page.locator("#action-status")).to_contain_text("API token")
    # a wrong token: the button works, the API refuses, the page says why
    page.fill("#token-input", "not-the-token")
    page.click("#token-form button[type=submit]")
    expect(promote).to_be_enabled()
    promote.click()
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text("Promote checkout #1")
    page.click("#confirm-ok")
    status = page.locator("#action-status")
    expect(status).to_contain_text("promote refused (401)")
    expect(status).to_contain_text("missing or wrong bearer token")
    page.screenshot(path=str(shots / "refused.png"))
    assert live_engine.store.pending_commands(rid) == []
    # cancel in the confirmation dialog sends nothing
    page.click("#token-set button")  # forget
    page.fill("#token-input", TOKEN)
    page.click("#token-form button[type=submit]")
    promote.click()
    page.click("#confirm button[value=cancel]")
    expect(page.locator("#confirm")).to_be_hidden()
    assert live_engine.store.pending_commands(rid) == []
    # the right token: queued once, shown as queued, applied by the next tick
    promote.click()
    page.click("#confirm-ok")
    expect(status).to_contain_text("promote accepted")
    expect(page.locator("#queued")).to_contain_text("promote queued")
    pending = live_engine.store.pending_commands(rid)
    assert [str(c.command) for c in pending] == ["promote"]
    live_engine.tick("checkout")
    assert live_engine.state("checkout").weight == 50  # one step, not two
    expect(page.locator("#weight-value")).to_have_attribute("data-weight", "50", timeout=10_000)
    expect(page.locator("#queued")).to_have_count(0)
    live_engine.tick("checkout")
    assert live_engine.state("checkout").weight == 50  # the command acted once
    page.screenshot(path=str(shots / "promoted.png"))
    # the token lives in this tab's sessionStorage only
    assert page.evaluate("sessionStorage.length") == 1
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []
    no_page_errors_except_refusal(page)


def no_page_errors_except_refusal(page: Any) -> None:
    # the browser logs the refused POST (401) as a failed resource load: that one is expected
    assert [e for e in page.errors if "401" not in e] == [], page.errors
    assert page.external == []


def test_a_paused_rollout_shows_its_banner_with_the_power_estimate(
        live_engine: LiveEngine, browser_page: Any, shots: Path) -> None:
    live_engine.start(healthy("checkout"), ticks=4)  # holds with a power estimate
    live_engine.command("checkout", Command.PAUSE)
    live_engine.tick("checkout")
    assert live_engine.state("checkout").phase is Phase.PAUSED
    page = browser_page
    page.goto(live_engine.server.url + "/#/rollouts/checkout")
    banner = page.locator("#banner")
    expect(banner).to_contain_text("Paused:")
    expect(banner).to_contain_text(re.compile(r"a regression would need about \d+ (s|min) more"))
    expect(page.locator("button[data-command=resume]")).to_be_disabled()  # no token yet
    expect(page.locator("#policy")).to_contain_text('"name": "checkout"')
    expect(page.locator(".links a")).to_have_attribute(
        "href", "https://grafana.example/d/canary?var-rollout=checkout")
    page.screenshot(path=str(shots / "paused.png"), full_page=True)
    # resumed from the page: the banner goes at the next tick, live
    page.fill("#token-input", TOKEN)
    page.click("#token-form button[type=submit]")
    page.click("button[data-command=resume]")
    page.click("#confirm-ok")
    expect(page.locator("#action-status")).to_contain_text("resume accepted")
    live_engine.tick("checkout")
    expect(page.locator("#banner")).to_have_count(0, timeout=10_000)
    no_page_errors(page)


def test_dark_mode_and_a_rolled_back_banner(live_engine: LiveEngine, browser_page: Any,
                                            shots: Path) -> None:
    live_engine.start(healthy("payments", canary_error=0.05), ticks=4)
    page = browser_page
    page.emulate_media(color_scheme="dark")
    page.goto(live_engine.server.url + "/#/rollouts/payments")
    expect(page.locator("#banner")).to_contain_text("Rolled back:")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(21, 23, 27)", background
    page.screenshot(path=str(shots / "dark.png"), full_page=True)
    no_page_errors(page)
