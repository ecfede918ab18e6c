"""Engine throughput: N concurrent rollouts ticking every 30 s against a real Prometheus.

Owns the throughput table (benchmarks/results/throughput.{md,csv} and its section of
benchmarks/RESULTS.md).

What is measured, honestly:
- one real Prometheus (the Debian binary, analyzer.demo.local_prometheus) holding backfilled
  series (promtool tsdb create-blocks-from openmetrics) for 5000 services, each with a stable
  and a canary version: `http_requests_total{namespace, service, version, code}` (2xx and 5xx)
  and `http_request_duration_seconds_bucket` (6 buckets), a sample every 30 s for 25 minutes;
- for each N in (100, 1000, 5000), a fresh engine process (analyzer.daemon.engine.Engine with a
  SQLite store file, the generic Prometheus preset, the dry-run router, our Judge, the
  shared query coalescer) with N rollouts of the same policy shape, one per service;
- the clock is SIMULATED: every rollout ticks every 30 s of simulated time, rollout i at
  offset i mod 30 s within each 30 s round (as rollouts started at different seconds would),
  and the ticks are driven back to back by 8 threads (APScheduler's thread pool runs jobs the
  same way), so the figures are the engine's capacity, not a 30 s wall-clock wait. The first
  round (rollout start + the baseline, read interval by interval) is reported separately from
  the steady rounds;
- ticks/s = steady ticks / wall seconds; tick latency = Engine.tick wall time per call;
  PromQL queries per tick = HTTP queries sent / ticks (coalescing makes this fall with N);
  CPU seconds and peak RSS (ru_maxrss) of the engine process; Prometheus' own CPU is not
  counted (it is another process, reported separately from /proc).

Run: `.venv/bin/python benchmarks/throughput.py [--sizes 100 1000 5000] [--rounds 3 2 2]
[--steady-ticks 100 500 500]`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

RESULTS_DIR = ROOT / "benchmarks" / "results"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
SERVICES = 5000
STEP = 30  # seconds between samples
SPAN = 15 * 60  # seconds of data
LE = (0.05, 0.1, 0.25, 0.5, 1.0, math.inf)
INTERVAL = 30
THREADS = 8
# Hour-aligned, 8 h in the past: backfilled blocks must not overlap the head block.
BASE = (int(time.time()) - 8 * 3600) // 3600 * 3600
START = BASE + 11 * 60  # first tick: leaves a 10 min baseline window with data


def policy_yaml(address: str, k: int) -> str:
    return f"""
apiVersion: canary-analyzer.io/v1alpha1
kind: RolloutPolicy
metadata: {{name: svc{k}}}
spec:
  target: {{namespace: fleet, service: svc{k}, stable: v1, canary: v2}}
  router: {{provider: dry-run}}
  strategy: {{steps: [5, 10, 25, 50, 100]}}
  analysis: {{interval: 30s, minStepDuration: 2m, maxStepDuration: 30m}}
  metrics: {{source: prometheus, address: "{address}", preset: generic}}
  checks:
    - type: error-rate
    - type: latency
  decision: {{alpha: 0.01}}
