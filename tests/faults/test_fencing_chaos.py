"""Chaos: three replicas never move traffic behind each other's back (issue 21).

Three `canary run` processes on one PostgreSQL share nine rollouts: two routed by the local
nginx router (each its own real nginx) and one per Kubernetes router (Istio, NGINX Ingress,
Knative, Seldon, Kubernetes replicas, Gateway API, SMI) on the real API server, as deploy/'s
ServiceAccount, through the fault proxy, which holds every write 0.2 s before forwarding it.
Every step change asks a real `beforeStep` gate that answers after 0.4 s. So a replica can be
caught between reading its rollout and writing (inside a gate call: the replica is the
rollout's owner), or with a write in flight (the proxy saw it arrive: it lands after the
replica stopped, its commit never comes). A seeded schedule injects, a bounded number of
times: stalls (SIGSTOP, then SIGCONT a few seconds later), partitions (`pg_terminate_backend`
of every session of one replica: its advisory locks go with them), a stall AND a partition of
the same replica (the issue's precondition: the others take over while it sleeps, it wakes
with a stale tick in hand), and SIGKILLs (a new replica is started); the stall+partitions and
half of the stalls and kills hit a replica mid-tick (in a gate call or with a write in
flight). Meanwhile it queues random promotes, pauses (resumed a little later) and an abort.
Then everything is let run until every rollout has finished and been settled by its owner.

The audit reads every router write: a watch on each routed object (every version the API
server stored, tests/support/kube_objects.py) and inotify on each upstream file
(tests/support/file_history.py), each version carrying its fencing token (epoch, tick,
replica). Against the decision log it checks, per rollout:
- no write of a former owner landed after the current owner's (the epochs of the router's
  versions never go down);
- every write either carries a committed tick's weight, or is superseded by a later write
  (an uncommitted tick's write: the router ahead of the store, put right by the owner's next
  tick), and the time until it was superseded is reported;
- every committed tick that moved traffic reached the router under its own tick number;
- at the end the router holds the store's final weight, and the rollout is settled;
- the decision log itself is complete (tests/faults/conftest.py `audit_log`), and the epochs
  its ticks were committed under never go down.
A summary table (per router) is printed at the end of the run, with the fault suite's.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import os
import queue
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from analyzer.core.rollout import Command, Phase
from analyzer.daemon.store import Store
from analyzer.policy import Policy, parse_policy
from analyzer.routers.factory import build_router
from analyzer.routers.fence import FenceToken, token_of
from analyzer.routers.nginx_file import parse_upstream, render_upstream
from tests.routers.conftest import (
    DESTINATION_RULE,
    HTTP_ROUTE,
    KNATIVE_SERVICE,
    SELDON_DEPLOYMENT,
    STABLE_INGRESS,
    TRAFFIC_SPLIT,
    VIRTUAL_SERVICE,
    deployment,
)
from tests.support import requires
from tests.support.fault_proxy import FaultProxy
from tests.support.file_history import FileHistory
from tests.support.kube_cluster import KubeCluster
from tests.support.kube_deploy import ENGINE_NAMESPACE, ENGINE_SERVICE_ACCOUNT, EngineRbac
from tests.support.kube_objects import ClusterObjects

from .conftest import (
    CHAOS_TABLE,
    SOAK,
    Daemon,
    FaultLedger,
    audit_log,
    daemon_env,
    wait_for,
)

pytestmark = pytest.mark.slow

INJECTIONS = 36 if SOAK else 12
SEED = int(os.environ.get("CANARY_FAULT_SEED", "21"))
KINDS = ("stall", "partition", "stall+partition", "kill")

# The canary Ingress exists up front (a user-made one the router adopts), so it can be watched
# from its first write on.
CANARY_INGRESS: dict[str, Any] = copy.deepcopy(STABLE_INGRESS)
CANARY_INGRESS["metadata"] = {
    "name": "frontend-canary", "namespace": "shop",
    "annotations": {"nginx.ingress.kubernetes.io/canary": "true",
                    "nginx.ingress.kubernetes.io/canary-weight": "0"}}
CANARY_INGRESS["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = \
    "frontend-canary"

# rollout name: (spec.router, target service, objects to seed, objects it routes: apiVersion,
# kind, name; the REST path of each ends in /<plural>/<name>)
KUBE_ROLLOUTS: dict[str, tuple[str, str, list[dict[str, Any]], list[tuple[str, str, str]]]] = {
    "istio": ("{provider: istio, virtualService: checkout, destinationRule: checkout, "
              "stableSubset: stable, canarySubset: canary}", "checkout",
              [VIRTUAL_SERVICE, DESTINATION_RULE],
              [("networking.istio.io/v1", "VirtualService", "checkout")]),
    "nginx-ingress": ("{provider: nginx-ingress, ingress: frontend, canaryService: "
                      "frontend-canary}", "frontend", [STABLE_INGRESS, CANARY_INGRESS],
                      [("networking.k8s.io/v1", "Ingress", "frontend-canary")]),
    "knative": ("{provider: knative, knativeService: hello, stableRevision: hello-v1, "
                "canaryRevision: hello-v2}", "hello", [KNATIVE_SERVICE],
                [("serving.knative.dev/v1", "Service", "hello")]),
    "seldon": ("{provider: seldon, seldonDeployment: iris}", "iris", [SELDON_DEPLOYMENT],
               [("machinelearning.seldon.io/v1", "SeldonDeployment", "iris")]),
    "kubernetes": ("{provider: kubernetes, stableDeployment: api-v1, canaryDeployment: "
                   "api-v2, totalReplicas: 10}", "api",
                   [deployment("api-v1", "v1", 10), deployment("api-v2", "v2", 0)],
                   [("apps/v1", "Deployment", "api-v1"), ("apps/v1", "Deployment", "api-v2")]),
    "gateway-api": ("{provider: gateway-api, httpRoute: store, stableService: store-v1, "
                    "canaryService: store-v2, port: 8080}", "store", [HTTP_ROUTE],
                    [("gateway.networking.k8s.io/v1", "HTTPRoute", "store")]),
    "smi": ("{provider: smi, trafficSplit: podinfo, rootService: podinfo, stableService: "
            "podinfo-primary, canaryService: podinfo-canary}", "podinfo", [TRAFFIC_SPLIT],
            [("split.smi-spec.io/v1alpha4", "TrafficSplit", "podinfo")]),
}
NGINX_ROLLOUTS = ("nginx-a", "nginx-b")


def chaos_policy(name: str, router: str, namespace: str, service: str, gate: str) -> str:
    """Healthy canary, decided within a few ticks per step (1% errors at 10000 rps: the ratio
    route, about 4 s of Wald's mean at 10%; at 0.01% errors the negligible-rate route held one
    rollout at its first step for minutes under statistics v2); long enough (ten steps of at
    least 6 s) to still be running while the chaos lasts; a slow gate before every step."""
    return f"""
