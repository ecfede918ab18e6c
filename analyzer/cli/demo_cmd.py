"""`canary demo`: a real local rollout end to end (see analyzer/demo/run.py and docs/demo.md)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from analyzer.cli.app import app
from analyzer.cli.common import print_policy_problems
from analyzer.cli.tables import Column, print_table
from analyzer.demo.scenario import REPO_POLICIES, DemoOptions
from analyzer.policy import PolicyError


@app.command()
def demo(
    short: bool = typer.Option(False, "--short", help="fewer steps, shorter soak (CI: ~1 min)"),
    out: Path = typer.Option(Path("out"), "--out", help="directory for reports and demo.db"),
    fallback_simulate: bool = typer.Option(
        False, "--fallback-simulate",
        help="run on the simulate source and dry-run router even when nginx and Prometheus "
        "are installed"),
    rps: float = typer.Option(250.0, "--rps", min=20, max=1000,
                              help="requests per second per service through nginx"),
    time_limit: float | None = typer.Option(
        None, "--time-limit", min=10,
        help="seconds the rollouts may take before the demo aborts them "
        "(default 260, --short 100)"),
    policies: Path = typer.Option(
        REPO_POLICIES, "--policies",
        help="directory with demo-healthy.yaml and demo-regressed.yaml (e.g. edited copies)"),
    speed: float = typer.Option(8.0, "--speed", min=0, hidden=True,
                                help="simulated mode: simulated seconds per second (0: no wait)"),
) -> None:
    """Run two canary rollouts on loopback: v2 is promoted step by step, v3 rolled back.

    Starts the sample service (v1, v2, v3), real nginx and Prometheus on free ports, sends
    steady traffic and lets the engine run policies/demo-healthy.yaml and demo-regressed.yaml,
    with a live view. Reports go to OUT/<rollout>/. Without nginx or Prometheus it runs the
    same policies on simulated traffic, and says so.
    """
    from analyzer.daemon.store import StoreError
    from analyzer.demo.run import run_demo
    from analyzer.demo.stack import DemoError
    from analyzer.demo.view import SUMMARY_COLUMNS, summary_rows, summary_title

    console = Console(highlight=False)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    opts = DemoOptions(short=short, out_dir=out, fallback_simulate=fallback_simulate, rps=rps,
                       time_limit=time_limit, speed=speed,
                       policies_dir=policies)
    try:
        result = run_demo(opts, console)
    except PolicyError as e:
        print_policy_problems(e)
        err.print("a demo policy is invalid: fix the field named above (the shipped files are "
                  "policies/demo-healthy.yaml and policies/demo-regressed.yaml)")
        raise typer.Exit(1) from None
    except (DemoError, StoreError, OSError) as e:
        err.print(f"[red]error[/] the demo could not run: {e}")
        raise typer.Exit(1) from None
    if result.interrupted:
        err.print("demo interrupted; everything it started is stopped")
        raise typer.Exit(130)
    console.print()
    print_table(console, [Column(c) for c in SUMMARY_COLUMNS], summary_rows(result),
                title=summary_title(result), title_justify="left")
    if result.mode != "real":
        console.print(f"[yellow]SIMULATED[/]: {result.mode_reason}; times are simulated "
                      "seconds. Install nginx and prometheus for the real demo.", soft_wrap=True)
    names = " ".join(r.name for r in result.rollouts)
    for r in result.rollouts:
        if r.report is not None:
            console.print(f"report {r.name}: {r.report}", soft_wrap=True)
        else:
            err.print(f"[yellow]no report for {r.name}[/]: {r.report_error}")
    first = result.rollouts[0].name if result.rollouts else ""
    console.print(f"decision log: {result.db_url}  (canary history {first} --db "
                  f"{result.db_url})", soft_wrap=True)
    if not result.ok:
        bad = [r for r in result.rollouts if not r.as_expected]
        err.print("[red]unexpected outcome[/]: " + "; ".join(
            f"{r.name} ended {r.phase} (expected {r.expected}): {r.reason}" for r in bad)
            + f" (rollouts: {names})")
        raise typer.Exit(1)
