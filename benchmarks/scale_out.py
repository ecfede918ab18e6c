"""Scale-out: three `canary run` replicas share N rollouts (15,000 by default) on one
PostgreSQL, in real time; one is SIGKILLed. For the throughput benchmark (throughput.py).

Owns the scale-out measurement. What is measured, honestly:
- a throwaway PostgreSQL cluster of its own (analyzer/demo/local_postgres.py; fsync off, as a
  benchmark machine's), so its CPU is the engine's load alone;
- N rollouts of one policy shape (the `simulate` source, seeded: no Prometheus here, the
  single-process table measures that side; the dry-run router; error-rate and latency checks,
  a 30 s interval, steps long enough that no rollout finishes during the run);
- three replicas, real processes (`canary run --no-api --log-level WARNING`), with the real
  scheduler (APScheduler, 8 tick threads each) and advisory-lock ownership;
- once every rollout has ticked twice, a window of `intervals` intervals: for every rollout
  the gaps between its ticks (one tick per 30 s interval means a gap of 15-45 s; less is a
  double tick, more a missed interval) and the replicas that ticked it; the database's CPU,
  transactions and WAL per tick; each replica's CPU per tick;
- then one replica is SIGKILLed: the time until each of its rollouts is ticked by a survivor,
  and another window with two replicas.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
INTERVAL = 30.0
CANARY = str(Path(sys.executable).with_name("canary"))


def policy_yaml(k: int) -> str:
    return f"""
apiVersion: canary-analyzer.io/v1alpha1
kind: RolloutPolicy
metadata: {{name: svc{k}}}
spec:
  target: {{namespace: fleet, service: svc{k}, stable: v1, canary: v2}}
  router: {{provider: dry-run}}
  strategy: {{steps: [5, 10, 25, 50, 100]}}
  analysis: {{interval: 30s, minStepDuration: 1h, maxStepDuration: 2h}}
  metrics: {{source: simulate, rps: 200, seed: {k}}}
  checks:
    - type: error-rate
    - type: latency
  decision: {{alpha: 0.01}}
