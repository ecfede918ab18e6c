"""`canary replay POLICY DATA.jsonl [MORE ...] [--json]`: run a policy's checks and judge over
recorded intervals, with no Prometheus and no router.

Each file is one rollout. A promote decision advances the policy's step (reaching the last
step, normally 100%, is a full promotion); the data's `canary_weight` is what the canary really
received and is what the sample-ratio check compares against. Pause steps are skipped (nobody
is there to resume them). The rollout ends at a rollback, a pause (onInconclusive or
onDataFailure set to pause: "inconclusive"), a full promotion, or the end of the data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from analyzer.cli.app import app
from analyzer.cli.common import load_policy_or_exit
from analyzer.cli.tables import Column, print_table, stdout_console

if TYPE_CHECKING:  # for annotations only: the commands import what they use when run
    from analyzer.offline.replay import ReplayResult



def _table(console: Console, res: ReplayResult) -> None:
    from rich.text import Text

    colors = {"rollback": "red", "promote": "green", "pause": "yellow"}
    columns = [Column(c) for c in ("tick", "time", "step", "weight", "data %", "decision")] + [
        Column("reason", text=True)]
    rows = [[str(t["tick"]), t["t"][11:19], str(t["step"]), f"{t['weight']}%",
             "" if t["canary_weight"] is None else f"{t['canary_weight']:g}%",
             Text(t["decision"], style=colors.get(t["decision"], "")), t["reason"]]
            for t in res.ticks]
    print_table(console, columns, rows, title=res.file, show_lines=True, expand=True)
    console.print(f"outcome: {res.summary()}", markup=False)


@app.command()
def replay(
    policy_file: Path = typer.Argument(..., metavar="POLICY", help="the rollout policy (YAML)"),
    data: list[Path] = typer.Argument(
        ..., metavar="DATA.jsonl...", help="recorded intervals, one JSON object per line"
    ),
    as_json: bool = typer.Option(
        False, "--json", help="one JSON object per tick, then a final object per file"
    ),
) -> None:
    """Run a policy's checks and judge over recorded intervals (no Prometheus, no router)."""
    from analyzer.offline.replay import replay_rollout
    from analyzer.sources.replay import ReplayError, read_replay

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    policy = load_policy_or_exit(policy_file)
    loaded = []
    for f in data:
        try:
            loaded.append((f, read_replay(f)))
        except ReplayError as e:
            err.print(f"[red]error[/red] {e}")
            err.print("expected one JSON object per line: "
                      '{"t": ..., "canary_weight": ..., "stable": {"requests": ..., '
                      '"errors": ...}, "canary": {...}} (see docs/statistics.md)')
            raise typer.Exit(1) from None
    console = stdout_console()
    for f, lines in loaded:
        res = replay_rollout(policy, lines, str(f))
        if as_json:
            for t in res.ticks:
                typer.echo(json.dumps(t))
            typer.echo(json.dumps(res.final()))
        else:
            _table(console, res)
