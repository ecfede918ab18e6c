"""Tools for SREs and postmortems: `canary simulate`, `canary backtest`, `canary export`,
`canary report`.

Thin CLI over the public API (the notebooks call the same functions): `analyzer.offline.tuning`
(simulation scenarios and grids over `analyzer.offline.montecarlo`), `analyzer.offline.backtest`,
`analyzer.offline.export` and `analyzer.offline.report`.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console

from analyzer.cli.app import app
from analyzer.cli.common import load_policy_or_exit
from analyzer.cli.tables import Column, print_table, stdout_console
from analyzer.daemon.store.errors import StoreError
from analyzer.daemon.store.urls import DEFAULT_DB
from analyzer.policy import Policy

if TYPE_CHECKING:  # for annotations only: the commands import what they use when run
    from analyzer.daemon.store import Store
    from analyzer.offline.backtest import BacktestResult
    from analyzer.offline.montecarlo import Estimate, SimulationSummary


err = Console(stderr=True, highlight=False, soft_wrap=True)
DB_HELP = "database URL: sqlite:///file.db or postgresql://user@host/db (env CANARY_DB)"


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error[/red] {message}", markup=True)
    raise typer.Exit(code)


def _open_store(db: str | None) -> Store:
    """Open an existing store (a missing SQLite file is an error, not a new empty store)."""
    from analyzer.daemon.store import Store

    try:
        return Store.open_existing(db)
    except StoreError as e:
        _fail(str(e))


def _rollout_id(store: Store, ref: str) -> int:
    from analyzer.offline.export import resolve_rollout

    try:
        return resolve_rollout(store, ref).id
    except StoreError as e:
        _fail(f"{e} in {store.url_redacted}")


def _fmt_time(e: Estimate | None) -> str:
    if e is None or math.isnan(e.value):
        return "-"
    se = "" if math.isnan(e.stderr) else f" ± {_secs(e.stderr)}"
    return f"{_secs(e.value)}{se}"


def _secs(s: float) -> str:
    s = round(s)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _fmt_rate(e: Estimate | None) -> str:
    if e is None or math.isnan(e.value):
        return "-"
    return f"{100 * e.value:.1f}% ± {100 * e.stderr:.1f}"


# --------------------------------------------------------------------------- simulate


def _progress_bar(total: int, enabled: bool) -> tuple[Any, Callable[[int], None] | None]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    if not enabled:
        return None, None
    bar = Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), console=err, transient=True)
    task = bar.add_task("runs", total=total)
    return bar, lambda k: bar.advance(task, k)


@app.command()
def simulate(
    policy_file: Path = typer.Argument(..., metavar="POLICY", help="the rollout policy (YAML)"),
    more_grid: list[str] | None = typer.Argument(
        None, metavar="[KEY=V1,V2 ...]", help="more grid axes (after --grid)", show_default=False),
    rps: float | None = typer.Option(
        None, "--rps", help="requests per second, both versions (default: the policy's "
        "simulate block)"),
    base_error_rate: float | None = typer.Option(
        None, "--base-error-rate", help="stable error rate, e.g. 0.01 (default: the policy's "
        "simulate block)"),
    regression: list[str] | None = typer.Option(
        None, "--regression", help="a regression scenario: error-rate=2x, p99=+30%, p50=+20%, "
        "latency=+30%, or several joined by commas; repeat for more scenarios "
        "(default: error-rate=2x)"),
    runs: int = typer.Option(200, "--runs", min=1, help="simulated rollouts per scenario"),
    seed: int = typer.Option(0, "--seed", help="random seed (same seed, same numbers)"),
    grid: list[str] | None = typer.Option(
        None, "--grid", help="sweep settings: alpha=0.01,0.05 tolerance=0.1,0.25 (keys: alpha, "
        "tolerance, CHECK.tolerance, minSamples, interval, minStepDuration, maxStepDuration, "
        "negligibleRate, dataFailureLimit)"),
    burstiness: float = typer.Option(
        0.0, "--burstiness", min=0.0, help="overdispersion of errors (0: Poisson)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON document on stdout"),
) -> None:
    """How often a policy rolls back a healthy canary, how fast it catches a regression, and
    how long it takes to promote: N simulated rollouts per scenario, with Monte Carlo errors."""
    from analyzer.offline import tuning
    from analyzer.offline.verdict import simulation_verdict

    policy = load_policy_or_exit(policy_file)
    d_rps, d_err = tuning.default_traffic(policy)
    rps = rps if rps is not None else d_rps
    base_error_rate = base_error_rate if base_error_rate is not None else d_err
    if rps is None or base_error_rate is None:
        _fail(f"policy {policy.name} reads Prometheus: give the traffic to simulate with --rps "
              "and --base-error-rate (e.g. --rps 40 --base-error-rate 0.01)", 2)
    if rps <= 0 or not 0 <= base_error_rate < 1:
        _fail("--rps must be positive and --base-error-rate in [0, 1)", 2)
    grid_specs = list(grid or [])
    extra = list(more_grid or [])
    if extra and not grid_specs:
        _fail(f"unexpected argument(s) {' '.join(extra)}: grid axes follow --grid", 2)
    try:
        regs = [tuning.parse_regression(r) for r in (regression or ["error-rate=2x"])]
        grid_axes = tuning.parse_grid(grid_specs + extra) if grid_specs else None
        scenarios = tuning.build_scenarios(policy, rps, base_error_rate, regs,
                                           burstiness=burstiness)
        if grid_axes:
            for settings in tuning.grid_settings(grid_axes):
                tuning.apply_settings(policy, settings)  # report bad values before running
    except ValueError as e:
        _fail(str(e), 2)
    _sim_policy, note = tuning.simulation_policy(policy)
    combos = len(tuning.grid_settings(grid_axes)) if grid_axes else 1
    show = not as_json and sys.stderr.isatty()
    bar, progress = _progress_bar(runs * len(scenarios) * combos, show)
    try:
        if bar is not None:
            bar.start()
        if grid_axes:
            result = tuning.simulate_grid(policy, scenarios, grid_axes, runs, seed, progress)
        else:
            summaries = tuning.simulate_policy(policy, scenarios, runs, seed, progress)
    finally:
        if bar is not None:
            bar.stop()
    if grid_axes:
        if as_json:
            typer.echo(json.dumps(result.to_json()))
            return
        _grid_table(policy, result, note)
        return
    if as_json:
        typer.echo(json.dumps({
            "policy": policy.name, "runs": runs, "seed": seed, "rps": rps,
            "base_error_rate": base_error_rate, "notes": [note] if note else [],
            "scenarios": [tuning.summary_json(s) for s in summaries],
            "verdicts": [simulation_verdict(_sim_policy, s).to_json() for s in summaries]}))
        return
    _summary_table(policy, summaries, rps, base_error_rate, runs, note)
    _verdicts(_sim_policy, summaries)


def _verdicts(policy: Policy, summaries: list[SimulationSummary]) -> None:
    """Each scenario's verdict in words, and what would help when the policy does not decide."""
    from analyzer.offline.verdict import SAFETY, simulation_verdict

    console = stdout_console()
    for s in summaries:
        v = simulation_verdict(policy, s)
        console.print(f"verdict: {v.headline}", markup=False, soft_wrap=True)
        for n in v.notes:
            console.print(f"  note: {n}", markup=False, soft_wrap=True)
        if v.suggestions:
            console.print(f"  what would help (each alone; aims at {SAFETY:g}x Wald's bound "
                          "within maxStepDuration):", markup=False, soft_wrap=True)
        for g in v.suggestions:
            console.print(f"  - {g.text}", markup=False, soft_wrap=True)


