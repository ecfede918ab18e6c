"""Engine throughput: N concurrent rollouts ticking every 30 s against a real Prometheus, and
three replicas sharing 15,000 rollouts on one PostgreSQL.

Owns the throughput tables (benchmarks/results/throughput.{md,csv}, throughput_parts.csv,
throughput_scale_out.csv and their section of benchmarks/RESULTS.md).

What is measured, honestly:
- one real Prometheus (the Debian binary, analyzer.demo.local_prometheus) holding backfilled
  series (promtool tsdb create-blocks-from openmetrics) for 10,000 services, each with a stable
  and a canary version: `http_requests_total{namespace, service, version, code}` (2xx and 5xx)
  and `http_request_duration_seconds_bucket` (6 buckets), a sample every 30 s for 15 minutes;
- for each N in (100, 1000, 10000), a fresh engine process (analyzer.daemon.engine.Engine with
  a SQLite store file, the generic Prometheus preset, the dry-run router, our Judge, the
  shared query coalescer) with N rollouts of the same policy shape, one per service;
- the clock is SIMULATED: every rollout ticks every 30 s of simulated time, rollout i at
  offset i mod 30 s within each 30 s round (as rollouts started at different seconds would),
  and the ticks are driven back to back by 8 threads (APScheduler's thread pool runs jobs the
  same way), so the figures are the engine's capacity, not a 30 s wall-clock wait. The first
  round (rollout start + the baseline, read interval by interval) is reported separately from
  the steady rounds;
- ticks/s = steady ticks / wall seconds; tick latency = Engine.tick wall time per call;
  PromQL queries per tick = HTTP queries sent / ticks; CPU seconds and peak RSS (VmHWM) of
  the engine process; Prometheus' own CPU is not counted (another process, reported
  separately from /proc);
- where a steady tick's CPU goes (benchmarks/tick_profile.py): each part's thread CPU time
  during the measured rounds, and one more round under cProfile for the top functions;
- scale-out (benchmarks/scale_out.py): three `canary run` replicas on a throwaway PostgreSQL
  cluster, in real time.

Run: `.venv/bin/python benchmarks/throughput.py [--sizes 100 1000 10000] [--rounds 3 3 3]
[--steady-ticks 100 1000 10000] [--scale-out 15000 | --no-scale-out] [--data DIR]`.
"""

from __future__ import annotations

import argparse
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

RESULTS_DIR = ROOT / "benchmarks" / "results"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
SERVICES = 10_000
STEP = 30  # seconds between samples
SPAN = 15 * 60  # seconds of data
LE = (0.05, 0.1, 0.25, 0.5, 1.0, math.inf)
INTERVAL = 30
THREADS = 8
PROFILE_TICKS = 2000  # the cProfile round of the largest N


def new_base() -> int:
    """Hour-aligned, 8 h in the past: backfilled blocks must not overlap the head block."""
    return (int(time.time()) - 8 * 3600) // 3600 * 3600


def start_of(base: int) -> int:
    return base + 11 * 60  # first tick: leaves a 10 min baseline window with data


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


def write_openmetrics(path: Path, services: int, base: int) -> int:
    """Series for `services` services from `base`, streamed to `path`; returns the number of
    samples."""
    import numpy as np

    rng = np.random.default_rng(7)
    steps = SPAN // STEP + 1
    ts = [base + i * STEP for i in range(steps)]
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


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that across
    exec, so a worker would report the driver's peak from before it started."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


def proc_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, IndexError, ValueError):
        return math.nan


# --------------------------------------------------------------------------- the engine side


def worker(n: int, rounds: int, address: str, db: Path, cap: int, start_budget: float,
           base: int, profile_ticks: int) -> dict[str, Any]:
    """Runs inside the engine process: N rollouts, `rounds` rounds of ticks; steady rounds
    tick the first `cap` started rollouts in time order (all of them when cap >= N). The start
    round stops starting rollouts after `start_budget` seconds of wall time. Then, with
    `profile_ticks`, one more round of that many ticks under cProfile."""
    from analyzer.daemon.engine import Engine
    from analyzer.daemon.store import Store
    from analyzer.policy import Policy, parse_policy
    from analyzer.sources.prometheus.source import SHARED_COALESCER, PrometheusMetricSource
    from benchmarks.tick_profile import PartClock, profile_round

    clock = PartClock().install()
    t_setup = time.perf_counter()
    store = Store(f"sqlite:///{db}")
    store.migrate()
    sources: list[PrometheusMetricSource] = []

    def source_factory(policy: Any) -> PrometheusMetricSource:
        s = PrometheusMetricSource(policy)
        sources.append(s)
        return s

    engine = Engine(store, source_factory=source_factory)
    start = datetime.fromtimestamp(start_of(base), UTC)
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

    def at(r: int, i: int) -> datetime:
        return start + timedelta(seconds=r * INTERVAL + (i % INTERVAL))

    started: set[int] = set()
    per_round: list[dict[str, Any]] = []
    latencies: list[list[float]] = []
    lock = threading.Lock()
    # ticks in time order within a round, as the scheduler would fire them
    in_time_order = sorted(range(n), key=lambda i: i % INTERVAL)
    for r in range(rounds):
        lat: list[float] = []
        q0, c0 = sent(), SHARED_COALESCER.queries
        cpu0 = time.process_time()
        clock.reset()
        began = [time.perf_counter()]

        def one(i: int, r: int = r, lat: list[float] = lat, began: list[float] = began) -> None:
            if r == 0 and time.perf_counter() - began[0] > start_budget:
                return  # out of time: this rollout is never started
            t = time.perf_counter()
            engine.tick(ids[i], at(r, i))
            d = time.perf_counter() - t
            with lock:
                lat.append(d)
                if r == 0:
                    started.add(i)

        order = in_time_order if r == 0 else [i for i in in_time_order if i in started][:cap]
        w0 = began[0] = time.perf_counter()
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            list(pool.map(one, order))
        wall = time.perf_counter() - w0
        per_round.append({
            "round": r, "ticks": len(lat), "wall_s": wall, "cpu_s": time.process_time() - cpu0,
            "http_queries": sent() - q0, "coalesced_queries": SHARED_COALESCER.queries - c0,
            "parts_ms": clock.per_tick_ms(),
        })
        latencies.append(lat)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    clock.uninstall()
    profile = None
    if profile_ticks:
        r = rounds
        subset = [i for i in in_time_order if i in started][:profile_ticks]
        profile = profile_round(lambda i=i: engine.tick(ids[i], at(r, i)) for i in subset)
    phases: dict[str, int] = {}
    for i in ids:
        p = str(store.get(i).phase)
        phases[p] = phases.get(p, 0) + 1
    return {
        "n": n, "rounds": rounds, "setup_s": setup_s, "per_round": per_round,
        "latencies": latencies, "cpu_s": ru.ru_utime + ru.ru_stime,
        "peak_rss_mb": peak_rss_mb(), "phases": phases, "started": len(started),
        "profile": profile,
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
    parts: dict[str, float] = {}
    for r in steady:  # weighted by ticks
        for part, ms in r["parts_ms"].items():
            parts[part] = parts.get(part, 0.0) + ms * r["ticks"] / max(ticks, 1)
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
        "_parts": parts,
        "_profile": res.get("profile"),
    }


