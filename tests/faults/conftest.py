"""Fixtures of the fault suite: the fault ledger (the summary table), the decision-log audit,
policies, the real Kubernetes API server seen through a kubeconfig (via a fault-injecting
proxy, as deploy/'s ServiceAccount), a live exporter scraped by a real Prometheus, a slow HTTP
proxy, a throwaway PostgreSQL cluster and a tiny tmpfs.

Every case runs a real rollout (mostly `canary run` as a subprocess, as in production), injects
a real process-level fault while it runs, and reports to the session's `FaultLedger`: the fault,
how many times it was injected, how many rollouts finished as they should, and how many
decisions the log lost (a gap in the tick numbers, a tick that does not start where the
previous one ended, a store row count that disagrees with `rollouts.tick_seq`). The ledger is
printed at the end of the run (`pytest_terminal_summary`) and, with `CANARY_FAULTS_TABLE=path`,
written as Markdown (docs/reliability.md carries a copy).

`CANARY_SOAK=1` (`make soak`) injects more faults per case.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from analyzer.core.rollout import Phase
from analyzer.daemon.store import Store
from analyzer.demo.local_postgres import LocalPostgres, PostgresMissing
from analyzer.policy import Policy
from analyzer.routers.factory import build_router
from tests.engine.conftest import Daemon, daemon_env, free_port, wait_for
from tests.routers.conftest import DESTINATION_RULE, VIRTUAL_SERVICE
from tests.support import requires
from tests.support.fault_proxy import FaultProxy
from tests.support.kube_cluster import KubeApiError, KubeCluster
from tests.support.kube_deploy import ENGINE_NAMESPACE, ENGINE_SERVICE_ACCOUNT, EngineRbac
from tests.support.kube_objects import ClusterObjects, ObjectHistory

SOAK = os.environ.get("CANARY_SOAK") == "1"
NS = "shop"

__all__ = ["CHAOS_TABLE", "SOAK", "Daemon", "daemon_env", "free_port", "wait_for"]


# --------------------------------------------------------------------------- the ledger


@dataclass
class FaultRow:
    fault: str
    injected: int = 0
    rollouts: int = 0
    correct: int = 0
    lost: int = 0


@dataclass
class FaultLedger:
    """What the suite injected and what survived it (one row per fault kind)."""

    rows: dict[str, FaultRow] = field(default_factory=dict)

    def record(self, fault: str, *, injected: int, correct: bool, lost: int) -> None:
        row = self.rows.setdefault(fault, FaultRow(fault))
        row.injected += injected
        row.rollouts += 1
        row.correct += int(correct)
        row.lost += lost

    def markdown(self) -> str:
        lines = ["| fault | times injected | rollouts finished correctly | decisions lost |",
                 "|---|---:|---:|---:|"]
        for r in self.rows.values():
            lines.append(f"| {r.fault} | {r.injected} | {r.correct}/{r.rollouts} | {r.lost} |")
        return "\n".join(lines) + "\n"


LEDGER = pytest.StashKey[FaultLedger]()
CHAOS_TABLE = pytest.StashKey[str]()  # the fencing chaos test's audit (test_fencing_chaos.py)


@pytest.fixture(scope="session")
def ledger(request: pytest.FixtureRequest) -> FaultLedger:
    return request.config.stash.setdefault(LEDGER, FaultLedger())


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int,
                            config: pytest.Config) -> None:
    book = config.stash.get(LEDGER, None)
    if book is None or not book.rows:
        return
    terminalreporter.write_sep("=", "fault suite" + (" (soak)" if SOAK else ""))
    for line in book.markdown().splitlines():
        terminalreporter.write_line(line)
    chaos = config.stash.get(CHAOS_TABLE, None)
    if chaos:
        terminalreporter.write_line("")
        terminalreporter.write_line("router writes audited against the decision log (chaos):")
        for line in chaos.splitlines():
            terminalreporter.write_line(line)
    target = os.environ.get("CANARY_FAULTS_TABLE")
    if target:
        Path(target).write_text(book.markdown())


# --------------------------------------------------------------------------- the log audit


@dataclass(frozen=True)
class LogAudit:
    """The decision log of one rollout, checked."""

    ticks: int
    gaps: int  # tick numbers missing
    breaks: int  # ticks that do not start where the previous one ended
    seq_mismatch: int  # rollouts.tick_seq != the last tick row (a half-written tick)
    orphans: int  # weight changes naming a tick that does not exist
    promotions_without_data: int
    phase: Phase
    weight: int  # the store's final weight
    problems: tuple[str, ...]

    @property
    def lost(self) -> int:
        return self.gaps + self.breaks + self.seq_mismatch + self.orphans

    def finished_correctly(self, router_weight: int | None) -> bool:
        """What the summary counts as a rollout finished correctly: it succeeded, its
        decision log is complete, and the router holds the weight the store recorded."""
        return (self.phase is Phase.SUCCEEDED and not self.problems
                and router_weight == self.weight)


def audit_log(store: Store, rollout_id: int) -> LogAudit:
    rec = store.get(rollout_id)
    ticks = store.ticks(rollout_id)
    problems: list[str] = []
    seqs = [t.seq for t in ticks]
    gaps = (max(seqs) - len(set(seqs))) if seqs else 0
    if gaps or len(seqs) != len(set(seqs)):
        problems.append(f"tick numbers {seqs}")
    breaks = 0
    for a, b in itertools.pairwise(ticks):
        if (b.phase_before, b.step_before, b.weight_before) != (
                a.phase_after, a.step_after, a.weight_after):
            breaks += 1
            problems.append(f"tick {b.seq} does not start where tick {a.seq} ended")
    mismatch = int(rec.tick_seq != (seqs[-1] if seqs else 0))
    if mismatch:
        problems.append(f"rollouts.tick_seq {rec.tick_seq} but last tick {seqs[-1:]}")
    known = set(seqs)
    orphans = sum(1 for w in store.weight_changes(rollout_id)
                  if w.tick_seq is not None and w.tick_seq not in known)
    if orphans:
        problems.append(f"{orphans} weight change(s) of ticks that were never committed")
    no_data = 0
    for t in ticks:
        if t.decision != "promote":  # the judge's promote (a manual promote has no decision)
            continue
        s = t.samples or {}
        if s.get("no_data_reason") or not (s.get("canary") or {}).get("requests"):
            no_data += 1
            problems.append(f"tick {t.seq} promoted without data: {s.get('no_data_reason')}")
    terminal = [t for t in ticks if Phase(t.phase_after).terminal]
    if len(terminal) > 1:
        problems.append(f"{len(terminal)} ticks finished the rollout")
        breaks += len(terminal) - 1
    return LogAudit(len(ticks), gaps, breaks, mismatch, orphans, no_data, rec.phase,
                    rec.state.weight, tuple(problems))


# --------------------------------------------------------------------------- policies


SIMULATE = """
  metrics:
    source: simulate
    allowSimulatedMetrics: true  # fault cases drive real routers on invented traffic
    rps: 10000
    seed: 7
    stable: {errorRate: 0.01}
    canary: {errorRate: 0.01}"""


def prometheus_source(address: str, *, timeout: str = "2s", retries: int = 0) -> str:
    return f"""
  metrics:
    source: prometheus
    address: {address}
    preset: generic
    timeout: {timeout}
    retries: {retries}"""


def fault_policy(name: str, *, metrics: str = SIMULATE, steps: str = "[20, 50, 100]",
                 interval: str = "1s", min_step: str = "2s", data_failure_limit: int = 1000,
                 extra: str = "") -> str:
    """A policy that decides within a few ticks per step, routed by Istio through the real API
    server. Data failures hold for a long time (the cases assert the hold and the
    resumption, not the onDataFailure pause)."""
    return f"""