apiVersion: canary-analyzer.io/v1alpha1
kind: RolloutPolicy
metadata: {{name: chaos-{name}}}
spec:
  target: {{namespace: {namespace}, service: {service}, stable: v1, canary: v2}}
  router: {router}
  strategy: {{steps: [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]}}
  analysis: {{interval: 1s, minStepDuration: 6s, maxStepDuration: 10m, baselineWindow: 30s}}
  metrics:
    source: simulate
    allowSimulatedMetrics: true
    rps: 10000
    seed: {abs(hash(name)) % 1000}
    stable: {{errorRate: 0.01}}
    canary: {{errorRate: 0.01}}
  checks: [{{type: error-rate, tolerance: 0.5}}]
  decision: {{alpha: 0.001, minSamples: 100, checkSampleRatio: false}}
  gates:
    beforeStep: [{{name: slow-change-window, url: "{gate}", timeout: 30s}}]
"""


class SlowGate:
    """A real `beforeStep` webhook answering 200 after `delay` seconds; `asked` receives the
    rollout of each call as it arrives (its replica has read the rollout, not written yet)."""

    def __init__(self, delay: float = 0.4) -> None:
        self.asked: queue.Queue[str] = queue.Queue()
        me = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                me.asked.put(str(body.get("rollout")))
                time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/gate"

    def next_caller(self, store: Store, timeout: float) -> str | None:
        """The replica (host:pid) in a gate call right now: the owner of the next rollout
        asking (None when none asks in time)."""
        with contextlib.suppress(queue.Empty):
            while True:  # drop calls that are over already
                self.asked.get_nowait()
        try:
            name = self.asked.get(timeout=timeout)
        except queue.Empty:
            return None
        return store.latest(name).owner

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class WritesInFlight:
    """The fault proxy holding every write to a routed object for `delay` seconds, one fault
    per object, so the test sees which rollout's write has just arrived."""

    def __init__(self, proxy: FaultProxy, objects: ClusterObjects, delay: float = 0.2) -> None:
        self.faults: dict[str, list[Any]] = {}
        for name, (_r, _s, _seeds, refs) in KUBE_ROLLOUTS.items():
            self.faults[f"chaos-{name}"] = [
                proxy.inject(None, count=None, method=("PATCH", "POST", "PUT"), delay=delay,
                             path=f"/{objects.plural(api, kind)}/{obj}")
                for api, kind, obj in refs]

    def next_writer(self, store: Store, timeout: float) -> str | None:
        """The replica (host:pid) whose write has just reached the proxy (None: none in
        time)."""
        before = {n: sum(f.hits for f in fs) for n, fs in self.faults.items()}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, fs in self.faults.items():
                if sum(f.hits for f in fs) > before[name]:
                    return store.latest(name).owner
            time.sleep(0.005)
        return None


