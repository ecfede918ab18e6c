"""Decision-quality benchmark: our judge against Kayenta-, Flagger-style judges, a repeated
Fisher test and Wald's SPRT oracle, on simulated rollouts with known truth.

Owns the scenario suite and the results table (benchmarks/results/decision_quality.{md,csv}
and its section of benchmarks/RESULTS.md). Every judge sees the same traffic model, the same
policy steps and step durations (analyzer.offline.montecarlo), seeded.

Reference policy (REFERENCE_POLICY_TEXT, built here so edits to the examples do not move the
benchmark): the shape of policies/istio-canary.yaml with its statistical checks only
(error-rate tolerance 0.25 + latency p99 tolerance 0.25, alpha 0.01; its absolute 5 % error
threshold is dropped so the A/A cells at 5 % base error measure the statistics), steps
5/10/25/50/100, interval 30 s, minStepDuration 2 m, maxStepDuration 30 m, onInconclusive pause.

Traffic: scenarios are named by the canary's request rate at the first step (5 % weight); the
service's total rate is 20x that. Stable latency: lognormal, median 50 ms, p99 280 ms (so the
baseline's p99 bucket bound is 300 ms in every run).

Run: `.venv/bin/python benchmarks/decision_quality.py [--runs-aa 200 --runs 100 --seed 20240101
--workers 2]`; `--quick` for a smoke run (not written to RESULTS.md).
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from analyzer.core.judge import Judge  # noqa: E402
from analyzer.offline.montecarlo import (  # noqa: E402
    Latency,
    RunResult,
    Scenario,
    SimulationSummary,
    simulate_rollouts,
)
from analyzer.policy import Policy, parse_policy  # noqa: E402
from benchmarks.peers import FlaggerJudge, KayentaJudge, OracleJudge, RepeatedFisherJudge  # noqa: E402

RESULTS_DIR = ROOT / "benchmarks" / "results"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
JUDGES = ("ours", "kayenta", "flagger", "fisher", "oracle")
JUDGE_LABEL = {
    "ours": "ours (anytime-valid)",
    "kayenta": "Kayenta-style",
    "flagger": "Flagger-style",
    "fisher": "repeated Fisher",
    "oracle": "oracle SPRT",
}
FIRST_WEIGHT = 0.05  # the canary's share at the first step
BASE_LATENCY = Latency(0.050, 0.280)  # stable: median 50 ms, p99 280 ms
CHUNK = 50  # runs per worker task: coarse enough to be cheap, fine enough to balance 2 cores


REFERENCE_POLICY_TEXT = """
apiVersion: canary-analyzer.io/v1alpha1
kind: RolloutPolicy
metadata: {name: bench-reference}
spec:
  target: {namespace: shop, service: checkout, stable: v1, canary: v2}
  router: {provider: dry-run}
  strategy: {type: canary, steps: [5, 10, 25, 50, 100]}
  analysis: {interval: 30s, minStepDuration: 2m, maxStepDuration: 30m}
  metrics: {source: simulate}
  checks:
    - {type: error-rate, tolerance: 0.25}
    - {type: latency, quantiles: [0.99], tolerance: 0.25}
  decision: {alpha: 0.01, onInconclusive: pause, onDataFailure: pause}
