"""The throughput benchmark's tables: printed, and written to benchmarks/results/throughput.md,
throughput.csv, throughput_parts.csv, throughput_scale_out.csv and the generated section of
benchmarks/RESULTS.md (benchmarks/throughput.py measures; this module only writes).
"""

from __future__ import annotations

import csv
import itertools
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.dq_report import machine, replace_section

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
GOAL_TICKS_PER_S = 300
GOAL_P99_MS = 1000
GOAL_RSS_MB = 500


def _f(x: Any, fmt: str) -> str:
    return "-" if isinstance(x, float) and math.isnan(x) else format(x, fmt)


def single_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| rollouts (started) | ticks/s (capacity) | ticks/s needed (N/30 s) | tick p50 ms "
             "| tick p99 ms | PromQL queries per tick | engine CPU ms per tick | start round s "
             "| start round queries | peak RSS MB | Prometheus CPU s |", "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['rollouts']} ({r['started']}) | {r['ticks_per_s']:.1f} | "
            f"{r['needed_ticks_per_s']:.1f} | {r['tick_p50_ms']:.1f} | {r['tick_p99_ms']:.1f} | "
            f"{r['queries_per_tick']:.4f} | {r['cpu_s_per_tick_ms']:.2f} | "
            f"{r['first_round_wall_s']:.0f} | {r['first_round_queries']} | "
            f"{r['peak_rss_mb']:.0f} | "
            f"{_f(r['prometheus_cpu_s'], '.0f')} |")
    return lines