def prepare_data(console: Console, services: int, keep: Path | None,
                 tmp: Path) -> tuple[Path, int, int]:
    """The backfilled Prometheus data directory, its base time and sample count: made in
    `tmp`, or kept in (and reused from) `keep`."""
    where = keep or tmp
    meta = where / "meta.json"
    if keep is not None and meta.exists():
        m = json.loads(meta.read_text())
        if m.get("services", 0) >= services:
            console.print(f"reusing the backfilled data in {keep} ({m['samples']} samples)")
            return where / "prom", int(m["base"]), int(m["samples"])
    where.mkdir(parents=True, exist_ok=True)
    base = new_base()
    t = time.perf_counter()
    om = where / "data.om"
    samples = write_openmetrics(om, services, base)
    gen_s = time.perf_counter() - t
    t = time.perf_counter()
    promtool_backfill(om, where / "prom")
    om.unlink()
    console.print(f"wrote {samples} samples in {gen_s:.0f} s, promtool backfill "
                  f"{time.perf_counter() - t:.0f} s")
    meta.write_text(json.dumps({"services": services, "base": base, "samples": samples}))
    return where / "prom", base, samples


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10_000])
    ap.add_argument("--rounds", type=int, nargs="+", default=[3, 3, 3],
                    help="rounds per size (the first one is the start round)")
    ap.add_argument("--steady-ticks", type=int, nargs="+", default=[100, 1000, 10_000],
                    help="ticks measured per steady round and size (the earliest in the round)")
    ap.add_argument("--services", type=int, default=SERVICES)
    ap.add_argument("--scale-out", type=int, default=15_000,
                    help="rollouts shared by three replicas on PostgreSQL (0: skip)")
    ap.add_argument("--no-scale-out", action="store_true")
    ap.add_argument("--data", type=Path, help="keep the backfilled Prometheus data here and "
                    "reuse it next time (default: a temporary directory)")
    ap.add_argument("--worker", nargs=6, metavar=("N", "ROUNDS", "ADDRESS", "CAP", "BASE",
                                                   "PROFILE"), help=argparse.SUPPRESS)
    ap.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--start-budget", type=float, default=240.0,
                    help="wall seconds per size for starting rollouts (the rest stay pending)")
    ap.add_argument("--no-results", action="store_true", help="do not rewrite results files")
    args = ap.parse_args(argv)
    if args.worker:
        n, rounds, address, cap, base, profile = args.worker
        print(json.dumps(worker(int(n), int(rounds), address, args.db, int(cap),
                                args.start_budget, int(base), int(profile))))
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
    scale: dict[str, Any] | None = None
    try:
        prom_dir, base, samples = prepare_data(console, services, args.data, tmp)
        with PrometheusServer(prom_dir) as prom:
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
                    profile = PROFILE_TICKS if n == max(args.sizes) else 0
                    proc = subprocess.run(
                        [sys.executable, __file__, "--worker", str(n), str(rounds), prom.url,
                         str(cap), str(base), str(profile), "--db", str(db),
                         "--start-budget", str(args.start_budget)],
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
                        f"p99 {r['tick_p99_ms']:.0f} ms, {r['cpu_s_per_tick_ms']:.2f} CPU ms/tick, "
                        f"{r['queries_per_tick']:.3f} queries/tick, start round "
                        f"{r['first_round_wall_s']:.0f} s ({r['started']} started, "
                        f"{r['first_round_queries']} queries), "
                        f"peak RSS {r['peak_rss_mb']:.0f} MB")
                    progress.advance(bar)
        if args.scale_out and not args.no_scale_out:
            from benchmarks.scale_out import run_scale_out

            scale = run_scale_out(args.scale_out, console)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    from benchmarks.throughput_report import print_tables, write_results

    print_tables(console, rows, scale)
    if not args.no_results:
        write_results(rows, scale, services=services, samples=samples,
                      start_budget=args.start_budget)
        console.print(f"wrote {RESULTS_DIR / 'throughput.md'}, the .csv files and updated "
                      f"{RESULTS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
