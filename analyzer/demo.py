"""`canary demo`: two real rollouts on loopback, end to end, in a few minutes.

Owns the demo's orchestration:

- `LocalStack` starts, per rollout, the stable and the canary version of the sample service
  (`analyzer.demo_app`, one process each, own process group), a real nginx whose `upstream`
  include file the `nginx` router rewrites (`analyzer.local.nginx.LocalNginx`), and one real
  Prometheus scraping every app every second (`analyzer.local.prometheus.PrometheusServer`),
  each on a free loopback port; `stop()` ends all of them (also after Ctrl-C or SIGTERM);
- the policies `policies/demo-healthy.yaml` and `policies/demo-regressed.yaml` are loaded and
  validated as written, then the run-time addresses (ports, upstream file, nginx config,
  Prometheus URL) are put in with `model_copy`-style updates (`localize_policy`);
- a bounded load generator (`analyzer.loadgen`) sends steady traffic through both nginx;
- after a stable-only warm-up (the judge's `baselineWindow`), the engine ticks both rollouts
  on the wall clock, in parallel, each through its own nginx; `DemoView` shows the live state
  (rich Live on a terminal, one line per decision otherwise);
- at the end, one report per rollout (`analyzer.report.write_report`) and a summary.

Without nginx or Prometheus (or with `--fallback-simulate`) the same two policies run on the
`simulate` source with the same error rates and latencies as the sample service, and the
`dry-run` router, on a simulated clock, labelled as such everywhere.

The demo's statistics (error rates, traffic, steps) are chosen so that both outcomes happen
reliably within the time: see docs/demo.md for the numbers and the simulation behind them.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import requests
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from analyzer.engine import Engine, TickOutcome
from analyzer.loadgen import LoadGenerator, TargetStats
from analyzer.local.nginx import LocalNginx
from analyzer.local.prometheus import PrometheusError, PrometheusServer, find_binary, free_port
from analyzer.policy import Policy, load_policy
from analyzer.rollout import Command, Phase
from analyzer.routers.base import RouterError
from analyzer.routers.nginx_local import render_upstream
from analyzer.stats.latency import add_histograms, interpolate_quantile
from analyzer.store import Store
from analyzer.types import Decision, Histogram, Samples, VersionSample

REPO_POLICIES = Path(__file__).resolve().parent.parent / "policies"

# --------------------------------------------------------------------------- the scenario


@dataclass(frozen=True)
class VersionProfile:
    """How one version of the sample service behaves (the app's flags, the simulator's figures)."""

    error_rate: float
    latency_median: float  # seconds
    latency_p99: float  # seconds


#: v1 and the healthy v2: 3 % errors (see the policy comments for why so many), 20 ms median,
#: 150 ms p99. The regressed v3: 4x the errors and a 3x slower tail.
STABLE = VersionProfile(error_rate=0.03, latency_median=0.020, latency_p99=0.150)
HEALTHY = STABLE
REGRESSED = VersionProfile(error_rate=0.12, latency_median=0.020, latency_p99=0.450)


@dataclass(frozen=True)
class DemoRollout:
    """One rollout of the demo: its policy file, how its two versions behave, what must happen."""

    policy_file: str
    stable: VersionProfile
    canary: VersionProfile
    expected: Phase


ROLLOUTS: tuple[DemoRollout, ...] = (
    DemoRollout("demo-healthy.yaml", STABLE, HEALTHY, Phase.SUCCEEDED),
    DemoRollout("demo-regressed.yaml", STABLE, REGRESSED, Phase.ROLLED_BACK),
)

#: `--short` (CI): fewer steps, a shorter soak per step and a shorter stable-only warm-up.
SHORT_STEPS = [25, 50, 100]
SHORT_MIN_STEP = "8s"
SHORT_BASELINE = "6s"


@dataclass(frozen=True)
class DemoOptions:
    """What `canary demo` was asked for."""

    short: bool = False
    out_dir: Path = Path("out")
    fallback_simulate: bool = False
    policies_dir: Path = REPO_POLICIES
    rps: float = 250.0  # per service, through its nginx
    time_limit: float | None = None  # seconds for the rollouts; default by mode
    speed: float = 8.0  # simulated mode: simulated seconds per real second (0: no sleeping)
    live: bool | None = None  # rich Live; default: when the console is a terminal

    @property
    def limit(self) -> float:
        if self.time_limit is not None:
            return self.time_limit
        return 100.0 if self.short else 260.0


# --------------------------------------------------------------------------- policies


def load_demo_policies(opts: DemoOptions) -> list[Policy]:
    """The demo policies as written (validated), shortened for `--short`."""
    out = []
    for r in ROLLOUTS:
        policy = load_policy(opts.policies_dir / r.policy_file)
        if opts.short:
            policy = _update(policy, ("spec", "strategy", "steps"), SHORT_STEPS)
            policy = _update(policy, ("spec", "analysis", "minStepDuration"), SHORT_MIN_STEP)
            policy = _update(policy, ("spec", "analysis", "baselineWindow"), SHORT_BASELINE)
        out.append(policy)
    return out


def _update(policy: Policy, path: Sequence[str], value: Any) -> Policy:
    """A copy of `policy` with one field replaced, validated again (pydantic model_copy does
    not validate; dumping and validating keeps every rule of the policy model)."""
    data = policy.model_dump(mode="json", exclude_none=True)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return Policy.model_validate(data)


def localize_policy(policy: Policy, *, upstream_file: Path, nginx_config: Path,
                    stable_server: str, canary_server: str, prometheus_url: str) -> Policy:
    """The policy pointed at this run's loopback stack (ports are only known at run time)."""
    p = _update(policy, ("spec", "router", "upstreamFile"), str(upstream_file))
    p = _update(p, ("spec", "router", "nginxConfig"), str(nginx_config))
    p = _update(p, ("spec", "router", "stableServer"), stable_server)
    p = _update(p, ("spec", "router", "canaryServer"), canary_server)
    return _update(p, ("spec", "metrics", "address"), prometheus_url)