def _summary_table(policy: Policy, summaries: list[SimulationSummary], rps: float,
                   base: float, runs: int, note: str | None) -> None:
    console = stdout_console()
    columns = [Column("scenario", text=True)] + [
        Column(c, justify="right") for c in ("false rollbacks", "detected",
                                             "rollback after (median)", "(p90)",
                                             "promoted after (median)", "undecided")]
    rows = [[s.scenario.name, _fmt_rate(s.false_rollback_rate), _fmt_rate(s.detection_rate),
             _fmt_time(s.median_time_to_rollback), _fmt_time(s.p90_time_to_rollback),
             _fmt_time(s.median_time_to_promote), _fmt_rate(s.inconclusive_rate)]
            for s in summaries]
    print_table(console, columns, rows,
                title=f"{policy.name}: {runs} simulated rollouts per scenario at {rps:g} rps, "
                f"base error rate {base:g}")
    console.print(f"alpha {policy.spec.decision.alpha:g}; ± is the Monte Carlo standard error "
                  "(more --runs, smaller error); times from the rollout's start.", markup=False)
    if note:
        console.print(f"note: {note}", markup=False)


def _grid_table(policy: Policy, result: Any, note: str | None) -> None:
    from analyzer.offline.tuning import recommend

    console = stdout_console()
    keys = list(result.grid)
    columns = [Column(k) for k in keys] + [Column("false rollbacks", justify="right")]
    regs = result.rows[0].regressions if result.rows else ()
    for s in regs:
        columns += [Column(f"detected {s.scenario.name}", justify="right"),
                    Column("rollback after (median)", justify="right")]
    columns.append(Column("promoted after (median)", justify="right"))
    rows = []
    for row in result.rows:
        cells = [str(row.settings[k]) for k in keys]
        cells.append(_fmt_rate(row.false_rollback_rate))
        for s in row.regressions:
            cells += [_fmt_rate(s.rollback_rate), _fmt_time(s.median_time_to_rollback)]
        cells.append(_fmt_time(row.healthy.median_time_to_promote))
        rows.append(cells)
    print_table(console, columns, rows,
                title=f"{policy.name}: trade-off ({result.runs} runs per cell)")
    rec = recommend(result, max_false_rollback=policy.spec.decision.alpha)
    console.print(f"fastest with false rollbacks <= {policy.spec.decision.alpha:g} and "
                  f"detection >= 90%: {rec.reason}", markup=False)
    if note:
        console.print(f"note: {note}", markup=False)