"""


def reference_policy() -> Policy:
    """The shape of policies/istio-canary.yaml (steps, timing, statistical checks, alpha),
    written here so the benchmark does not change when that example is edited; its absolute
    5 % error threshold is left out so the 5 % A/A cells measure the statistics."""
    return parse_policy(REFERENCE_POLICY_TEXT, "benchmarks/decision_quality.py")


def suite() -> list[Scenario]:
    """The scenarios, each with its truth."""
    base = BASE_LATENCY
    out: list[Scenario] = []
    for c_rps in (1, 10, 100, 1000):
        for err in (0.001, 0.01, 0.05):
            out.append(Scenario(
                f"A/A canary {c_rps} rps, errors {err:.1%}", rps=c_rps / FIRST_WEIGHT,
                error_rate=err, latency=base, regression=False,
                description="identical versions",
            ))
    mid = 10 / FIRST_WEIGHT  # 200 rps in all: 10 canary rps at 5 %
    out.append(Scenario(
        "A/A bursty errors (b=0.5)", rps=mid, error_rate=0.01, latency=base, burstiness=0.5,
        regression=False,
        description="identical versions; each version's error rate x Gamma(2, 0.5) per tick",
    ))
    out.append(Scenario(
        "A/A diurnal (x0.2..x1.8 in 2h)", rps=mid, error_rate=0.01, latency=base,
        diurnal_amplitude=0.8,
        diurnal_error_amplitude=0.8, diurnal_period_s=7200, regression=False,
        description="identical versions; traffic and error rate swing +-80 % over 2 h",
    ))
    for mult in (1.2, 1.5, 2.0, 5.0):
        out.append(Scenario(
            f"errors x{mult:g}", rps=mid, error_rate=0.01, latency=base, error_multiplier=mult,
            regression=True,
            description=f"canary error rate {mult:g}x stable's 1 %"
            + (" (inside tolerance 1.25)" if mult <= 1.25 else ""),
        ))
    for pct in (10, 30, 100):
        out.append(Scenario(
            f"latency p99 +{pct}%", rps=mid, error_rate=0.01, latency=base,
            canary_latency=base.scaled(p99_factor=1 + pct / 100), regression=True,
            description=f"canary p99 {280 * (1 + pct / 100):.0f} ms, median 50 ms",
        ))
    out.append(Scenario(
        "latency median +50%", rps=mid, error_rate=0.01, latency=base,
        canary_latency=base.scaled(median_factor=1.5), regression=True,
        description="canary median 75 ms, p99 unchanged 280 ms",
    ))
    out.append(Scenario(
        "errors x2 above 25% weight", rps=mid, error_rate=0.01, latency=base, error_multiplier=2.0,
        regression_above_weight=25, regression=True,
        description="canary healthy at 5/10/25 %, 2x errors at 50 %",
    ))
    return out


def make_factory(judge: str, scenario: Scenario) -> Callable[[Policy], Any]:
    if judge == "ours":
        return Judge
    if judge == "kayenta":
        return KayentaJudge
    if judge == "flagger":
        return FlaggerJudge
    if judge == "fisher":
        return RepeatedFisherJudge
    if judge == "oracle":
        return functools.partial(OracleJudge, scenario=scenario)
    raise ValueError(judge)


@dataclass(frozen=True)
class Task:
    scenario_index: int
    judge: str
    chunk: int
    runs: int
    seed: int


def run_task(task: Task) -> tuple[Task, tuple[RunResult, ...], float]:
    scenario = suite()[task.scenario_index]
    policy = reference_policy()
    t = time.process_time()
    summary = simulate_rollouts(
        policy, scenario, task.runs, seed=task.seed + 1000 * task.chunk,
        judge_factory=make_factory(task.judge, scenario),
    )
    return task, summary.results, time.process_time() - t


def _cost(task: Task, scenario: Scenario) -> float:
    """Rough CPU cost, to start the heavy tasks first."""
    w = {"ours": 10.0, "kayenta": 2.0, "fisher": 1.0, "flagger": 0.3, "oracle": 0.5}[task.judge]
    return w * task.runs * (3.0 if not scenario.is_regression else 1.0)


# --------------------------------------------------------------------------- output


def _minutes(est: Any) -> str:
    if est is None or math.isnan(est.value):
        return "-"
    se = "" if math.isnan(est.stderr) else f" ± {est.stderr / 60:.1f}"
    return f"{est.value / 60:.1f}{se}"


def _pct(est: Any) -> str:
    if est is None or math.isnan(est.value):
        return "-"
    return f"{100 * est.value:.1f} ± {100 * est.stderr:.1f}"


def rows(summaries: dict[tuple[int, str], SimulationSummary],
         scenarios: list[Scenario]) -> list[dict[str, Any]]:
    out = []
    for si, sc in enumerate(scenarios):
        oracle = summaries.get((si, "oracle"))
        for j in JUDGES:
            s = summaries.get((si, j))
            if s is None:
                continue
            ratio = math.nan
            # only where both mostly detect: a median over a handful of rollbacks says little
            if (j == "ours" and oracle is not None and sc.is_regression
                    and s.rollback_rate.value >= 0.5 and oracle.rollback_rate.value >= 0.5):
                a, b = s.median_time_to_rollback.value, oracle.median_time_to_rollback.value
                if not math.isnan(a) and not math.isnan(b) and b > 0:
                    ratio = a / b
            out.append({
                "scenario": sc.name,
                "truth": "regression" if sc.is_regression else "healthy",
                "judge": j,
                "runs": s.runs,
                "seed": s.seed,
                "false_rollback_rate": s.rollback_rate.value if not sc.is_regression else None,
                "detection_rate": s.rollback_rate.value if sc.is_regression else None,
                "rollback_rate": s.rollback_rate.value,
                "rollback_rate_se": s.rollback_rate.stderr,
                "promote_rate": s.promote_rate.value,
                "inconclusive_rate": s.inconclusive_rate.value,
                "median_s_to_rollback": s.median_time_to_rollback.value,
                "median_s_to_rollback_se": s.median_time_to_rollback.stderr,
                "p90_s_to_rollback": s.p90_time_to_rollback.value,
                "median_s_to_promote": s.median_time_to_promote.value,
                "median_s_to_promote_se": s.median_time_to_promote.stderr,
                "ours_over_oracle_rollback_time": ratio,
                "_summary": s,
            })
    return out


def write_csv(table: list[dict[str, Any]], path: Path) -> None:
    keys = [k for k in table[0] if not k.startswith("_")]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in table:
            w.writerow({k: ("" if r[k] is None or (isinstance(r[k], float) and math.isnan(r[k]))
                            else (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]))
                        for k in keys})


def markdown_table(table: list[dict[str, Any]], alpha: float) -> str:
    head = ("| scenario | truth | judge | runs | false rollback % | detection % | promoted % | "
            "inconclusive % | median min to rollback | median min to promote | "
            "ours / oracle (rollback time) |")
    lines = [head, "|" + "---|" * 11]
    for r in table:
        s: SimulationSummary = r["_summary"]
        fr = _pct(s.rollback_rate) if r["truth"] == "healthy" else ""
        if fr and r["judge"] == "ours" and s.rollback_rate.value > alpha:
            fr = f"**{fr}** (> alpha)"
        det = _pct(s.rollback_rate) if r["truth"] == "regression" else ""
        ratio = r["ours_over_oracle_rollback_time"]
        judge = JUDGE_LABEL[r["judge"]]
        if r["judge"] == "ours":
            judge = f"**{judge}**"
        lines.append(
            f"| {r['scenario']} | {r['truth']} | {judge} | {r['runs']} | {fr} | {det} | "
            f"{100 * s.promote_rate.value:.1f} | {100 * s.inconclusive_rate.value:.1f} | "
            f"{_minutes(s.median_time_to_rollback)} | {_minutes(s.median_time_to_promote)} | "
            f"{'' if math.isnan(ratio) else f'{ratio:.2f}'} |"
        )
    return "\n".join(lines)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    import numpy
    import scipy

    return (f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, Python "
            f"{platform.python_version()}, numpy {numpy.__version__}, scipy {scipy.__version__}; "
            f"git HEAD {commit or '?'} plus the working tree")


def replace_section(path: Path, name: str, body: str) -> None:
    """Rewrite the text between this script's markers in RESULTS.md, keeping the rest."""
    begin, end = f"<!-- BEGIN {name} (generated) -->", f"<!-- END {name} -->"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        pre = text.split(begin, 1)[0]
        post = text.split(end, 1)[1]
        text = pre + block + post
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def bar_lines(table: list[dict[str, Any]], alpha: float) -> list[str]:
    out = []
    for r in table:
        if r["judge"] != "ours" or r["truth"] != "healthy":
            continue
        s: SimulationSummary = r["_summary"]
        k = round(s.rollback_rate.value * s.runs)
        ok = s.rollback_rate.value <= alpha
        out.append(f"- {r['scenario']}: {k}/{s.runs} false rollbacks "
                   f"({100 * s.rollback_rate.value:.1f} %) "
                   f"{'<=' if ok else '**>**'} alpha {100 * alpha:g} %"
                   + ("" if ok else " **(misses the bar)**"))
    return out


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs-aa", type=int, default=200, help="runs per judge in healthy cells")
    ap.add_argument("--runs", type=int, default=100, help="runs per judge in regression cells")
    ap.add_argument("--seed", type=int, default=20240101)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--quick", action="store_true",
                    help="20 runs per cell, a few scenarios; does not touch RESULTS.md")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = ap.parse_args(argv)
    console = Console(width=150)

    scenarios = suite()
    policy = reference_policy()
    alpha = policy.spec.decision.alpha
    chosen = list(range(len(scenarios)))
    if args.quick:
        args.runs_aa = args.runs = 20
        chosen = [4, 12, 16, 18]
    tasks: list[Task] = []
    for si in chosen:
        sc = scenarios[si]
        n = args.runs if sc.is_regression else args.runs_aa
        for j in JUDGES:
            for c in range(math.ceil(n / CHUNK)):
                tasks.append(Task(si, j, c, min(CHUNK, n - c * CHUNK), args.seed))
    tasks.sort(key=lambda t: -_cost(t, scenarios[t.scenario_index]))
    total_runs = sum(t.runs for t in tasks)
    console.print(
        f"[bold]decision quality[/]: {len(chosen)} scenarios x {len(JUDGES)} judges, "
        f"{args.runs_aa} runs per healthy cell, {args.runs} per regression cell "
        f"({total_runs} simulated rollouts), seed {args.seed}, {args.workers} worker processes"
    )
    console.print("reference policy: the shape of policies/istio-canary.yaml without its absolute "
                  f"threshold (REFERENCE_POLICY_TEXT), alpha {alpha}")

    collected: dict[tuple[int, str], list[tuple[int, tuple[RunResult, ...]]]] = {}
    cpu: dict[str, float] = {j: 0.0 for j in JUDGES}
    started = time.perf_counter()
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
        bar = progress.add_task("simulated rollouts", total=total_runs)
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            pending = {pool.submit(run_task, t) for t in tasks}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    task, results, seconds = fut.result()
                    collected.setdefault((task.scenario_index, task.judge), []).append(
                        (task.chunk, results))
                    cpu[task.judge] += seconds
                    progress.advance(bar, task.runs)
    wall = time.perf_counter() - started

    summaries: dict[tuple[int, str], SimulationSummary] = {}
    for (si, j), chunks in collected.items():
        res = [r for _, rs in sorted(chunks, key=lambda c: c[0]) for r in rs]
        summaries[(si, j)] = SimulationSummary.from_results(scenarios[si], args.seed, res)
    picked = [scenarios[i] for i in chosen]
    remap = {(chosen.index(si), j): s for (si, j), s in summaries.items()}
    table = rows(remap, picked)

    view = Table(title="decision quality (rates in %, times in minutes)")
    for col in ("scenario", "judge", "rollback %", "promoted %", "t rollback", "t promote",
                "ours/oracle"):
        view.add_column(col)
    for r in table:
        s = r["_summary"]
        ratio = r["ours_over_oracle_rollback_time"]
        view.add_row(r["scenario"], r["judge"], _pct(s.rollback_rate),
                     f"{100 * s.promote_rate.value:.0f}", _minutes(s.median_time_to_rollback),
                     _minutes(s.median_time_to_promote),
                     "" if math.isnan(ratio) else f"{ratio:.2f}")
    console.print(view)
    console.print(f"wall time {wall:.0f} s; CPU seconds per judge: "
                  + ", ".join(f"{j} {cpu[j]:.0f}" for j in JUDGES))

    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    write_csv(table, args.out / f"decision_quality{suffix}.csv")
    md = markdown_table(table, alpha)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        f"Run {when} on {machine()}.\n\n"
        f"Seed {args.seed}; {args.runs_aa} runs per judge in each healthy (A/A) scenario, "
        f"{args.runs} in each regression scenario; {total_runs} simulated rollouts in "
        f"{wall:.0f} s wall time with {args.workers} worker processes "
        f"(CPU seconds: " + ", ".join(f"{j} {cpu[j]:.0f}" for j in JUDGES) + ").\n"
        "Rates are % of runs ± one Monte Carlo standard error (binomial; 1/runs shown when "
        "the rate is 0 or 100 %); times are minutes from the rollout's start to the decision, "
        "median ± bootstrap standard error. 'ours / oracle' divides our median time to "
        "rollback by the SPRT oracle's, where both detect in at least half the runs.\n"
    )
    (args.out / f"decision_quality{suffix}.md").write_text(
        "# Decision quality\n\n" + header + "\n" + md + "\n")
    console.print(f"wrote {args.out / f'decision_quality{suffix}.md'} and .csv")
    if not args.quick:
        bar = bar_lines(table, alpha)
        body = ("## Decision quality\n\n" + header + "\nScenarios (canary rate at the first step, "
                "5 %; the service gets 20x that):\n\n"
                + "\n".join(f"- **{s.name}**: {s.description}; {s.rps:g} rps in all"
                            for s in picked)
                + f"\n\nThe bar: our false-rollback rate <= alpha ({alpha:g}) in every A/A "
                "scenario.\n\n" + "\n".join(bar) + "\n\n" + md + "\n")
        replace_section(RESULTS_MD, "decision_quality", body)
        console.print(f"updated {RESULTS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