# --------------------------------------------------------------------------- router history


@dataclass(frozen=True)
class Write:
    """One version of a rollout's routed object(s): when it was seen, its weight, the token of
    the object written. `complete`: every routed object carries that token (the replicas
    router writes two Deployments one after the other; between them the weight is neither)."""

    at: float
    weight: int
    token: FenceToken | None
    complete: bool = True


@dataclass
class Routed:
    """One rollout's router as the audit sees it."""

    name: str
    provider: str
    policy: Policy
    writes: Callable[[], list[Write]]
    missed: Callable[[], int] = lambda: 0
    stop: Callable[[], None] = lambda: None


def kube_routed(name: str, policy: Policy, objects: ClusterObjects,
                refs: list[tuple[str, str, str]]) -> Routed:
    """Every version of the routed objects, from watches; merged in etcd order (the
    resourceVersion is the store's revision), each read by the router itself, offline."""
    histories = [objects.watch(*ref) for ref in refs]
    static = [o for o in (objects.get("networking.istio.io/v1", "DestinationRule", "checkout"),
                          objects.get("networking.k8s.io/v1", "Ingress", "frontend"))
              if o is not None]

    def writes() -> list[Write]:
        timeline = sorted(
            ((int(obj["metadata"]["resourceVersion"]), at, i, obj)
             for i, h in enumerate(histories) for at, obj in h.timed_versions()),
            key=lambda x: x[0])
        current: dict[int, dict[str, Any]] = {}
        out: list[Write] = []
        seen: set[int] = set()
        for rv, at, i, obj in timeline:
            current[i] = obj
            if len(current) < len(histories) or rv in seen:
                continue
            seen.add(rv)
            router = build_router(policy, current_object=[*current.values(), *static])
            token = token_of(obj)
            complete = all(token_of(o) == token for o in current.values())
            out.append(Write(at, int(router.get_weight().canary_weight), token, complete))
        return out[1:]  # the first is the seed (or the other object's seed)

    def stop() -> None:
        for h in histories:
            h.stop()

    return Routed(name, policy.spec.router.provider, policy, writes, stop=stop)