# --------------------------------------------------------------------------- backtest


@app.command()
def backtest(
    policy_file: Path = typer.Argument(..., metavar="POLICY", help="the policy to try (YAML)"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP, show_default=DEFAULT_DB),
    rollout: str | None = typer.Option(
        None, "--rollout", help="a recorded rollout: id, name (newest run) or name#generation"),
    prometheus: str | None = typer.Option(
        None, "--prometheus", help="Prometheus base URL: fetch the data there (the policy's "
        "preset or queries)"),
    start: str | None = typer.Option(
        None, "--start", help="with --prometheus: first window start (ISO 8601, Unix time, "
        "now-2h)"),
    end: str | None = typer.Option(None, "--end", help="with --prometheus: last window end"),
    as_json: bool = typer.Option(
        False, "--json", help="one JSON object per tick, then a final object"),
) -> None:
    """What POLICY would have decided, tick by tick, on a recorded rollout or on Prometheus
    history, beside what was decided then."""
    from analyzer.offline.backtest import BacktestError, backtest_prometheus, backtest_rollout
    from analyzer.util.times import parse_time

    policy = load_policy_or_exit(policy_file)
    if prometheus is None and rollout is None:
        _fail("give --rollout ID (with --db) for a recorded rollout, or --prometheus URL with "
              "--start and --end", 2)
    try:
        t0 = parse_time(start) if start else None
        t1 = parse_time(end) if end else None
    except ValueError as e:
        _fail(f"--start/--end: {e}", 2)
    if prometheus is not None and rollout is None and (t0 is None or t1 is None):
        _fail("--prometheus needs --start and --end (or --rollout with --db for the recorded "
              "windows)", 2)
    store = _open_store(db) if rollout is not None else None
    rid = _rollout_id(store, rollout) if store is not None and rollout is not None else None
    try:
        if prometheus is not None:
            res = backtest_prometheus(policy, t0, t1, address=prometheus, store=store,
                                      rollout_id=rid)
        else:
            assert store is not None and rid is not None
            res = backtest_rollout(store, rid, policy)
    except (BacktestError, StoreError) as e:
        _fail(str(e))
    if as_json:
        for t in res.ticks:
            typer.echo(json.dumps(_strict(t.to_json())))
        typer.echo(json.dumps(_strict(res.to_json())))
        return
    _backtest_table(res)


