"""`canary demo`: two real rollouts on loopback, end to end, in a few minutes.

Owns the demo's orchestration:

- `LocalStack` starts, per rollout, the stable and the canary version of the sample service
  (`analyzer.demo.app`, one process each, own process group), a real nginx whose `upstream`
  include file the `nginx` router rewrites (`analyzer.demo.local_nginx.LocalNginx`), and one real
  Prometheus scraping every app every second (`analyzer.demo.local_prometheus.PrometheusServer`),
  each on a free loopback port; `stop()` ends all of them (also after Ctrl-C or SIGTERM);
- the policies `policies/demo-healthy.yaml` and `policies/demo-regressed.yaml` are loaded and
  validated as written, then the run-time addresses (ports, upstream file, nginx config,
  Prometheus URL) are put in with `model_copy`-style updates (`localize_policy`);
- a bounded load generator (`analyzer.demo.loadgen`) sends steady traffic through both nginx;
- after a stable-only warm-up (the judge's `baselineWindow`), the engine ticks both rollouts
  on the wall clock, in parallel, each through its own nginx; `DemoView` shows the live state
  (rich Live on a terminal, one line per decision otherwise);
- the engine's dashboard and HTTP API (`analyzer.daemon.api.ApiServer`, the same ASGI app as
  `canary run`) serve the demo's store on a free loopback port while the demo runs; its URL
  and a one-off API token (for the dashboard's buttons) are printed first;
- at the end, one report per rollout (`analyzer.offline.report.write_report`) and a summary.

Without nginx or Prometheus (or with `--fallback-simulate`) the same two policies run on the
`simulate` source with the same error rates and latencies as the sample service, and the
`dry-run` router, on a simulated clock, labelled as such everywhere.

The demo's statistics (error rates, traffic, steps) are chosen so that both outcomes happen
reliably within the time: see docs/demo.md for the numbers and the simulation behind them.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from analyzer.core.rollout import Command, Phase
from analyzer.daemon.api import ApiServer
from analyzer.daemon.engine import Engine
from analyzer.daemon.metrics import EngineMetrics
from analyzer.daemon.store import Store
from analyzer.demo.loadgen import LoadGenerator
from analyzer.demo.scenario import (
    ROLLOUTS,
    DemoOptions,
    load_demo_policies,
    simulated_policy,
)
from analyzer.demo.stack import LocalStack, missing_binaries
from analyzer.demo.view import DemoResult, DemoView, RolloutResult, RolloutView
from analyzer.policy import Policy

# --------------------------------------------------------------------------- running


class _Terminate(BaseException):
    """SIGTERM during the demo: unwinds like Ctrl-C so that everything is stopped."""


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Terminate()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def run_demo(opts: DemoOptions, console: Console | None = None) -> DemoResult:
    """Run both demo rollouts; everything started is stopped before this returns or raises."""
    console = console or Console()
    started = time.monotonic()
    policies = load_demo_policies(opts)
    missing = missing_binaries()
    if opts.fallback_simulate:
        mode, why = "simulated", "--fallback-simulate was given"
    elif missing:
        mode, why = "simulated", (f"{' and '.join(missing)} not installed (and `make demo` "
                                  "could not install them)")
    else:
        mode, why = "real", None
    out_dir = opts.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    db_path = out_dir / "demo.db"
    for suffix in ("", "-wal", "-shm"):  # the demo's own decision log of the previous run
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    store = Store(f"sqlite:///{db_path}")
    metrics = EngineMetrics()
    token = secrets.token_urlsafe(12)
    dashboard = ApiServer(store, metrics, token=token, port=0)
    dashboard.start()
    console.print(f"[bold]dashboard[/]: {dashboard.url}/  (live while the demo runs; API token "
                  f"for its buttons: {token})", soft_wrap=True)
    try:
        workdir = Path(tempfile.mkdtemp(prefix="canary-demo-"))
        stack: LocalStack | None = None
        load: LoadGenerator | None = None
        interrupted = False
        results: list[RolloutResult] = []
        try:
            with _sigterm_unwinds():
                try:
                    if mode == "real":
                        console.print(f"[bold]canary demo[/]: starting 4 sample-service "
                                      "processes, 2 nginx and Prometheus on loopback (work dir "
                                      f"{workdir}) ...", soft_wrap=True)
                        stack = LocalStack(workdir, list(zip(policies, ROLLOUTS, strict=True)))
                        stack.start()
                        policies = stack.policies
                        label = stack.describe()
                        console.print(label, soft_wrap=True)
                        load = LoadGenerator(
                            {p.policy.spec.target.service: p.nginx.url for p in stack.parts},
                            rps=opts.rps, duration=opts.limit + 60).start()
                    else:
                        console.print(f"[bold yellow]SIMULATED[/] demo: {why}. The same two "
                                      "policies run on the `simulate` source (the sample service's "
                                      "error rates and latencies) and the `dry-run` router: no "
                                      "traffic moves.", soft_wrap=True)
                        pairs = enumerate(zip(policies, ROLLOUTS, strict=True))
                        policies = [simulated_policy(p, r, opts.rps, seed=11 + i)
                                    for i, (p, r) in pairs]
                        label = ("SIMULATED: simulate source + dry-run router (no nginx, no "
                                 "Prometheus)")
                    results = _drive(opts, console, Engine(store, metrics=metrics), policies,
                                     mode, label, stack)
                except (KeyboardInterrupt, _Terminate):
                    interrupted = True
                    console.print("[yellow]interrupted: stopping everything the demo started[/]")
        finally:
            with _signals_ignored():  # a second Ctrl-C must not cut the clean-up short
                if load is not None:
                    load.stop(timeout=5)
                if stack is not None:
                    stack.stop()
                shutil.rmtree(workdir, ignore_errors=True)
        stats = load.stats() if load is not None else {}
        if not interrupted:
            results = [_with_report(r, store, out_dir) for r in results]
    finally:
        dashboard.stop()  # after the reports: the page shows how both rollouts ended
    store.dispose()
    return DemoResult(mode, why, tuple(results), time.monotonic() - started, out_dir,
                      f"sqlite:///{db_path}", stats, interrupted, dashboard_url=dashboard.url)


def _drive(opts: DemoOptions, console: Console, engine: Engine, policies: list[Policy],
           mode: str, label: str, stack: LocalStack | None) -> list[RolloutResult]:
    store = engine.store
    real = mode == "real"
    views = [RolloutView(p, r.expected) for p, r in zip(policies, ROLLOUTS, strict=True)]
    wall0 = time.monotonic()
    view = DemoView(views, label, lambda: time.monotonic() - wall0)
    live_wanted = console.is_terminal if opts.live is None else opts.live
    # Simulated mode runs on a simulated clock (the simulate source is seeded by the window,
    # so any clock gives the same data); `speed` only sets how fast the view moves.
    sim_now = datetime.now(UTC).replace(microsecond=0)

    def now() -> datetime:
        return datetime.now(UTC) if real else sim_now

    live = Live(view, console=console, refresh_per_second=4, transient=False) if live_wanted \
        else None
    with live if live is not None else contextlib.nullcontext():
        if real:
            assert stack is not None
            view.status = "waiting for Prometheus to scrape every version"
            stack.wait_scraped()
            warm = max(p.spec.analysis.baselineWindow.total_seconds() for p in policies) + 1
            view.status = (f"warm-up {warm:.0f}s: all traffic on stable; the judge picks its "
                           "latency bound from this window")
            _log(console, live, f"warm-up: {opts.rps:g} req/s per service, all on "
                 f"stable, for {warm:.0f}s (the policies' baselineWindow)")
            time.sleep(warm)
        for v in views:
            rec = store.create_rollout(v.policy, now())
            v.rollout_id = rec.id
            v.started = time.monotonic()
        view.status = "rolling out"
        interval = min(p.spec.analysis.interval for p in policies)
        limit = opts.limit
        t_start = now()
        deadline = time.monotonic() + limit
        active = list(views)
        while active:
            tick_at = now()
            for v in list(active):
                before = (v.phase, v.weight)
                out = engine.tick(v.rollout_id, tick_at)
                v.observe(out)
                if (v.phase, v.weight) != before and out.transition is not None:
                    rel = (tick_at - t_start).total_seconds()
                    _log(console, live, _event_line(v, before, rel))
                if v.phase.terminal or (v.phase is Phase.PAUSED and _needs_human(store, v)):
                    v.finished = (tick_at - t_start).total_seconds()
                    active.remove(v)
            if not active:
                break
            timed_out = (time.monotonic() > deadline) if real else (
                (tick_at - t_start).total_seconds() > limit)
            if timed_out:
                for v in active:
                    _log(console, live, f"{v.policy.name}: not finished after {limit:.0f}s;"
                         " aborting it (all traffic back to stable)")
                    store.add_command(v.policy.name, Command.ABORT, "canary-demo", now())
                    v.observe(engine.tick(v.rollout_id, now()))
                    v.finished = (now() - t_start).total_seconds()
                break
            if real:
                time.sleep(max(0.0, interval.total_seconds()
                               - (datetime.now(UTC) - tick_at).total_seconds()))
            else:
                if opts.speed > 0:
                    time.sleep(interval.total_seconds() / opts.speed)
                sim_now += interval
        view.status = "done"
    if live is None:
        for v in views:  # the final state once, for logs and CI
            console.print(view.panel(v))
    out = []
    for v in views:
        rec = store.get(v.rollout_id)
        out.append(RolloutResult(
            name=v.policy.name, rollout_id=v.rollout_id, phase=rec.phase, expected=v.expected,
            weight=rec.state.weight, seconds=v.finished or 0.0,
            ticks=len(store.ticks(v.rollout_id)), reason=v.reason, report=None,
            report_error=None))
    return out


def _needs_human(store: Store, v: RolloutView) -> bool:
    rec = store.get(v.rollout_id)
    return rec.state.pause_until is None


def _event_line(v: RolloutView, before: tuple[Phase, int], rel: float) -> str:
    phase, weight = before
    change = f"{weight}% → {v.weight}%" if weight != v.weight else f"{v.weight}%"
    if v.phase != phase:
        change += f", {phase} → {v.phase}"
    return f"[{rel:5.0f}s] {v.policy.name}: {change}: {v.reason}"


def _log(console: Console, live: Live | None, line: str) -> None:
    # Above the live panels on a terminal; one unbroken line in a log or CI output.
    console.print(Text(line), soft_wrap=live is None)


def _with_report(r: RolloutResult, store: Store, out_dir: Path) -> RolloutResult:
    try:
        from analyzer.offline.report import write_report
    except ImportError:
        return _replace(r, report_error="analyzer.offline.report is not available in this checkout")
    target = out_dir / r.name
    try:
        path = write_report(store, r.rollout_id, target)
    except Exception as e:  # a broken plot must not hide the demo's outcome
        return _replace(r, report_error=f"{type(e).__name__}: {e}")
    return _replace(r, report=Path(path))


def _replace(r: RolloutResult, **kw: Any) -> RolloutResult:
    from dataclasses import replace

    return replace(r, **kw)
