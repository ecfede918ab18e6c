"""The `canary` command line: one Typer app; each command group lives in analyzer/commands/."""

from __future__ import annotations

import importlib
import sys

import typer

app = typer.Typer(
    name="canary",
    help="Canary Analyzer: judge a canary against stable with anytime-valid statistics and "
    "move traffic on your mesh.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module registers its commands on `app` when imported.
COMMAND_MODULES = (
    "analyzer.cli.policy_cmds",  # validate, schema
    "analyzer.cli.replay_cmd",  # replay
    "analyzer.cli.query_cmd",  # query
    "analyzer.cli.route_cmd",  # route
    "analyzer.cli.engine_cmds",  # run, start, status, promote, abort, pause, resume, history
    "analyzer.cli.sre_cmds",  # simulate, backtest, export, report
    "analyzer.cli.demo_cmd",  # demo
)

for _name in COMMAND_MODULES:
    importlib.import_module(_name)


def run_app(typer_app: typer.Typer) -> None:
    """Run a Typer app as a console script (Ctrl-C: one line, exit status 130)."""
    try:
        typer_app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