apiVersion: canary-analyzer.io/v1alpha1
kind: RolloutPolicy
metadata: {{name: {name}}}
spec:
  target: {{namespace: {NS}, service: checkout, stable: v1, canary: v2}}
  router: {{provider: istio, virtualService: checkout, destinationRule: checkout,
           stableSubset: stable, canarySubset: canary}}
  strategy: {{steps: {steps}}}
  analysis: {{interval: {interval}, minStepDuration: {min_step}, maxStepDuration: 10m,
             baselineWindow: 30s}}{metrics}
  checks: [{{type: error-rate, tolerance: 0.5}}]
  decision: {{alpha: 0.001, minSamples: 100, checkSampleRatio: false,
             dataFailureLimit: {data_failure_limit}}}
{extra}
"""


# --------------------------------------------------------------------------- the API server

VS = ("networking.istio.io/v1", "VirtualService", "checkout")
DR = ("networking.istio.io/v1", "DestinationRule", "checkout")


class Kube:
    """The real API server (the session's `kube_cluster`) holding the Istio objects of the fault
    policies in namespace `shop`, reached through `proxy` (a FaultProxy: 500s, 409 storms,
    delays on demand) with a real token of deploy/'s ServiceAccount: `kubeconfig` for a
    `canary run` subprocess, `api_client()` for an engine in this process. `history` follows
    the VirtualService with a watch: every version the server stored."""

    def __init__(self, cluster: KubeCluster, proxy: FaultProxy, token: str,
                 kubeconfig: Path) -> None:
        self.cluster, self.proxy, self.token, self.kubeconfig = cluster, proxy, token, kubeconfig
        self.objects = ClusterObjects(cluster, NS)
        self.history: ObjectHistory | None = None

    def reseed(self) -> None:
        """Fresh VirtualService and DestinationRule (a previous case's are deleted)."""
        for ref in (VS, DR):
            self.objects.delete(*ref)
        for obj in (VIRTUAL_SERVICE, DESTINATION_RULE):
            for _ in range(100):  # a deleted object can linger for a moment
                try:
                    self.objects.seed(obj)
                    break
                except KubeApiError as exc:
                    if exc.status != 409:
                        raise
                    time.sleep(0.05)
        self.history = self.objects.watch(*VS)

    def objects_now(self) -> list[dict[str, Any]]:
        return [o for o in (self.objects.get(*VS), self.objects.get(*DR)) if o is not None]

    def weight(self, policy: Policy) -> int:
        """The canary weight the server holds now (read directly as the admin, not through the
        proxy: no injected fault)."""
        router = build_router(policy, current_object=self.objects_now())
        return int(router.get_weight().canary_weight)

    def versions(self) -> list[dict[str, Any]]:
        """Every version of the VirtualService the server stored since reseed(), in order."""
        assert self.history is not None
        return self.history.versions()

    def api_client(self) -> Any:
        return self.cluster.api_client(host=self.proxy.url, token=self.token)

    def env(self, **extra: str) -> dict[str, str]:
        return daemon_env(KUBECONFIG=str(self.kubeconfig), **extra)

    def close(self) -> None:
        if self.history is not None:
            self.history.stop()


@pytest.fixture
def kube(tmp_path: Path, kube_cluster: KubeCluster, kube_engine_rbac: EngineRbac,
         kube_fault_proxy: FaultProxy) -> Iterator[Kube]:
    with contextlib.suppress(KubeApiError):  # one `shop` namespace for the whole session
        kube_cluster.create_namespace(NS)
    token = kube_cluster.service_account_token(ENGINE_NAMESPACE, ENGINE_SERVICE_ACCOUNT)
    config = kube_cluster.write_kubeconfig(tmp_path / "kubeconfig", server=kube_fault_proxy.url,
                                           token=token)
    k = Kube(kube_cluster, kube_fault_proxy, token, config)
    k.reseed()
    try:
        yield k
    finally:
        k.close()


# --------------------------------------------------------------------------- live traffic


class LiveExporter:
    """An application's /metrics, live: counters of the `generic` preset that grow with wall
    time at `rps`, split between stable (v1) and canary (v2) by `weight()` percent, with the
    same error rate for both (a healthy canary). A real Prometheus scrapes it."""

    def __init__(self, rps: float = 20000, error_rate: float = 0.02) -> None:
        self.rps, self.error_rate = rps, error_rate
        self.weight: Callable[[], int] = lambda: 0
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._req = {"v1": 0.0, "v2": 0.0}
        me = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = me.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    def render(self) -> str:
        with self._lock:
            now = time.monotonic()
            dt, self._last = now - self._last, now
            try:
                w = max(0, min(100, int(self.weight())))
            except Exception:
                w = 0
            self._req["v2"] += self.rps * dt * w / 100
            self._req["v1"] += self.rps * dt * (100 - w) / 100
            lines = ["# TYPE http_requests_total counter"]
            for v, n in self._req.items():
                total = int(n)
                errors = int(n * self.error_rate)
                for code, c in (("200", total - errors), ("500", errors)):
                    lines.append(f'http_requests_total{{namespace="{NS}",service="checkout",'
                                 f'version="{v}",code="{code}"}} {c}')
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class SlowProxy:
    """A SLOW HTTP PROXY in front of the real Prometheus (a stand-in for an overloaded one):
    forwards every request, after `delay` seconds when set."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.delay = 0.0
        self.delayed = 0
        me = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _forward(self, method: str) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                if me.delay:
                    me.delayed += 1
                    time.sleep(me.delay)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("content-type", "accept", "authorization")}
                try:
                    r = requests.request(method, me.upstream + self.path, data=body,
                                         headers=headers, timeout=30)
                    status, data, ctype = r.status_code, r.content, r.headers.get(
                        "Content-Type", "application/json")
                except requests.RequestException:
                    status, data, ctype = 502, b"{}", "application/json"
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (its timeout): exactly the point

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def live_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """A real Prometheus scraping a LiveExporter every second."""
    from analyzer.demo.local_prometheus import PrometheusServer, find_binary

    if find_binary("prometheus") is None:
        pytest.fail("the prometheus binary is required (make test installs it)")
    exporter = LiveExporter()
    server = PrometheusServer(
        tmp_path_factory.mktemp("prom-live"), scrape_interval="250ms",
        scrape_configs=[{"job_name": "app", "scrape_interval": "250ms",
                         "static_configs": [{"targets": [exporter.target]}]}],
    ).start()
    yield server, exporter
    server.stop()
    exporter.close()


# --------------------------------------------------------------------------- PostgreSQL


class PgCluster(LocalPostgres):
    """A throwaway PostgreSQL cluster of its own (analyzer/demo/local_postgres.py), so the
    suite can stop and start it without touching the shared server."""

    def __init__(self) -> None:
        try:
            super().__init__(prefix="canary-faults-pg-")
        except PostgresMissing as e:
            pytest.fail(f"the PostgreSQL fault cases need {e}: {requires.HOW}", pytrace=False)


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PgCluster]:
    cluster = PgCluster()
    cluster.start()
    yield cluster
    cluster.destroy()


# --------------------------------------------------------------------------- a tiny disk


@pytest.fixture
def tiny_disk() -> Iterator[Path]:
    """A 16 MiB tmpfs (the tests run as root, as `make test` does); a failure naming the reason
    where mounting is not permitted."""
    where = Path(tempfile.mkdtemp(prefix="canary-faults-disk-"))
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs",
                           str(where)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        where.rmdir()
        pytest.fail(f"cannot mount a tmpfs here ({proc.stderr.strip()}): disk-full case needs "
                    "root or CAP_SYS_ADMIN")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)
    shutil.rmtree(where, ignore_errors=True)


def fill_disk(where: Path) -> Path:
    """Write a ballast file until the filesystem is full; delete it to free the space."""
    ballast = where / "ballast"
    chunk = b"\0" * (64 * 1024)
    with ballast.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        try:  # the last partial chunk
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return ballast