def nginx_routed(name: str, policy: Policy, upstream: Path) -> Routed:
    history = FileHistory(upstream)
    cfg = policy.spec.router

    def writes() -> list[Write]:
        out = []
        for at, content in history.versions()[1:]:
            split = parse_upstream(content, cfg.upstreamName, cfg.stableServer,  # type: ignore[union-attr]
                                   cfg.canaryServer)  # type: ignore[union-attr]
            line = next((ln for ln in content.splitlines() if ln.startswith("# fence: ")), "")
            out.append(Write(at, split.canary_weight, FenceToken.decode(line[9:])))
        return out

    return Routed(name, "nginx", policy, writes, missed=lambda: history.missed,
                  stop=history.stop)


# --------------------------------------------------------------------------- the audit


@dataclass
class RouterAudit:
    writes: int = 0
    own: int = 0  # the weight of a tick its writer committed (same epoch)
    others: int = 0  # the weight of a tick another owner committed (claim writes, put-backs,
    #                  settling; or a dead owner's write its successor committed the same)
    uncommitted: int = 0  # a weight no tick committed: superseded later (MUST be)
    supersede_s: list[float] = field(default_factory=list)
    partial: int = 0  # one Deployment of two written (the replicas router), superseded
    late_stale: int = 0  # a former owner's write after a newer owner's: MUST be 0
    left_stray: int = 0  # an uncommitted write never superseded: MUST be 0
    unobserved: int = 0  # committed traffic changes with no write under their tick
    missed: int = 0  # versions inotify could not read in time (nginx only)
    agrees_at_end: bool = False
    owners: int = 0  # distinct epochs that committed ticks (1 + take-overs)
    problems: list[str] = field(default_factory=list)


def audit_router(store: Store, routed: Routed) -> RouterAudit:
    rec = store.latest(routed.policy.name)
    ticks = store.ticks(rec.id)
    committed = {0: (0, None), **{t.seq: (t.weight_after, t.fence_epoch) for t in ticks}}
    writes = routed.writes()
    a = RouterAudit(writes=len(writes), missed=routed.missed())
    last_epoch = -1
    for i, w in enumerate(writes):
        if w.token is None:
            a.problems.append(f"write {i} (weight {w.weight}) carries no fencing token")
            continue
        if w.token.epoch < last_epoch:
            a.late_stale += 1
            a.problems.append(f"write {i}: epoch {w.token.epoch} after epoch {last_epoch}")
        last_epoch = max(last_epoch, w.token.epoch)
        weight, epoch = committed.get(w.token.tick, (None, None))
        if w.complete and weight == w.weight:
            if epoch == w.token.epoch:
                a.own += 1
            else:
                a.others += 1
        elif i + 1 < len(writes):
            if w.complete:
                a.uncommitted += 1
                a.supersede_s.append(writes[i + 1].at - w.at)
            else:
                a.partial += 1
        else:
            a.left_stray += 1
            a.problems.append(f"last write (tick {w.token.tick}, weight {w.weight}) was never "
                              "committed")
    written = {(w.token.tick, w.weight) for w in writes if w.token is not None and w.complete}
    for t in ticks:
        if t.weight_before != t.weight_after and (t.seq, t.weight_after) not in written:
            a.unobserved += 1
    if a.unobserved and not a.missed:
        a.problems.append(f"{a.unobserved} committed weight change(s) never reached the router")
    final = writes[-1].weight if writes else 0
    a.agrees_at_end = final == rec.state.weight
    if not a.agrees_at_end:
        a.problems.append(f"router ends at {final}, the store at {rec.state.weight}")
    if rec.settled_seq != rec.tick_seq:
        a.problems.append(f"not settled (settled {rec.settled_seq}, tick {rec.tick_seq})")
    epochs = [t.fence_epoch for t in ticks]
    if any(b is not None and a_ is not None and b < a_ for a_, b in itertools.pairwise(epochs)):
        a.problems.append(f"ticks committed under decreasing epochs: {epochs}")
    a.owners = len({e for e in epochs if e is not None})
    return a