"""


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return math.nan


class Replica:
    def __init__(self, url: str, log: Path) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [CANARY, "run", "--db", url, "--no-api", "--sync-interval", "5",
             "--log-level", "WARNING"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
            stderr=self._log)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line:
            raise SystemExit(f"a replica did not start:\n{log.read_text()[-3000:]}")
        self.name = str(json.loads(line)["replica"])

    def cpu(self) -> float:
        return _cpu(self.proc.pid)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def _db_counters(engine: Any) -> dict[str, float]:
    from sqlalchemy import text

    with engine.connect() as c:
        row = c.execute(text(
            "SELECT xact_commit + xact_rollback AS xacts, tup_inserted, tup_updated, "
            "tup_returned + tup_fetched AS tup_read, "
            "pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') AS wal "
            "FROM pg_stat_database WHERE datname = current_database()")).one()
    return {k: float(v) for k, v in row._mapping.items()}


def _ticks(engine: Any, since: float, until: float) -> list[tuple[int, float, str]]:
    from sqlalchemy import text

    with engine.connect() as c:
        rows = c.execute(text(
            "SELECT rollout_id, extract(epoch FROM created_at), replica FROM ticks "
            "WHERE created_at >= :a AND created_at < :b ORDER BY rollout_id, created_at"),
            {"a": datetime.fromtimestamp(since, UTC),
             "b": datetime.fromtimestamp(until, UTC)}).all()
    return [(int(r[0]), float(r[1]), str(r[2])) for r in rows]


def _window(engine: Any, cluster: Any, replicas: list[Replica], seconds: float,
            n: int) -> dict[str, Any]:
    """Measure `seconds` of steady ticking: per-interval regularity and the load per tick."""
    db0, pg0 = _db_counters(engine), cluster.cpu_seconds()
    cpu0 = [r.cpu() for r in replicas]
    t0 = time.time()
    time.sleep(seconds)
    t1 = time.time()
    db1, pg1 = _db_counters(engine), cluster.cpu_seconds()
    cpu1 = [r.cpu() for r in replicas]
    # the ticks of the window, plus one interval before it to see each rollout's first gap
    rows = _ticks(engine, t0 - INTERVAL, t1)
    per: dict[int, list[tuple[float, str]]] = {}
    for rid, at, replica in rows:
        per.setdefault(rid, []).append((at, replica))
    gaps: list[float] = []
    double = missed = multi = 0
    ticks = 0
    for rid in range(1, n + 1):
        seen = per.get(rid, [])
        inside = [(at, rep) for at, rep in seen if at >= t0]
        ticks += len(inside)
        if len({rep for _, rep in inside}) > 1:
            multi += 1
        times = [at for at, _ in seen]
        for a, b in itertools.pairwise(times):
            if b >= t0:
                gaps.append(b - a)
        if not inside:
            missed += int(seconds // INTERVAL)
    for g in gaps:
        if g < INTERVAL / 2:
            double += 1
        elif g > 1.5 * INTERVAL:
            missed += round(g / INTERVAL) - 1
    slots = n * seconds / INTERVAL
    gaps.sort()
    ticks = max(ticks, 1)
    return {
        "replicas": len(replicas), "seconds": t1 - t0, "ticks": ticks,
        "ticks_per_s": ticks / (t1 - t0), "needed_ticks_per_s": n / INTERVAL,
        "exactly_once": max(0.0, 1 - (double + missed) / slots),
        "double": double, "missed": missed, "multi_replica": multi,
        "gap_p50_s": gaps[len(gaps) // 2] if gaps else math.nan,
        "gap_p99_s": gaps[int(len(gaps) * 0.99)] if gaps else math.nan,
        "gap_max_s": gaps[-1] if gaps else math.nan,
        "engine_cpu_ms_per_tick": 1000 * sum(b - a for a, b in zip(cpu0, cpu1, strict=True))
        / ticks,
        "db_cpu_ms_per_tick": 1000 * (pg1 - pg0) / ticks,
        "db_xacts_per_tick": (db1["xacts"] - db0["xacts"]) / ticks,
        "db_rows_written_per_tick": (db1["tup_inserted"] + db1["tup_updated"]
                                     - db0["tup_inserted"] - db0["tup_updated"]) / ticks,
        "db_wal_kb_per_tick": (db1["wal"] - db0["wal"]) / 1024 / ticks,
    }


def run_scale_out(n: int, console: Console, *, intervals: int = 3,
                  workdir: Path | None = None) -> dict[str, Any]:
    from sqlalchemy import create_engine, text

    from analyzer.daemon.store import Store
    from analyzer.demo.local_postgres import LocalPostgres
    from analyzer.policy import Policy, parse_policy

    cluster = LocalPostgres(prefix="canary-scale-out-")
    cluster.start("max_connections=200")
    logs = workdir or cluster.root
    replicas: list[Replica] = []
    try:
        t = time.perf_counter()
        store = Store(cluster.url)
        template = parse_policy(policy_yaml(0)).model_dump(mode="json", exclude_none=True)
        now = datetime.now(UTC)
        for k in range(n):
            template["metadata"]["name"] = f"svc{k}"
            template["spec"]["target"]["service"] = f"svc{k}"
            template["spec"]["metrics"]["seed"] = k
            store.create_rollout(Policy.model_validate(template), now)
        store.dispose()
        create_s = time.perf_counter() - t
        console.print(f"scale-out: {n} rollouts created in {create_s:.0f} s; starting 3 replicas")
        engine = create_engine(cluster.url.replace("postgresql://", "postgresql+psycopg://"))
        started = time.time()
        replicas = [Replica(cluster.url, logs / f"replica-{i}.log") for i in range(3)]

        def ticked_at_least(k: int) -> int:
            with engine.connect() as c:
                return int(c.execute(text("SELECT count(*) FROM rollouts WHERE tick_seq >= :k"),
                                     {"k": k}).scalar() or 0)

        deadline = time.time() + 600
        while ticked_at_least(2) < n and time.time() < deadline:
            time.sleep(2)
        warm_s = time.time() - started
        console.print(f"scale-out: every rollout ticked twice after {warm_s:.0f} s; measuring "
                      f"{intervals} intervals")
        three = _window(engine, cluster, replicas, intervals * INTERVAL, n)
        console.print(f"scale-out, 3 replicas: {three['ticks_per_s']:.0f} ticks/s, "
                      f"{100 * three['exactly_once']:.2f} % of intervals ticked exactly once")
        # SIGKILL the replica owning the most rollouts
        with engine.connect() as c:
            owners = dict(c.execute(text(
                "SELECT owner, count(*) FROM rollouts GROUP BY owner")).all())
        victim = max(replicas, key=lambda r: owners.get(r.name, 0))
        with engine.connect() as c:
            theirs = [int(r[0]) for r in c.execute(text(
                "SELECT id FROM rollouts WHERE owner = :o"), {"o": victim.name}).all()]
        killed = time.time()
        victim.kill()
        replicas.remove(victim)
        mine = set(theirs)
        first_after: dict[int, float] = {}
        deadline = killed + 600
        while len(first_after) < len(mine) and time.time() < deadline:
            time.sleep(2)
            for rid, at, replica in _ticks(engine, killed, time.time() + 1):
                if rid in mine and replica != victim.name and rid not in first_after:
                    first_after[rid] = at
        takeover = sorted(at - killed for at in first_after.values())
        console.print(f"scale-out: {len(takeover)}/{len(theirs)} rollouts of the killed replica "
                      f"taken over, the last after {takeover[-1] if takeover else math.nan:.0f} s")
        time.sleep(INTERVAL)  # the survivors' new rounds settle
        two = _window(engine, cluster, replicas, 2 * INTERVAL, n)
        engine.dispose()
        return {
            "rollouts": n, "create_s": create_s, "warm_s": warm_s, "three": three, "two": two,
            "victim_rollouts": len(theirs), "taken_over": len(takeover),
            "takeover_p50_s": takeover[len(takeover) // 2] if takeover else math.nan,
            "takeover_max_s": takeover[-1] if takeover else math.nan,
        }
    finally:
        for r in replicas:
            r.stop()
        cluster.destroy()


if __name__ == "__main__":  # a quick look: python benchmarks/scale_out.py [N]
    sys.path.insert(0, str(ROOT))
    out = run_scale_out(int(sys.argv[1]) if len(sys.argv) > 1 else 1500, Console(width=150))
    print(json.dumps(out, indent=1, default=str))