"""


# --------------------------------------------------------------------------- data


def write_openmetrics(path: Path, services: int) -> int:
    """Series for `services` services, streamed to `path`; returns the number of samples."""
    import numpy as np

    rng = np.random.default_rng(7)
    steps = SPAN // STEP + 1
    ts = [BASE + i * STEP for i in range(steps)]
    probs = np.array([0.5, 0.3, 0.15, 0.04, 0.008, 0.002])  # per bucket, non-cumulative
    n = 0
    with path.open("w") as f:
        f.write("# TYPE http_requests_total unknown\n")
        lat_lines: list[str] = []
        for k in range(services):
            rps = float(rng.choice([2.0, 20.0, 200.0]))
            for ver, share in (("v1", 0.9), ("v2", 0.1)):
                lam = rps * share * STEP
                reqs = rng.poisson(lam, size=steps)
                errs = rng.binomial(reqs, 0.01)
                ok = np.cumsum(reqs - errs) + 1000
                bad = np.cumsum(errs) + 10
                lab = f'namespace="fleet",service="svc{k}",version="{ver}"'
                for code, series in (("200", ok), ("503", bad)):
                    sel = f"http_requests_total{{{lab},code=\"{code}\"}}"
                    f.write("".join(f"{sel} {int(v)} {t}\n" for t, v in zip(ts, series,
                                                                              strict=True)))
                    n += steps
                # cumulative over time (counter) and over buckets (le), from 100 at the start
                counts = np.cumsum(rng.multinomial(reqs, probs), axis=0)
                cum = np.cumsum(counts, axis=1) + 100
                for j, le in enumerate(LE):
                    le_s = "+Inf" if math.isinf(le) else f"{le:g}"
                    sel = f"http_request_duration_seconds_bucket{{{lab},le=\"{le_s}\"}}"
                    lat_lines.append("".join(f"{sel} {int(v)} {t}\n"
                                             for t, v in zip(ts, cum[:, j], strict=True)))
                    n += steps
        f.write("# TYPE http_request_duration_seconds_bucket unknown\n")
        f.writelines(lat_lines)
        f.write("# EOF\n")
    return n


def promtool_backfill(om: Path, data_dir: Path) -> None:
    from analyzer.demo.local_prometheus import find_binary

    tool = find_binary("promtool")
    if tool is None:
        raise SystemExit("promtool not found: install the prometheus package (make sysdeps)")
    tsdb = data_dir / "data"
    tsdb.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([tool, "tsdb", "create-blocks-from", "openmetrics", str(om), str(tsdb)],
                          capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"promtool failed: {(proc.stderr or proc.stdout)[-2000:]}")


def proc_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, IndexError, ValueError):
        return math.nan


# --------------------------------------------------------------------------- the engine side


def worker(n: int, rounds: int, address: str, db: Path, cap: int,
           start_budget: float) -> dict[str, Any]:
    """Runs inside the engine process: N rollouts, `rounds` rounds of ticks; steady rounds
    tick the first `cap` started rollouts in time order (all of them when cap >= N). The start
    round stops starting rollouts after `start_budget` seconds of wall time."""
    from analyzer.daemon.engine import Engine
    from analyzer.daemon.store import Store
    from analyzer.policy import Policy, parse_policy
    from analyzer.sources.prometheus.source import SHARED_COALESCER, PrometheusMetricSource

    t_setup = time.perf_counter()
    store = Store(f"sqlite:///{db}")
    store.migrate()
    sources: list[PrometheusMetricSource] = []

    def source_factory(policy: Any) -> PrometheusMetricSource:
        s = PrometheusMetricSource(policy)
        sources.append(s)
        return s

    engine = Engine(store, source_factory=source_factory)
    start = datetime.fromtimestamp(START, UTC)
    # parse the YAML once (the loader is slow); each service's policy differs in names only
    template = parse_policy(policy_yaml(address, 0)).model_dump(mode="json", exclude_none=True)
    ids = []
    for k in range(n):
        template["metadata"]["name"] = f"svc{k}"
        template["spec"]["target"]["service"] = f"svc{k}"
        rec = store.create_rollout(Policy.model_validate(template), start)
        ids.append(rec.id)
    setup_s = time.perf_counter() - t_setup

    def sent() -> int:
        clients = {id(s._client): s._client for s in sources}
        return sum(c.sent for c in clients.values())

    started: set[int] = set()
    per_round: list[dict[str, Any]] = []
    latencies: list[list[float]] = []
    lock = threading.Lock()
    for r in range(rounds):
        lat: list[float] = []
        q0, c0 = sent(), SHARED_COALESCER.queries
        cpu0 = time.process_time()

        began = [time.perf_counter()]

        def one(i: int, r: int = r, lat: list[float] = lat, began: list[float] = began) -> None:
            if r == 0 and time.perf_counter() - began[0] > start_budget:
                return  # out of time: this rollout is never started
            now = start + timedelta(seconds=r * INTERVAL + (i % INTERVAL))
            t = time.perf_counter()
            engine.tick(ids[i], now)
            d = time.perf_counter() - t
            with lock:
                lat.append(d)
                if r == 0:
                    started.add(i)

        # ticks in time order within the round, as the scheduler would fire them
        order = sorted(range(n), key=lambda i: i % INTERVAL)
        if r > 0:
            order = [i for i in order if i in started][:cap]
        w0 = began[0] = time.perf_counter()
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            list(pool.map(one, order))
        wall = time.perf_counter() - w0
        per_round.append({
            "round": r, "ticks": len(lat), "wall_s": wall, "cpu_s": time.process_time() - cpu0,
            "http_queries": sent() - q0, "coalesced_queries": SHARED_COALESCER.queries - c0,
        })
        latencies.append(lat)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    phases: dict[str, int] = {}
    for i in ids:
        p = str(store.get(i).phase)
        phases[p] = phases.get(p, 0) + 1
    return {
        "n": n, "rounds": rounds, "setup_s": setup_s, "per_round": per_round,
        "latencies": latencies, "cpu_s": ru.ru_utime + ru.ru_stime,
        "peak_rss_mb": ru.ru_maxrss / 1024, "phases": phases, "started": len(started),
    }


# --------------------------------------------------------------------------- the driver


def _q(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.quantile(values, q)) if values else math.nan


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    steady = res["per_round"][1:] or res["per_round"]
    steady_lat = [x for lat in res["latencies"][1:] for x in lat] or res["latencies"][0]
    ticks = sum(r["ticks"] for r in steady)
    wall = sum(r["wall_s"] for r in steady)
    first = res["per_round"][0]
    return {
        "rollouts": res["n"],
        "started": res["started"],
        "steady_rounds": len(steady),
        "steady_ticks": ticks,
        "ticks_per_s": ticks / wall if wall else math.nan,
        "needed_ticks_per_s": res["n"] / INTERVAL,
        "round_wall_s": wall / len(steady),
        "tick_p50_ms": 1000 * _q(steady_lat, 0.5),
        "tick_p99_ms": 1000 * _q(steady_lat, 0.99),
        "queries_per_tick": sum(r["http_queries"] for r in steady) / ticks if ticks else math.nan,
        "queries_per_round": sum(r["http_queries"] for r in steady) / len(steady),
        "cpu_s_per_tick_ms": 1000 * sum(r["cpu_s"] for r in steady) / ticks if ticks else math.nan,
        "first_round_wall_s": first["wall_s"],
        "first_round_queries": first["http_queries"],
        "engine_cpu_s": res["cpu_s"],
        "peak_rss_mb": res["peak_rss_mb"],
        "prometheus_cpu_s": res.get("prometheus_cpu_s", math.nan),
        "setup_s": res["setup_s"],
        "phases": ";".join(f"{k}={v}" for k, v in sorted(res["phases"].items())),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    ap.add_argument("--rounds", type=int, nargs="+", default=[3, 2, 2],
                    help="rounds per size (the first one is the start round)")
    ap.add_argument("--steady-ticks", type=int, nargs="+", default=[100, 1000, 5000],
                    help="ticks measured per steady round and size (the earliest in the round)")
    ap.add_argument("--services", type=int, default=SERVICES)
    ap.add_argument("--worker", nargs=4, metavar=("N", "ROUNDS", "ADDRESS", "CAP"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--start-budget", type=float, default=240.0,
                    help="wall seconds per size for starting rollouts (the rest stay pending)")
    ap.add_argument("--no-results", action="store_true", help="do not rewrite results files")
    args = ap.parse_args(argv)
    if args.worker:
        n, rounds, address = int(args.worker[0]), int(args.worker[1]), args.worker[2]
        print(json.dumps(worker(n, rounds, address, args.db, int(args.worker[3]),
                                args.start_budget)))
        return 0

    from analyzer.demo.local_prometheus import PrometheusServer

    console = Console(width=150)
    if len(args.rounds) == 1:
        args.rounds = args.rounds * len(args.sizes)
    if len(args.steady_ticks) == 1:
        args.steady_ticks = args.steady_ticks * len(args.sizes)
    services = max(args.services, max(args.sizes))
    console.print(f"[bold]throughput[/]: sizes {args.sizes}, rounds {args.rounds} (first = "
                  f"start round), {THREADS} tick threads, simulated clock, {services} services "
                  "in Prometheus")
    tmp = Path(tempfile.mkdtemp(prefix="canary-throughput-"))
    rows: list[dict[str, Any]] = []
    try:
        t = time.perf_counter()
        om = tmp / "data.om"
        samples = write_openmetrics(om, services)
        gen_s = time.perf_counter() - t
        t = time.perf_counter()
        promtool_backfill(om, tmp / "prom")
        om.unlink()
        fill_s = time.perf_counter() - t
        console.print(f"wrote {samples} samples in {gen_s:.0f} s, promtool backfill {fill_s:.0f} s")
        with PrometheusServer(tmp / "prom") as prom:
            assert prom._proc is not None
            prom_pid = prom._proc.pid
            with Progress("[progress.description]{task.description}", BarColumn(),
                          MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
                bar = progress.add_task("engine runs", total=len(args.sizes))
                for n, rounds, cap in zip(args.sizes, args.rounds, args.steady_ticks,
                                          strict=True):
                    progress.update(bar, description=f"N={n}")
                    db = tmp / f"store-{n}.db"
                    p_cpu0 = proc_cpu_seconds(prom_pid)
                    proc = subprocess.run(
                        [sys.executable, __file__, "--worker", str(n), str(rounds), prom.url,
                         str(cap), "--db", str(db), "--start-budget", str(args.start_budget)],
                        capture_output=True, text=True, timeout=3600, check=False, cwd=ROOT,
                    )
                    if proc.returncode != 0:
                        console.print(proc.stderr[-3000:])
                        raise SystemExit(f"engine process for N={n} failed")
                    res = json.loads(proc.stdout.strip().splitlines()[-1])
                    res["prometheus_cpu_s"] = proc_cpu_seconds(prom_pid) - p_cpu0
                    rows.append(summarize(res))
                    r = rows[-1]
                    progress.console.print(
                        f"N={n}: {r['ticks_per_s']:.1f} ticks/s "
                        f"(need {r['needed_ticks_per_s']:.1f}), p50 {r['tick_p50_ms']:.0f} ms, "
                        f"p99 {r['tick_p99_ms']:.0f} ms, "
                        f"{r['queries_per_tick']:.3f} queries/tick, start round "
                        f"{r['first_round_wall_s']:.0f} s ({r['started']} started), "
                        f"peak RSS {r['peak_rss_mb']:.0f} MB")
                    progress.advance(bar)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    table = Table(title="engine throughput (simulated clock, real Prometheus, SQLite store)")
    cols = [("rollouts", "{:d}"), ("ticks_per_s", "{:.0f}"), ("needed_ticks_per_s", "{:.1f}"),
            ("tick_p50_ms", "{:.1f}"), ("tick_p99_ms", "{:.1f}"), ("queries_per_tick", "{:.3f}"),
            ("cpu_s_per_tick_ms", "{:.1f}"), ("engine_cpu_s", "{:.0f}"),
            ("peak_rss_mb", "{:.0f}"), ("prometheus_cpu_s", "{:.0f}")]
    for c, _ in cols:
        table.add_column(c)
    for r in rows:
        table.add_row(*[fmt.format(r[c]) for c, fmt in cols])
    console.print(table)
    if args.no_results:
        return 0
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with (RESULTS_DIR / "throughput.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    from benchmarks.dq_report import machine, replace_section

    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = ("| rollouts (started) | ticks/s (capacity) | ticks/s needed (N/30 s) | tick p50 ms "
            "| tick p99 ms | PromQL queries per tick | engine CPU ms per tick | start round s | "
            "engine CPU s (whole run) | peak RSS MB | Prometheus CPU s |\n|" + "---|" * 11)
    lines = [head] + [
        f"| {r['rollouts']} ({r['started']}) | {r['ticks_per_s']:.1f} | "
        f"{r['needed_ticks_per_s']:.1f} | "
        f"{r['tick_p50_ms']:.1f} | {r['tick_p99_ms']:.1f} | {r['queries_per_tick']:.3f} | "
        f"{r['cpu_s_per_tick_ms']:.1f} | {r['first_round_wall_s']:.0f} | "
        f"{r['engine_cpu_s']:.0f} | {r['peak_rss_mb']:.0f} | "
        f"{r['prometheus_cpu_s']:.0f} |"
        for r in rows
    ]
    body = (
        "## Engine throughput\n\n"
        f"Run {when} on {machine()}.\n\n"
        f"Real Prometheus holding {services} services x 2 versions ({samples} backfilled "
        f"samples, {len(LE)} latency buckets); one engine process per N (SQLite store file, "
        f"generic preset, dry-run router, our Judge, {THREADS} tick threads). The clock is "
        "simulated: each rollout ticks once per 30 s round (rollout i at second i mod 30), "
        "ticks run back to back, so ticks/s is capacity and must exceed N/30. Every N starts "
        "with one start round over all N rollouts (judge creation and the 10 min baseline, "
        "read one 30 s interval at a time: 20 windows x 3 metrics, shared by the rollouts "
        "starting in the same second; its wall time is the 'start round' column), then steady "
        "analysis rounds; "
        "steady ticks measured per N: "
        f"{', '.join(str(r['steady_ticks']) for r in rows)} (when fewer than N x rounds, the "
        "earliest started rollouts of each round in time order, to keep `make bench` within "
        "its time; all N rollouts exist in the store and the process). The start round "
        f"stops starting rollouts after {args.start_budget:.0f} s; '(started)' says how many "
        "it started in that time (the others stay pending and are not ticked). Queries per "
        "tick counts HTTP queries sent to Prometheus, retries included. CPU and peak RSS are "
        "the engine process's (getrusage); Prometheus's CPU during the run is from /proc.\n\n"
        + "\n".join(lines) + "\n"
    )
    (RESULTS_DIR / "throughput.md").write_text("# Engine throughput\n\n" + body.split("\n", 2)[2])
    replace_section(RESULTS_MD, "throughput", body)
    console.print(f"wrote {RESULTS_DIR / 'throughput.md'}, .csv and updated {RESULTS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
