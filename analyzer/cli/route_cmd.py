"""`canary route`: move traffic by hand through the policy's router (or show the change offline).

    canary route POLICY                          # show the current split
    canary route POLICY --weight 20              # 20% to the canary
    canary route POLICY --header x-canary=always # A/B route (--header-pattern NAME=REGEX,
                                                 #   --cookie NAME, --no-header)
    canary route POLICY --mirror 50              # mirror 50% (--mirror 0 removes it)
    canary route POLICY --reset                  # all traffic to stable, no A/B, no mirror
    canary route POLICY --weight 20 --dry-run -o yaml [--current FILE]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
import yaml
from rich.console import Console

from analyzer.cli.app import app
from analyzer.cli.common import load_policy_or_exit

if TYPE_CHECKING:  # for annotations only: the commands import what they use when run
    from analyzer.routers.base import TrafficSplit


err = Console(stderr=True, highlight=False)


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", markup=True, soft_wrap=True)
    return typer.Exit(1)


def _describe(split: TrafficSplit) -> str:
    text = f"stable {100 - split.canary_weight}% / canary {split.canary_weight}%"
    route = split.header_route
    if route:
        if "cookie" in route:
            text += f"; A/B: cookie {route['cookie']}=always -> canary"
        elif "pattern" in route:
            text += f"; A/B: header {route.get('header')} matching {route['pattern']} -> canary"
        else:
            text += f"; A/B: header {route.get('header')}: {route.get('value')} -> canary"
    if split.mirror_percent is not None:
        text += f"; mirror {split.mirror_percent:g}% -> canary"
    if split.sticky:
        text += f"; sticky sessions: {split.sticky}"
    return text


def _objects_key(obj: dict[str, Any]) -> tuple[str, ...]:
    meta = obj.get("metadata") or {}
    name = meta.get("name") or obj.get("path")
    return (str(obj.get("kind")), str(meta.get("namespace")), str(name))


def _print_objects(objects: list[dict[str, Any]], output: str) -> None:
    if output == "json":
        doc: Any = objects[0] if len(objects) == 1 else {
            "apiVersion": "v1", "kind": "List", "items": objects}
        typer.echo(json.dumps(doc, indent=2))
    elif all(o.get("kind") == "NginxUpstreamFile" for o in objects):
        for o in objects:  # a file, not an API object: show it as nginx will read it
            typer.echo(f"# {o['path']}\n{o['content']}".rstrip())
    else:
        typer.echo(yaml.dump_all(objects, Dumper=_NoAliases, sort_keys=False).rstrip())


class _NoAliases(yaml.SafeDumper):
    """Prints a value shared by two places twice rather than as an anchor (`&id001`) and an
    alias, which a reader of `kubectl get -o yaml` output does not expect."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


@app.command()
def route(
    policy: Path = typer.Argument(..., help="the RolloutPolicy file naming the router"),
    weight: int | None = typer.Option(None, "--weight", min=0, max=100,
                                      help="percent of live traffic to the canary (0-100)"),
    header: str | None = typer.Option(None, "--header", metavar="NAME=VALUE",
                                      help="A/B: requests with this header go to the canary"),
    header_pattern: str | None = typer.Option(
        None, "--header-pattern", metavar="NAME=REGEX",
        help="A/B: requests whose header matches REGEX go to the canary"),
    cookie: str | None = typer.Option(None, "--cookie", metavar="NAME",
                                      help="A/B: requests with cookie NAME=always go to the "
                                           "canary"),
    no_header: bool = typer.Option(False, "--no-header", help="remove the A/B route"),
    mirror: float | None = typer.Option(None, "--mirror", min=0, max=100, metavar="PCT",
                                        help="mirror PCT% of live traffic to the canary; 0 stops"),
    reset: bool = typer.Option(False, "--reset",
                               help="all traffic to stable, no A/B route, no mirror (first)"),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="print what would be written; write nothing"),
    output: str | None = typer.Option(None, "-o", "--output", metavar="yaml|json",
                                      help="print the written (or would-be) objects"),
    current: Path | None = typer.Option(None, "--current", metavar="FILE",
                                        help="read the current object(s) from FILE instead of "
                                             "the cluster (offline; implies --dry-run)"),
    kubeconfig: Path | None = typer.Option(None, "--kubeconfig", metavar="PATH",
                                           help="kubeconfig file (default: in-cluster, then "
                                                "~/.kube/config)"),
) -> None:
    """Set the canary's traffic share, A/B route or mirror through the policy's router."""
    from analyzer.routers.base import Router, RouterError
    from analyzer.routers.factory import build_router
    from analyzer.routers.kube.inputs import load_objects

    if output not in (None, "yaml", "json"):
        raise typer.BadParameter("must be yaml or json", param_hint="-o/--output")
    match: dict[str, str] | None = None
    if sum(x is not None and x is not False
           for x in (header, header_pattern, cookie, no_header or None)) > 1:
        raise typer.BadParameter("give one of --header, --header-pattern, --cookie, --no-header",
                                 param_hint="--header")
    for flag, given, key, shape in (("--header", header, "value", "NAME=VALUE"),
                                    ("--header-pattern", header_pattern, "pattern", "NAME=REGEX")):
        if given is not None:
            name, sep, value = given.partition("=")
            if not sep or not name.strip() or not value:
                raise typer.BadParameter(f"expected {shape}, got {given!r}", param_hint=flag)
            match = {"header": name.strip(), key: value}
    if cookie is not None:
        if not cookie.strip():
            raise typer.BadParameter("expected a cookie name", param_hint="--cookie")
        match = {"cookie": cookie.strip()}
    pol = load_policy_or_exit(policy)
    offline = current is not None
    try:
        objects = None
        if current is not None:
            try:
                text = current.read_text(encoding="utf-8")
            except OSError as e:
                raise RouterError(f"cannot read --current file {current}: {e.strerror}") from None
            objects = load_objects(text, str(current))
        router: Router = build_router(
            pol, dry_run=dry_run or offline, current_object=objects,
            kubeconfig=str(kubeconfig) if kubeconfig else None,
        )
        written: dict[tuple[str, ...], dict[str, Any]] = {}
        acted = False

        def step(fn: Any, *args: Any) -> None:
            nonlocal acted
            acted = True
            fn(*args)
            for obj in router.last_applied:
                written[_objects_key(obj)] = obj

        if reset:
            step(router.reset)
        if weight is not None:
            step(router.set_weight, weight)
        if match is not None or no_header:
            step(router.set_header_route, match)
        if mirror is not None:
            step(router.set_mirror, mirror or None)
        split = router.get_weight()
    except RouterError as e:
        raise _fail(str(e)) from None
    where = f"{pol.spec.router.provider} router of policy {pol.name}"
    if not acted:
        typer.echo(f"{where}: {_describe(split)}")
        return
    if dry_run or offline:
        if not written:
            err.print(f"{where}: already as asked; nothing would change", markup=False)
        else:
            _print_objects(list(written.values()), output or "yaml")
        err.print(f"dry run: nothing written; would be {_describe(split)}", markup=False)
        return
    if output and written:
        _print_objects(list(written.values()), output)
    changed = "" if written else " (already as asked; nothing written)"
    typer.echo(f"{where}: {_describe(split)}{changed}")