def parts_table(row: dict[str, Any]) -> list[str]:
    parts = dict(row["_parts"])
    total = parts.pop("total", math.nan)
    lines = ["| part of a steady tick | CPU ms per tick | share |", "|---|---:|---:|"]
    for part, ms in sorted(parts.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {part} | {ms:.2f} | {100 * ms / total:.0f} % |")
    lines.append(f"| **total** | **{total:.2f}** | 100 % |")
    return lines


def profile_table(row: dict[str, Any]) -> list[str]:
    prof = row["_profile"]
    lines = ["| function (cProfile, CPU clock) | calls per tick | own ms per tick (profiled) "
             "| share |", "|---|---:|---:|---:|"]
    for f in prof["top"]:
        lines.append(f"| `{f['function']}` | {f['calls_per_tick']:.1f} | "
                     f"{f['own_ms_per_tick']:.3f} | {100 * f['share']:.1f} % |")
    return lines


def scale_table(scale: dict[str, Any]) -> list[str]:
    lines = ["| replicas | rollouts | ticks/s (needed) | intervals ticked exactly once | double "
             "ticks | missed intervals | rollouts ticked by 2 replicas | gap between ticks "
             "p50 / p99 / max s | engine CPU ms per tick | database CPU ms per tick | "
             "transactions per tick | rows written per tick | WAL KB per tick |",
             "|" + "---|" * 13]
    for w in (scale["three"], scale["two"]):
        lines.append(
            f"| {w['replicas']} | {scale['rollouts']} | {w['ticks_per_s']:.0f} "
            f"({w['needed_ticks_per_s']:.0f}) | {100 * w['exactly_once']:.2f} % | "
            f"{w['double']} | {w['missed']} | {w['multi_replica']} | "
            f"{w['gap_p50_s']:.1f} / {w['gap_p99_s']:.1f} / {w['gap_max_s']:.1f} | "
            f"{w['engine_cpu_ms_per_tick']:.2f} | {w['db_cpu_ms_per_tick']:.2f} | "
            f"{w['db_xacts_per_tick']:.2f} | {w['db_rows_written_per_tick']:.2f} | "
            f"{w['db_wal_kb_per_tick']:.1f} |")
    return lines


def goals(rows: list[dict[str, Any]], scale: dict[str, Any] | None) -> list[str]:
    big = max(rows, key=lambda r: r["rollouts"])
    per_tick = [r["queries_per_tick"] for r in rows]
    per_round = [r["queries_per_round"] for r in rows]
    not_growing = all(b <= a * 1.05 for a, b in itertools.pairwise(per_tick))

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed (a loss)**"

    out = [
        f"- >= {GOAL_TICKS_PER_S} ticks/s from one process at N = {big['rollouts']}: "
        f"{big['ticks_per_s']:.0f}: {verdict(big['ticks_per_s'] >= GOAL_TICKS_PER_S)}",
        f"- p99 tick < 1 s at N = {big['rollouts']}: {big['tick_p99_ms']:.0f} ms: "
        f"{verdict(big['tick_p99_ms'] < GOAL_P99_MS)}",
        "- PromQL queries per tick not growing with N: "
        + ", ".join(f"{q:.4f}" for q in per_tick)
        + " (per 30 s round: " + ", ".join(f"{q:.0f}" for q in per_round) + "): "
        + verdict(not_growing),
        f"- peak RSS < {GOAL_RSS_MB} MB at N = {big['rollouts']}: "
        f"{big['peak_rss_mb']:.0f} MB: {verdict(big['peak_rss_mb'] < GOAL_RSS_MB)}",
    ]
    if scale is not None:
        t = scale["three"]
        out.append(
            f"- scale-out, every rollout ticked by exactly one replica per interval: "
            f"{100 * t['exactly_once']:.2f} % of intervals, {t['multi_replica']} rollouts "
            "ticked by two replicas: "
            f"{verdict(t['exactly_once'] >= 0.999 and not t['multi_replica'])}")
        out.append(
            f"- take-over of a SIGKILLed replica's {scale['victim_rollouts']} rollouts: "
            f"{scale['taken_over']} taken over, median {scale['takeover_p50_s']:.0f} s, the last "
            f"after {scale['takeover_max_s']:.0f} s")
    return out


def print_tables(console: Console, rows: list[dict[str, Any]],
                 scale: dict[str, Any] | None) -> None:
    table = Table(title="engine throughput (simulated clock, real Prometheus, SQLite store)")
    cols = [("rollouts", "{:d}"), ("ticks_per_s", "{:.0f}"), ("needed_ticks_per_s", "{:.1f}"),
            ("tick_p50_ms", "{:.1f}"), ("tick_p99_ms", "{:.1f}"), ("queries_per_tick", "{:.4f}"),
            ("cpu_s_per_tick_ms", "{:.2f}"), ("peak_rss_mb", "{:.0f}"),
            ("prometheus_cpu_s", "{:.0f}")]
    for c, _ in cols:
        table.add_column(c)
    for r in rows:
        table.add_row(*[fmt.format(r[c]) for c, fmt in cols])
    console.print(table)
    big = max(rows, key=lambda r: r["rollouts"])
    for line in parts_table(big):
        console.print(line)
    if big["_profile"]:
        for line in profile_table(big):
            console.print(line)
    if scale is not None:
        for line in scale_table(scale):
            console.print(line)
    for line in goals(rows, scale):
        console.print(line)


def write_results(rows: list[dict[str, Any]], scale: dict[str, Any] | None, *, services: int,
                  samples: int, start_budget: float) -> None:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    plain = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    with (RESULTS_DIR / "throughput.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(plain[0]))
        w.writeheader()
        for r in plain:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    big = max(rows, key=lambda r: r["rollouts"])
    with (RESULTS_DIR / "throughput_parts.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rollouts", "part", "cpu_ms_per_tick"])
        for part, ms in big["_parts"].items():
            w.writerow([big["rollouts"], part, f"{ms:.4g}"])
        if big["_profile"]:
            w.writerow([])
            w.writerow(["rollouts", "function", "calls_per_tick", "own_ms_per_tick_profiled",
                        "share"])
            for fn in big["_profile"]["top"]:
                w.writerow([big["rollouts"], fn["function"], f"{fn['calls_per_tick']:.4g}",
                            f"{fn['own_ms_per_tick']:.4g}", f"{fn['share']:.4g}"])
    if scale is not None:
        with (RESULTS_DIR / "throughput_scale_out.csv").open("w", newline="") as f:
            keys = list(scale["three"])
            w = csv.writer(f)
            w.writerow(["rollouts", *keys, "victim_rollouts", "taken_over", "takeover_p50_s",
                        "takeover_max_s"])
            for win in (scale["three"], scale["two"]):
                w.writerow([scale["rollouts"], *[f"{win[k]:.6g}" if isinstance(win[k], float)
                                                 else win[k] for k in keys],
                            scale["victim_rollouts"], scale["taken_over"],
                            f"{scale['takeover_p50_s']:.4g}", f"{scale['takeover_max_s']:.4g}"])
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    steady = ", ".join(str(r["steady_ticks"]) for r in rows)
    body = [
        "## Engine throughput", "",
        f"Run {when} on {machine()}.", "",
        f"Real Prometheus holding {services} services x 2 versions ({samples} backfilled "
        "samples, 6 latency buckets); one engine process per N (SQLite store file, generic "
        "preset, dry-run router, our Judge, 8 tick threads). The clock is simulated: each "
        "rollout ticks once per 30 s round (rollout i at second i mod 30), ticks run back to "
        "back, so ticks/s is capacity and must exceed N/30. Every N starts with one start "
        "round over all N rollouts (judge creation and the 10 min baseline, read one 30 s "
        "interval at a time: 20 windows, from Prometheus one range query per metric for all "
        "20; its wall time and HTTP queries are the 'start round' columns), then steady "
        f"analysis rounds ({steady} steady "
        "ticks per N). The start round stops starting rollouts after "
        f"{start_budget:.0f} s; '(started)' says how many it started. Queries per tick "
        "counts HTTP queries sent to Prometheus, retries included. CPU (getrusage) and peak RSS "
        "(VmHWM) are the engine process's; Prometheus's CPU during the run is from /proc.", "",
        *single_table(rows), "",
        f"Where a steady tick's CPU goes at N = {big['rollouts']} (each part's thread CPU time "
        "during the measured rounds, benchmarks/tick_profile.py):", "",
        *parts_table(big), "",
    ]
    if big["_profile"]:
        prof = big["_profile"]
        body += [
            f"The top functions of one more round of {prof['ticks']} ticks under cProfile "
            f"(CPU clock, one thread; {prof['profiled_ms_per_tick']:.2f} ms per tick under "
            "the profiler, which slows Python-heavy code most, so read the shares):", "",
            *profile_table(big), ""]
    if scale is not None:
        body += [
            f"Scale-out (benchmarks/scale_out.py): three `canary run` replicas share "
            f"{scale['rollouts']} rollouts on one PostgreSQL (a throwaway cluster, fsync off), "
            "in real time, 30 s interval, the `simulate` source and the dry-run router (the "
            "table above measures Prometheus); every rollout ticked twice "
            f"{scale['warm_s']:.0f} s after the start, then "
            "a window of 3 intervals; then the replica owning most rollouts is SIGKILLed "
            "and, once the survivors have taken them over, a window of 2 intervals. A gap of "
            "15-45 s between two ticks of a rollout is one tick in its interval; less is a "
            "double tick, more a missed interval. The database's CPU is its processes' "
            "(/proc), its transactions, rows and WAL from pg_stat_database.", "",
            *scale_table(scale), "",
            f"SIGKILL: {scale['taken_over']} of the killed replica's "
            f"{scale['victim_rollouts']} rollouts ticked again by a survivor, median "
            f"{scale['takeover_p50_s']:.0f} s after the kill, the last after "
            f"{scale['takeover_max_s']:.0f} s.", ""]
    body += ["Goals (issue 21):", "", *goals(rows, scale), ""]
    text = "\n".join(body)
    (RESULTS_DIR / "throughput.md").write_text("# Engine throughput\n\n"
                                               + text.split("\n", 2)[2])
    replace_section(RESULTS_MD, "throughput", text)
