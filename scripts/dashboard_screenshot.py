"""Take the README's dashboard screenshot (docs/img/dashboard.png) from a live `canary demo`.

    python scripts/dashboard_screenshot.py [--simulated] [--out docs/img/dashboard.png]

Runs the short demo (real nginx + Prometheus when installed, else simulated), opens its
dashboard in Debian's Chromium (Playwright, the system binary: nothing is downloaded) and
shoots the healthy rollout's page once it has succeeded, and the rollouts table.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analyzer.demo import run as demo
from analyzer.demo.scenario import DemoOptions
from tests.support.requires import CHROMIUM_ARGS


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--simulated", action="store_true", help="the simulated demo")
    ap.add_argument("--out", type=Path, default=Path("docs/img/dashboard.png"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="canary-shot-"))
    log = io.StringIO()
    opts = DemoOptions(short=True, out_dir=work / "out", live=False, speed=2,
                       fallback_simulate=args.simulated)
    runner = threading.Thread(target=demo.run_demo, args=(opts, Console(file=log, width=200)),
                              daemon=True)
    runner.start()
    deadline = time.monotonic() + 120
    while not (m := re.search(r"dashboard: (http://127\.0\.0\.1:\d+)/", log.getvalue())):
        if time.monotonic() > deadline or not runner.is_alive():
            print(log.getvalue(), file=sys.stderr)
            return 1
        time.sleep(0.1)
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(work / "profile"), executable_path="/usr/bin/chromium", headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1440, "height": 1000})
        page = ctx.new_page()
        page.goto(m[1] + "/")
        expect(page.locator("tr[data-rollout=demo-regressed] .badge")).to_have_text(
            "rolled back", timeout=150_000)
        page.goto(m[1] + "/#/rollouts/demo-healthy")
        expect(page.locator("h1 .badge")).to_have_text("succeeded", timeout=150_000)
        time.sleep(1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out))
        page.goto(m[1] + "/")
        expect(page.locator("#rollouts tbody tr")).to_have_count(2)
        page.screenshot(path=str(args.out.with_name(args.out.stem + "-table.png")),
                        clip={"x": 0, "y": 0, "width": 1440, "height": 290})
        ctx.close()
    runner.join(180)
    print(f"wrote {args.out} and {args.out.with_name(args.out.stem + '-table.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