def _strict(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _strict(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_strict(v) for v in x]
    return x


def _backtest_table(res: BacktestResult) -> None:
    from rich.text import Text

    console = stdout_console()
    colours = {"rollback": "red", "promote": "green", "pause": "yellow"}

    def cell(decision: str | None, weight: int | None, command: str | None = None) -> Text:
        if decision is None:
            return Text("-")
        out = Text(decision, style=colours.get(decision, ""))
        if weight is not None:
            out.append(f" {weight}%")
        if command is not None:
            out.append(" by hand", style="bold")
        return out

    columns = [Column(c) for c in ("tick", "time", "data %", "canary req/err", "would",
                                   "then")] + [Column("why (this policy)", text=True)]
    rows = []
    for t in res.ticks:
        req = t.counts.get("canary_requests")
        rows.append([
            Text(str(t.tick)).append("*" if t.differs else "", style="bold yellow"),
            t.t1.strftime("%H:%M:%S"),
            "" if t.canary_weight is None else f"{t.canary_weight:g}%",
            "-" if req is None else f"{req}/{t.counts.get('canary_errors')}",
            cell(t.decision, t.weight), cell(t.then_decision, t.then_weight, t.command),
            t.reason])
    print_table(console, columns, rows, title=f"{res.policy} on {res.source}", expand=True)
    then = f"; then: {res.then_outcome}" if res.then_outcome else ""
    console.print(f"this policy: {res.summary()}{then}", markup=False)
    first = res.first_difference
    if res.then_outcome is not None:
        if first is None:
            console.print("same decision as recorded at every tick it ran")
        else:
            what = (f"{first.command} by hand, not the policy's decision" if first.command
                    else f"would {first.decision}, then {first.then_decision}")
            console.print(f"{len(res.differences)} tick(s) differ (*), first at tick "
                          f"{first.tick}: {what}. After that the data reflects the weights "
                          "really applied.", markup=False)
    for n in res.notes:
        console.print(f"note: {n}", markup=False)


# --------------------------------------------------------------------------- export, report


@app.command()
def export(
    rollout: str = typer.Argument(..., metavar="ROLLOUT",
                                  help="rollout id, name (newest run) or name#generation"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP, show_default=DEFAULT_DB),
    out: Path | None = typer.Option(None, "--out", "-o", help="file to write (default: stdout)"),
) -> None:
    """Write a recorded rollout's analysed intervals as `canary replay` JSONL."""
    from analyzer.offline.export import (
        export_jsonl,
        export_rollout,
        recorded_intervals,
        write_jsonl,
    )

    store = _open_store(db)
    rid = _rollout_id(store, rollout)
    try:
        if out is None:
            intervals = recorded_intervals(store, rid)
            if not intervals:
                _fail(f"rollout {rollout} has no analysed ticks yet: nothing to export")
            write_jsonl(export_jsonl(store, rid), sys.stdout)
            return
        n = export_rollout(store, rid, out)
    except StoreError as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"cannot write {out}: {e.strerror}")
    err.print(f"wrote {n} interval(s) to {out}")


@app.command()
def report(
    rollout: str = typer.Argument(..., metavar="ROLLOUT",
                                  help="rollout id, name (newest run) or name#generation"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP, show_default=DEFAULT_DB),
    out: Path = typer.Option(..., "--out", "-o", help="directory for index.html and the PNGs"),
) -> None:
    """An HTML report of one rollout with plots (weight, error rate, latency, each check's
    estimate and evidence), every decision and the policy used."""
    from analyzer.offline.report import write_report

    store = _open_store(db)
    rid = _rollout_id(store, rollout)
    try:
        path = write_report(store, rid, out)
    except StoreError as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"cannot write the report to {out}: {e.strerror}")
    typer.echo(str(path))
