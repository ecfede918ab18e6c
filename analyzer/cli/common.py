"""CLI command groups; each module registers its commands on `analyzer.cli.app.app`.

Also what the groups share: printing a policy's problems and loading one policy or exiting 1.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from analyzer.policy import Policy, PolicyError, load_policy

_err = Console(stderr=True, highlight=False, soft_wrap=True)


def print_policy_problems(e: PolicyError) -> None:
    """One `error FILE:LINE: PATH: MESSAGE` line per problem on stderr (the problem text is
    shown as is: a YAML value may contain rich markup brackets)."""
    for problem in e.problems:
        _err.print(f"[red]error[/red] {escape(str(problem))}")


def load_policy_or_exit(path: str | Path) -> Policy:
    """The policy in `path`, or its problems printed and exit status 1."""
    try:
        return load_policy(path)
    except PolicyError as e:
        print_policy_problems(e)
        raise typer.Exit(1) from None