def simulated_policy(policy: Policy, rollout: DemoRollout, rps: float, seed: int) -> Policy:
    """The same rollout on the simulate source (the sample service's figures) and dry-run."""

    def figures(v: VersionProfile) -> dict[str, Any]:
        return {"errorRate": v.error_rate, "latencyMedian": f"{v.latency_median * 1000:g}ms",
                "latencyP99": f"{v.latency_p99 * 1000:g}ms"}

    p = _update(policy, ("spec", "router"), {"provider": "dry-run"})
    return _update(p, ("spec", "metrics"), {
        "source": "simulate", "rps": rps, "seed": seed,
        "stable": figures(rollout.stable), "canary": figures(rollout.canary),
    })


# --------------------------------------------------------------------------- the local stack


def missing_binaries() -> list[str]:
    """System programs the real demo needs and this machine lacks."""
    missing = []
    if find_binary("prometheus") is None:
        missing.append("prometheus")
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        missing.append("nginx")
    return missing


class DemoError(RuntimeError):
    """The local stack could not be set up (the message says which part and why)."""


class AppProcess:
    """One version of the sample service in its own process group."""

    def __init__(self, version: str, profile: VersionProfile, log: Path, seed: int) -> None:
        self.version = version
        self.port = free_port()
        self.log_path = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "analyzer.demo_app", "--port", str(self.port),
             "--version", version, "--error-rate", str(profile.error_rate),
             "--latency-median", str(profile.latency_median),
             "--latency-p99", str(profile.latency_p99), "--seed", str(seed),
             "--parent-pid", str(os.getpid())],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: a terminal's Ctrl-C does not race our stop
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DemoError(f"sample service {self.version} exited at start: "
                                f"{self.log_path.read_text(errors='replace')[-500:]}")
            try:
                if requests.get(f"http://{self.address}/healthz", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise DemoError(f"sample service {self.version} did not answer on {self.address}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


@dataclass
class StackRollout:
    """What the stack runs for one rollout."""

    policy: Policy
    stable: AppProcess
    canary: AppProcess
    nginx: LocalNginx


class LocalStack:
    """Sample services, one nginx per rollout and one Prometheus, all on loopback.

    `start()` brings everything up (or raises DemoError after stopping what it started);
    `stop()` is idempotent and stops in reverse order.
    """

    def __init__(self, workdir: Path, rollouts: Sequence[tuple[Policy, DemoRollout]]) -> None:
        self.workdir = workdir
        self.rollouts = list(rollouts)
        self.parts: list[StackRollout] = []
        self.apps: list[AppProcess] = []
        self.nginxes: list[LocalNginx] = []
        self.prometheus: PrometheusServer | None = None
        self.policies: list[Policy] = []

    def start(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        deadline = time.monotonic() + 20
        for i, (policy, r) in enumerate(self.rollouts):
            t = policy.spec.target
            for role, version, profile in (("stable", t.stable, r.stable),
                                           ("canary", t.canary, r.canary)):
                self.apps.append(AppProcess(
                    version, profile, self.workdir / f"{t.service}-{role}-{version}.log",
                    seed=1000 * i + len(self.apps)))
        for app in self.apps:
            app.wait_ready(deadline)
        scrape = []
        for i, (policy, _r) in enumerate(self.rollouts):
            t = policy.spec.target
            stable, canary = self.apps[2 * i], self.apps[2 * i + 1]
            router = policy.spec.router
            name = getattr(router, "upstreamName", f"{t.service}_backend")
            upstream = self.workdir / f"{t.service}-upstream.conf"
            # The router owns this file from the first tick on; before, all traffic to stable.
            upstream.write_text(render_upstream(name, stable.address, canary.address, 0))
            ndir = self.workdir / f"nginx-{t.service}"
            ndir.mkdir(parents=True, exist_ok=True)
            nginx = LocalNginx(ndir, upstream, name)
            try:
                nginx.start()
            except RouterError as e:
                raise DemoError(f"nginx for {t.service}: {e}") from None
            self.nginxes.append(nginx)
            self.parts.append(StackRollout(policy, stable, canary, nginx))
            scrape.append({
                "job_name": f"{t.service}",
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "static_configs": [{
                    "targets": [stable.address, canary.address],
                    # As a Kubernetes service discovery would: the target says which service.
                    "labels": {"service": t.service, "namespace": t.namespace},
                }],
            })
        self.prometheus = PrometheusServer(self.workdir / "prometheus", scrape,
                                           scrape_interval="1s")
        try:
            self.prometheus.start()
        except PrometheusError as e:
            raise DemoError(str(e)) from None
        for part in self.parts:
            part.policy = localize_policy(
                part.policy, upstream_file=part.nginx.upstream_file,
                nginx_config=part.nginx.config_path, stable_server=part.stable.address,
                canary_server=part.canary.address, prometheus_url=self.prometheus.url)
        self.policies = [p.policy for p in self.parts]

    def wait_scraped(self, timeout: float = 20.0) -> None:
        """Until Prometheus has every app's request counter (the judge needs both versions)."""
        assert self.prometheus is not None
        want = {(p.policy.spec.target.service, v) for p in self.parts
                for v in (p.policy.spec.target.stable, p.policy.spec.target.canary)}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                r = requests.get(f"{self.prometheus.url}/api/v1/query", timeout=2, params={
                    "query": "count by (service, version) (http_requests_total)"})
                have = {(s["metric"].get("service"), s["metric"].get("version"))
                        for s in r.json()["data"]["result"]}
                if want <= have:
                    return
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.25)
        raise DemoError(f"Prometheus at {self.prometheus.url} did not scrape every sample "
                        f"service within {timeout:g}s (see {self.workdir}/prometheus)")

    def stop(self) -> None:
        for nginx in reversed(self.nginxes):
            nginx.stop()
        self.nginxes.clear()
        if self.prometheus is not None:
            self.prometheus.stop()
            self.prometheus = None
        for app in reversed(self.apps):
            app.stop()
        self.apps.clear()

    def describe(self) -> str:
        parts = [f"{p.policy.spec.target.service} via nginx :{p.nginx.port}" for p in self.parts]
        prom = f"Prometheus :{self.prometheus.port}" if self.prometheus else "Prometheus"
        return "real nginx + Prometheus on loopback: " + ", ".join(parts) + f", {prom}"


# --------------------------------------------------------------------------- the view


@dataclass
class RolloutView:
    """What the terminal shows of one rollout (updated after every tick)."""

    policy: Policy
    expected: Phase
    rollout_id: int = 0
    phase: Phase = Phase.PENDING
    weight: int = 0
    step: int = 0
    decision: Decision | None = None
    action: str = "-"  # what the last tick did: start, hold, promote, rollback, ...
    reason: str = "waiting for the first tick"
    recent: deque[Samples] = field(default_factory=lambda: deque(maxlen=5))
    started: float = 0.0
    finished: float | None = None

    def observe(self, out: TickOutcome) -> None:
        t = out.transition
        if t is not None:
            self.phase = t.after.phase
            self.weight = t.after.weight
            self.step = t.after.step
            self.reason = t.reason
            self.action = t.action
        if out.decision is not None:
            self.decision = out.decision
        if out.samples is not None and out.samples.ok:
            self.recent.append(out.samples)

    def version_figures(self, role: str) -> tuple[float | None, float | None, float | None]:
        """(requests/s, error rate, p99 in seconds) over the last few windows."""
        n = errors = 0
        hist: Histogram | None = None
        seconds = 0.0
        for s in self.recent:
            v: VersionSample | None = getattr(s, role)
            seconds += (s.t1 - s.t0).total_seconds()
            if v is None:
                continue
            n += v.requests
            errors += v.errors
            hist = add_histograms(hist, v.latency)
        rate = n / seconds if seconds > 0 else None
        err = errors / n if n else None
        p99 = interpolate_quantile(hist, 0.99) if hist is not None and hist.total else None
        return rate, err, p99


def _fmt(x: float | None, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "inf"
    return format(x, spec)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{1000 * x:.0f} ms"


_PHASE_STYLE = {
    Phase.SUCCEEDED: "bold green", Phase.ROLLED_BACK: "bold red", Phase.FAILED: "bold red",
    Phase.PAUSED: "yellow", Phase.PROGRESSING: "cyan", Phase.PROMOTING: "green",
    Phase.PENDING: "dim",
}
_ACTION_STYLE = {"promote": "green", "succeed": "bold green", "rollback": "bold red",
                 "fail": "bold red", "hold": "yellow", "pause": "yellow", "start": "cyan"}


class DemoView:
    """The live terminal view: a header and one panel per rollout."""

    def __init__(self, rollouts: list[RolloutView], mode: str, clock: Callable[[], float]) -> None:
        self.rollouts = rollouts
        self.mode = mode
        self.clock = clock
        self.status = "starting"

    def __rich__(self) -> RenderableType:
        elapsed = self.clock()
        head = Text.assemble(("Canary Analyzer demo", "bold"), "  ", (self.mode, "magenta"),
                             f"  [{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] ",
                             (self.status, "dim"))
        return Group(head, *(self.panel(r) for r in self.rollouts))

    def panel(self, r: RolloutView) -> Panel:
        t = r.policy.spec.target
        steps = [s for s in r.policy.spec.strategy.weight_steps() if isinstance(s, int)]
        bar_len = 20
        filled = round(bar_len * r.weight / 100)
        top = Text.assemble(
            ("phase ", "dim"), (str(r.phase), _PHASE_STYLE.get(r.phase, "")),
            ("   weight ", "dim"), ("█" * filled, "cyan"), ("░" * (bar_len - filled), "dim"),
            f" {r.weight:3d}%", ("   steps ", "dim"), "→".join(str(w) for w in steps) + "%",
        )
        versions = Table(box=None, pad_edge=False, show_edge=False, expand=False)
        for col in ("version", "req/s", "error rate", "p99"):
            versions.add_column(col, justify="left" if col == "version" else "right",
                                style="bold" if col == "version" else None)
        for role, name in (("stable", t.stable), ("canary", t.canary)):
            rate, err, p99 = r.version_figures(role)
            versions.add_row(f"{name} ({role})", _fmt(rate, ".0f"), _pct(err), _ms(p99))
        checks = Table(box=None, pad_edge=False, show_edge=False)
        for col in ("check", "outcome", "estimate [CI]", "evidence"):
            checks.add_column(col)
        if r.decision is not None:
            for v in r.decision.verdicts:
                ci = v.confidence_interval
                est = _fmt(v.estimate)
                if ci is not None:
                    est += f" [{_fmt(ci.low)}, {_fmt(ci.high)}]"
                ev = _evidence(v.details, v.evidence, v.evidence_kind, v.threshold)
                style = {"regression": "red", "ok": "green"}.get(str(v.outcome), "yellow")
                checks.add_row(v.check, Text(str(v.outcome), style=style), est, ev)
        sentence = Text.assemble(("decision ", "dim"),
                                 (r.action.upper(), _ACTION_STYLE.get(r.action, "")), ": ",
                                 r.reason)
        title = (f"[bold]{r.policy.name}[/]  {t.service} {t.stable} → {t.canary}  "
                 f"[dim](expected: {'promote' if r.expected is Phase.SUCCEEDED else 'roll back'})"
                 "[/]")
        return Panel(Group(top, versions, checks, sentence), title=title, title_align="left",
                     border_style=_PHASE_STYLE.get(r.phase, "white").replace("bold ", ""))


def _evidence(details: dict[str, Any], evidence: float | None, kind: str | None,
              threshold: float | None) -> str:
    if "e_regression" in details:
        need = f", need {_fmt(threshold)}" if threshold else ""
        ok = details.get("e_ok", details.get("e_noninferiority"))
        return f"regression e={_fmt(details['e_regression'], '.2g')}, ok e={_fmt(ok, '.2g')}{need}"
    if evidence is None:
        return "-"
    return f"{kind or 'evidence'} {_fmt(evidence)}"


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class RolloutResult:
    name: str
    rollout_id: int
    phase: Phase
    expected: Phase
    weight: int
    seconds: float  # from the first tick to the end (simulated seconds in simulated mode)
    ticks: int
    reason: str
    report: Path | None
    report_error: str | None

    @property
    def as_expected(self) -> bool:
        return self.phase is self.expected


@dataclass(frozen=True)
class DemoResult:
    mode: str  # "real" or "simulated"
    mode_reason: str | None  # why simulated
    rollouts: tuple[RolloutResult, ...]
    seconds: float  # wall clock, set-up to tear-down
    out_dir: Path
    db_url: str
    load: dict[str, TargetStats]
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(r.as_expected for r in self.rollouts)


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
    workdir = Path(tempfile.mkdtemp(prefix="canary-demo-"))
    stack: LocalStack | None = None
    load: LoadGenerator | None = None
    interrupted = False
    results: list[RolloutResult] = []
    try:
        with _sigterm_unwinds():
            try:
                if mode == "real":
                    console.print(f"[bold]canary demo[/]: starting 4 sample-service processes, "
                                  f"2 nginx and Prometheus on loopback (work dir {workdir}) ...",
                                  soft_wrap=True)
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
                    policies = [simulated_policy(p, r, opts.rps, seed=11 + i)
                                for i, (p, r) in enumerate(zip(policies, ROLLOUTS, strict=True))]
                    label = "SIMULATED: simulate source + dry-run router (no nginx, no Prometheus)"
                results = _drive(opts, console, store, policies, mode, label, stack)
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
    store.dispose()
    return DemoResult(mode, why, tuple(results), time.monotonic() - started, out_dir,
                      f"sqlite:///{db_path}", stats, interrupted)


def _drive(opts: DemoOptions, console: Console, store: Store, policies: list[Policy],
           mode: str, label: str, stack: LocalStack | None) -> list[RolloutResult]:
    real = mode == "real"
    views = [RolloutView(p, r.expected) for p, r in zip(policies, ROLLOUTS, strict=True)]
    wall0 = time.monotonic()
    view = DemoView(views, label, lambda: time.monotonic() - wall0)
    live_wanted = console.is_terminal if opts.live is None else opts.live
    engine = Engine(store)
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
        from analyzer.report import write_report
    except ImportError:
        return _replace(r, report_error="analyzer.report is not available in this checkout")
    target = out_dir / r.name
    try:
        path = write_report(store, r.rollout_id, target)
    except Exception as e:  # a broken plot must not hide the demo's outcome
        return _replace(r, report_error=f"{type(e).__name__}: {e}")
    return _replace(r, report=Path(path))


def _replace(r: RolloutResult, **kw: Any) -> RolloutResult:
    from dataclasses import replace

    return replace(r, **kw)


def summary_table(result: DemoResult) -> Table:
    """The end-of-demo table: outcome per rollout against the expected one, time, ticks."""
    table = Table(title=f"canary demo ({result.mode}) finished in {result.seconds:.0f}s",
                  title_justify="left")
    for col in ("rollout", "outcome", "expected", "weight", "took", "ticks"):
        table.add_column(col, no_wrap=True)
    for r in result.rollouts:
        style = "green" if r.as_expected else "red"
        table.add_row(r.name, Text(str(r.phase), style=style), str(r.expected),
                      f"{r.weight}%", f"{r.seconds:.0f}s", str(r.ticks))
    return table


__all__ = [
    "ROLLOUTS",
    "DemoOptions",
    "DemoResult",
    "DemoRollout",
    "LocalStack",
    "RolloutResult",
    "load_demo_policies",
    "localize_policy",
    "missing_binaries",
    "run_demo",
    "simulated_policy",
    "summary_table",
]
