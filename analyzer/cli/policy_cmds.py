"""`canary validate`, `canary schema` and `canary crd`: the policy file's checker, its JSON Schema
and the RolloutPolicy CustomResourceDefinition."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from analyzer.cli.app import app
from analyzer.cli.common import print_policy_problems
from analyzer.policy import PolicyError, json_schema, load_policy


@app.command()
def validate(
    files: list[Path] = typer.Argument(..., help="policy files to check", show_default=False),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print only problems"),
) -> None:
    """Check policy files. Exit 0 when all are valid; else print each problem and exit 1."""
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    bad = 0
    for f in files:
        try:
            policy = load_policy(f)
        except PolicyError as e:
            bad += 1
            print_policy_problems(e)
            continue
        if not quiet:
            out.print(
                f"ok    {f}: {policy.name} ({policy.spec.router.provider}, "
                f"{policy.spec.strategy.type})"
            )
    if bad:
        err.print(f"{bad} of {len(files)} file(s) invalid")
        raise typer.Exit(1)


@app.command()
def schema() -> None:
    """Print the policy's JSON Schema (for editor completion, e.g. yaml-language-server)."""
    typer.echo(json.dumps(json_schema(), indent=2))


@app.command()
def crd() -> None:
    """Print the RolloutPolicy CustomResourceDefinition (YAML; `canary crd | kubectl apply -f -`;
    deploy/kustomize/base/crd-rolloutpolicies.yaml is this output)."""
    from analyzer.policy.crd import crd_yaml

    typer.echo(crd_yaml(), nl=False)