# --------------------------------------------------------------------------- the replicas


class Replicas:
    """Three `canary run` processes kept alive (a killed one is replaced)."""

    def __init__(self, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.args, self.env, self.logs = args, env, logs
        self.live: list[Daemon] = []
        self.all: list[Daemon] = []
        self.stopped: set[int] = set()

    def start(self) -> Daemon:
        d = Daemon(self.args, self.env, self.logs / f"replica-{len(self.all)}.log")
        self.live.append(d)
        self.all.append(d)
        return d

    def stop_process(self, d: Daemon) -> None:
        os.kill(d.proc.pid, signal.SIGSTOP)
        self.stopped.add(d.proc.pid)

    def cont(self, d: Daemon) -> None:
        os.kill(d.proc.pid, signal.SIGCONT)
        self.stopped.discard(d.proc.pid)

    def partition(self, d: Daemon) -> int:
        """Terminate every PostgreSQL session of replica `d` (pool and lock session)."""
        suffix = f" {socket.gethostname()}:{d.proc.pid}"
        eng = create_engine(requires.PG_URL)
        with eng.begin() as c:
            n = c.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE right(application_name, length(:s)) = :s"), {"s": suffix}).scalar()
        eng.dispose()
        return int(n or 0)

    def by_replica(self, replica: str | None) -> Daemon | None:
        return next((d for d in self.live if d.replica == replica), None)

    def kill(self, d: Daemon) -> None:
        if d.proc.pid in self.stopped:
            self.cont(d)
        d.kill()
        d.stop()
        self.live.remove(d)

    def close(self) -> None:
        for d in self.live:
            if d.proc.pid in self.stopped:
                self.cont(d)
        for d in self.live:
            d.stop()

    def log_count(self, needle: str) -> int:
        return sum(p.read_text(errors="replace").count(needle)
                   for p in self.logs.glob("replica-*.log"))


@pytest.fixture
def schema() -> Iterator[str]:
    requires.postgres()
    name = f"canary_chaos_{uuid.uuid4().hex[:10]}"
    yield name
    eng = create_engine(requires.PG_URL)
    with eng.begin() as c:
        c.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    eng.dispose()


@dataclass
class ChaosRow:
    router: str
    audit: RouterAudit


def chaos_table(rows: list[ChaosRow]) -> str:
    """The audit per router kind (tests/faults/conftest.py prints it at the end of the run)."""
    lines = ["| router | rollouts | router writes audited | tick committed by the writer | "
             "tick committed by another owner | uncommitted, all superseded (max s until) | "
             "former owner's writes after a newer owner's | router = store at the end | "
             "owners (epochs) per rollout |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    by: dict[str, list[RouterAudit]] = {}
    for r in rows:
        by.setdefault(r.router, []).append(r.audit)
    for router, audits in sorted(by.items()):
        sup = [s for a in audits for s in a.supersede_s]
        partial = sum(a.partial for a in audits)
        lines.append(
            f"| {router} | {len(audits)} | {sum(a.writes for a in audits)}"
            + (f" ({partial} of one Deployment)" if partial else "")
            + f" | {sum(a.own for a in audits)} | {sum(a.others for a in audits)} | "
            f"{sum(a.uncommitted for a in audits)}" + (f" ({max(sup):.1f})" if sup else "")
            + f" | {sum(a.late_stale for a in audits)} | "
            f"{sum(a.agrees_at_end for a in audits)}/{len(audits)} | "
            f"{', '.join(str(a.owners) for a in audits)} |")
    return "\n".join(lines) + "\n"


def test_three_replicas_never_move_traffic_behind_each_others_back(
        tmp_path: Path, schema: str, kube_cluster: KubeCluster, kube_namespace: str,
        kube_engine_rbac: EngineRbac, kube_fault_proxy: FaultProxy, ledger: FaultLedger,
        request: pytest.FixtureRequest) -> None:
    requires.binary("nginx")
    from analyzer.demo.local_nginx import LocalNginx

    rng = random.Random(SEED)
    ns = kube_namespace
    gate = SlowGate()
    objects = ClusterObjects(kube_cluster, ns)
    pdir = tmp_path / "policies"
    pdir.mkdir()
    routed: list[Routed] = []
    nginxes: list[LocalNginx] = []
    for _router, _service, seeds, _refs in KUBE_ROLLOUTS.values():
        for obj in seeds:
            objects.seed(obj)
    for name, (router, service, _seeds, refs) in KUBE_ROLLOUTS.items():
        text_ = chaos_policy(name, router, ns, service, gate.url)
        (pdir / f"{name}.yaml").write_text(text_)
        routed.append(kube_routed(name, parse_policy(text_), objects, refs))
    for name in NGINX_ROLLOUTS:
        upstream = tmp_path / name / "upstream.conf"
        upstream.parent.mkdir()
        upstream.write_text(render_upstream("shop", "127.0.0.1:9", "127.0.0.1:10", 0))
        nginx = LocalNginx(tmp_path / name / "nginx", upstream, "shop").start()
        nginxes.append(nginx)
        router = ("{provider: nginx, upstreamFile: " + str(upstream) + ", upstreamName: shop, "
                  "stableServer: '127.0.0.1:9', canaryServer: '127.0.0.1:10', nginxConfig: "
                  f"{nginx.config_path}}}")
        text_ = chaos_policy(name, router, "shop", "checkout", gate.url)
        (pdir / f"{name}.yaml").write_text(text_)
        routed.append(nginx_routed(name, parse_policy(text_), upstream))
    token = kube_cluster.service_account_token(ENGINE_NAMESPACE, ENGINE_SERVICE_ACCOUNT)
    kubeconfig = kube_cluster.write_kubeconfig(tmp_path / "kubeconfig",
                                               server=kube_fault_proxy.url, token=token)
    in_flight = WritesInFlight(kube_fault_proxy, objects)
    env = daemon_env(KUBECONFIG=str(kubeconfig), CANARY_DB_SCHEMA=schema)
    args = ["--policies", str(pdir), "--db", requires.PG_URL, "--no-api",
            "--sync-interval", "0.3"]
    store = Store(requires.PG_URL, schema=schema)
    replicas = Replicas(args, env, tmp_path)
    injected = dict.fromkeys(KINDS, 0)
    commands = 0
    try:
        for _ in range(3):
            replicas.start()
        wait_for(lambda: len(store.list_rollouts()) == len(routed), 60, "the rollouts")
        plan = [k for _ in range(INJECTIONS // len(KINDS) + 1)
                for k in rng.sample(KINDS, len(KINDS))][:INJECTIONS]
        resume_at: list[tuple[float, str]] = []
        aborts = 0
        for kind in plan:
            # Random manual commands on the rollouts still running.
            active = [r for r in store.list_rollouts() if r.active]
            if active and rng.random() < 0.7:
                r = rng.choice(active)
                roll = rng.random()
                cmd = Command.PROMOTE if roll < 0.6 else Command.PAUSE
                if roll > 0.95 and aborts < 2:
                    cmd, aborts = Command.ABORT, aborts + 1
                with contextlib.suppress(Exception):
                    store.add_command(r.name, cmd, "chaos", datetime.now(UTC))
                    commands += 1
                    if cmd is Command.PAUSE:
                        resume_at.append((time.monotonic() + rng.uniform(1, 3), r.name))
            for when, name in [x for x in resume_at if x[0] <= time.monotonic()]:
                resume_at.remove((when, name))
                with contextlib.suppress(Exception):
                    store.add_command(name, Command.RESUME, "chaos", datetime.now(UTC))
            victim = rng.choice(replicas.live)
            if kind == "stall+partition" or (kind != "partition" and rng.random() < 0.5):
                # Catch a replica mid-tick: inside a gate call (it has read its rollout and
                # not written yet), or with a write in flight (it lands, the commit does not).
                caller = (gate.next_caller(store, 10.0) if rng.random() < 0.5
                          else in_flight.next_writer(store, 10.0))
                victim = replicas.by_replica(caller) or victim
            if kind == "stall":
                replicas.stop_process(victim)
                time.sleep(rng.uniform(1.0, 4.0))
                replicas.cont(victim)
            elif kind == "partition":
                replicas.partition(victim)
            elif kind == "stall+partition":
                replicas.stop_process(victim)
                replicas.partition(victim)
                time.sleep(rng.uniform(2.0, 5.0))  # the others take its rollouts over
                replicas.cont(victim)
            else:
                replicas.kill(victim)
                time.sleep(rng.uniform(0.3, 1.5))
                replicas.start()
            injected[kind] += 1
            time.sleep(rng.uniform(0.5, 2.0))

        # Let everything finish: resume what waits for a human, then wait for settling.
        def finished() -> bool:
            for r in store.list_rollouts():
                if r.phase is Phase.PAUSED and r.state.pause_until is None and \
                        not store.pending_commands(r.id):
                    store.add_command(r.name, Command.RESUME, "chaos", datetime.now(UTC))
            return not store.schedulable()

        wait_for(finished, 180, "every rollout to finish and be settled", every=0.5)
        time.sleep(1.0)  # the last writes reach the watches
    finally:
        replicas.close()
        gate.close()
        for n in nginxes:
            n.stop()
    try:
        audits = [(r, audit_router(store, r)) for r in routed]
    finally:
        for r in routed:
            r.stop()
    fenced = replicas.log_count("does not own the rollout")
    conflicts = replicas.log_count("was taken over by")
    put_back = replicas.log_count("router put back to the committed weight")
    logs = {r.policy.name: audit_log(store, store.latest(r.policy.name).id) for r in routed}
    lost = sum(a.lost for a in logs.values())
    correct = all(not a.problems for _, a in audits) and all(not a.problems
                                                            for a in logs.values())
    labels = {"stall": "replica SIGSTOP, SIGCONT (3 replicas, chaos)",
              "partition": "replica's PostgreSQL sessions terminated (chaos)",
              "stall+partition": "replica stalled and partitioned, then resumed (chaos)",
              "kill": "replica SIGKILLed and replaced (chaos)"}
    for kind in KINDS:
        ledger.record(labels[kind], injected=injected[kind], correct=correct, lost=lost)
    rows = [ChaosRow(r.provider, a) for r, a in audits]
    summary = (f"{sum(injected.values())} injections {injected}, {commands} manual commands, "
               f"{len(replicas.all)} replica processes; router writes refused by the fence "
               f"(lease or token) {fenced}, commits refused after a take-over {conflicts}, "
               f"routers put back to the committed state {put_back}")
    request.config.stash[CHAOS_TABLE] = summary + "\n\n" + chaos_table(rows)
    print(summary)
    print(chaos_table(rows))
    for name, log_audit in logs.items():
        assert not log_audit.problems, (name, log_audit.problems)
    for r, a in audits:
        assert not a.problems, (r.name, a.problems, r.writes())
        assert a.late_stale == 0 and a.left_stray == 0 and a.agrees_at_end
    assert all(injected[k] >= 1 for k in KINDS), injected
    store.dispose()
