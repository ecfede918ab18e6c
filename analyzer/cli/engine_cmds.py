"""`canary run|start|status|promote|abort|pause|resume|history`: the engine's commands.

`run` is the daemon (scheduler + HTTP API and dashboard; with `--kubernetes` also the
RolloutPolicy controller); the others talk to the same database (`--db`, default `$CANARY_DB` or
sqlite:///canary.db) or to a running engine's HTTP API (`--server URL`, analyzer/cli/remote.py):
`start` queues a new rollout, the manual gates queue a command that the owning daemon applies at
its next tick.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console

from analyzer.cli.app import app
from analyzer.cli.common import load_policy_or_exit, print_policy_problems
from analyzer.cli.remote import server_option, token_option
from analyzer.cli.tables import Column, print_table, stdout_console
from analyzer.policy import PolicyError, load_policies

if TYPE_CHECKING:  # for annotations only: the commands import what they use when run
    from analyzer.core.rollout import Command
    from analyzer.daemon.store import RolloutRecord, Store, TickRow


DB_HELP = "database URL: sqlite:///file.db or postgresql://user@host/db (env CANARY_DB)"

out = stdout_console()
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error[/red] {message}", markup=True)
    raise typer.Exit(code)


def _store(db: str | None) -> Store:
    from analyzer.daemon.store import Store, StoreError

    try:
        return Store(db)
    except StoreError as e:
        _fail(str(e))


def _db_option() -> Any:
    from analyzer.daemon.store import DEFAULT_DB

    return typer.Option(None, "--db", help=DB_HELP, show_default=DEFAULT_DB)


def _actor() -> str:
    try:
        return f"cli ({getpass.getuser()})"
    except Exception:
        return "cli"


# --------------------------------------------------------------------------- run


@app.command()
def run(
    policies: Path | None = typer.Option(
        None, "--policies", help="directory of policy files: each gets a rollout unless one "
        "exists already", exists=False),
    db: str | None = _db_option(),
    listen: str = typer.Option("127.0.0.1:8080", "--listen", help="HOST:PORT of the HTTP API"),
    no_api: bool = typer.Option(False, "--no-api", help="do not serve the HTTP API"),
    api_token_file: Path | None = typer.Option(
        None, "--api-token-file", help="file holding the API bearer token (default: env "
        "CANARY_API_TOKEN); without a token the write API is disabled"),
    sync_interval: float = typer.Option(
        5.0, "--sync-interval", min=0.1, help="seconds between ownership checks (take-over "
        "time of a dead replica's rollouts)"),
    workers: int = typer.Option(8, "--workers", min=1, help="ticks that may run in parallel"),
    log_level: str = typer.Option(
        "INFO", "--log-level", help="DEBUG, INFO (one line per decision that changes "
        "something), WARNING or ERROR"),
    log_format: str = typer.Option("text", "--log-format", help="text, or json: one JSON "
                                   "object per line (time, level, logger, message)"),
    kube_events: bool | None = typer.Option(
        None, "--kube-events/--no-kube-events", help="record decisions as Kubernetes Events "
        "on the routed object (default: on when running in a cluster)"),
    link: list[str] = typer.Option(
        [], "--link", help="a link out on each rollout's dashboard page, LABEL=URL-TEMPLATE "
        "with {name} {namespace} {service} {stable} {canary} {generation} {id} (repeatable), "
        "e.g. 'Grafana=https://grafana.example/d/canary?var-rollout={name}'"),
    kubernetes: bool = typer.Option(
        False, "--kubernetes", help="also run the RolloutPolicy controller: watch "
        "RolloutPolicy objects and their canaryRef workloads, start rollouts on new versions, "
        "write status and Events (docs/engine.md)"),
    namespace: str | None = typer.Option(
        None, "--namespace", help="with --kubernetes: only this namespace's RolloutPolicies "
        "(default: all)"),
    kubeconfig: str | None = typer.Option(
        None, "--kubeconfig", help="with --kubernetes: kubeconfig file (default: in-cluster "
        "config, else ~/.kube/config)"),
    status_interval: float = typer.Option(
        2.0, "--status-interval", min=0.1, help="with --kubernetes: at most one status write "
        "per RolloutPolicy per this many seconds"),
) -> None:
    """The daemon: tick every active rollout at its interval, serve the API and the dashboard
    (http://HOST:PORT/), until SIGTERM; with --kubernetes, drive RolloutPolicy objects too."""
    from analyzer.daemon import logs
    from analyzer.daemon.api import ApiServer, LinkError, LinkTemplate
    from analyzer.daemon.engine import Engine
    from analyzer.daemon.metrics import EngineMetrics
    from analyzer.daemon.notify import Notifier
    from analyzer.daemon.scheduler import Scheduler

    try:
        logs.configure(log_level, log_format)
    except ValueError as e:
        _fail(str(e), 2)
    loaded = []
    if policies is not None:
        if not policies.is_dir():
            _fail(f"--policies {policies}: not a directory", 2)
        try:
            loaded = load_policies(policies)
        except PolicyError as e:
            print_policy_problems(e)
            raise typer.Exit(1) from None
    host, port = _parse_listen(listen)
    try:
        links = tuple(LinkTemplate.parse(spec) for spec in link)
    except LinkError as e:
        _fail(f"--link {e}", 2)
    token = None
    if api_token_file is not None:
        try:
            token = api_token_file.read_text().strip() or None
        except OSError as e:
            _fail(f"--api-token-file {api_token_file}: {e.strerror}")
    token = token or os.environ.get("CANARY_API_TOKEN") or None

    store = _store(db)
    metrics = EngineMetrics()
    notifier: Any = Notifier()
    if kube_events is None:
        kube_events = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if kube_events:
        from analyzer.daemon.kube_events import FanOut, KubeEventRecorder

        try:
            notifier = FanOut(notifier, KubeEventRecorder())
        except Exception as e:  # no kubeconfig: say so, keep running without Events
            err.print(f"warning: Kubernetes Events off: {str(e).splitlines()[0]}")
    engine = Engine(store, metrics=metrics, notifier=notifier)
    scheduler = Scheduler(engine, policies=loaded, sync_interval=sync_interval,
                          max_workers=workers)
    server = None
    if not no_api:
        try:
            server = ApiServer(store, metrics, scheduler=scheduler, token=token, host=host,
                               port=port, links=links)
        except OSError as e:
            _fail(f"cannot listen on {listen}: {e.strerror}")
    controller = None
    if kubernetes:
        from analyzer.daemon.controller import Controller
        from analyzer.routers.base import RouterError
        from analyzer.routers.kube.objects import api_client_from_config

        try:
            api_client = api_client_from_config(kubeconfig)
        except RouterError as e:
            _fail(f"--kubernetes: {e}")
        controller = Controller(store, api_client, namespace=namespace, scheduler=scheduler,
                                replica=engine.replica, status_interval=status_interval)
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        logging.getLogger("analyzer").info("signal %d: finishing ticks in flight", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    scheduler.start()
    if controller is not None:
        controller.start()
    if server is not None:
        server.start()
    logging.getLogger("analyzer").info(
        "engine %s running: db %s, %d policy file(s), %s, api %s%s", engine.replica,
        store.url_redacted, len(loaded),
        f"RolloutPolicies in {namespace or 'all namespaces'}" if controller else "no controller",
        server.url if server else "off",
        "" if token or server is None else " (read-only: no CANARY_API_TOKEN)")
    # A line on stdout that tests and wrappers can wait for.
    print(json.dumps({"ready": True, "api": server.url if server else None,
                      "replica": engine.replica}), flush=True)
    while not stop.wait(0.5):
        pass
    if server is not None:
        server.stop()
    if controller is not None:
        controller.stop()
    scheduler.shutdown(wait=True)
    notifier.close(timeout=5)
    store.dispose()


def _parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        _fail(f"--listen {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:8080", 2)
    return host.strip("[]") or "127.0.0.1", int(port)


# --------------------------------------------------------------------------- start


@app.command()
def start(
    policy_file: Path = typer.Argument(..., metavar="POLICY", help="the policy file"),
    canary_version: str | None = typer.Option(
        None, "--canary-version", help="canary version (default: the policy's target.canary)"),
    db: str | None = _db_option(),
    as_json: bool = typer.Option(False, "--json", help="print the rollout as JSON"),
    server: str | None = server_option(),
    token_file: Path | None = token_option(),
) -> None:
    """Queue a new rollout of POLICY (what a CD pipeline calls); `canary run` executes it.

    Starting the version that is already rolling out is a no-op (pipelines retry); another
    version while one is active is an error: abort the active one first. After a promotion the
    promoted version is the stable one of the next rollout.
    """
    from analyzer.daemon.store import StoreError

    policy = load_policy_or_exit(policy_file)
    if server:
        from analyzer.cli import remote

        remote.start(server, token_file, policy.name,
                     canary_version or policy.spec.target.canary, as_json)
        return
    store = _store(db)
    try:
        rec = store.create_rollout(policy, datetime.now(UTC), canary_version=canary_version)
    except StoreError as e:
        _fail(str(e))
    except ValueError as e:
        _fail(f"--canary-version {canary_version!r}: {e}")
    if as_json:
        typer.echo(json.dumps(rec.to_json(), indent=1))
    else:
        out.print(f"rollout {rec.name} #{rec.generation} (id {rec.id}): {rec.stable_version} -> "
                  f"{rec.canary_version}, {rec.phase}")


# --------------------------------------------------------------------------- status


@app.command()
def status(
    name: str | None = typer.Argument(None, help="one rollout (default: all)"),
    db: str | None = _db_option(),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    server: str | None = server_option(),
) -> None:
    """Rollouts and where they are (newest run of each policy)."""
    if server:
        from analyzer.cli import remote

        remote.status(server, name, as_json)
        return
    from analyzer.daemon.store import NotFound, StoreError
    from analyzer.util.redaction import redact_policy

    store = _store(db)
    try:
        recs = [store.latest(name)] if name else store.list_rollouts()
    except NotFound as e:
        _fail(str(e))
    except StoreError as e:
        _fail(str(e))
    if as_json:
        data = []
        for r in recs:
            d = r.to_json()
            d["pending_commands"] = [str(c.command) for c in store.pending_commands(r.id)]
            if name:
                d["policy"] = redact_policy(r.policy)
            data.append(d)
        typer.echo(json.dumps(data[0] if name else data, indent=1))
        return
    if not recs:
        out.print("no rollouts (start one: canary start POLICY)")
        return
    if name:
        r = recs[0]
        pending = ", ".join(str(c.command) for c in store.pending_commands(r.id)) or "none"
        for label, value in (
            ("rollout", f"{r.name} #{r.generation} (id {r.id})"),
            ("versions", f"{r.stable_version} -> {r.canary_version}"),
            ("phase", str(r.phase)),
            ("step", f"{_step_of(r)} at weight {r.state.weight}%"),
            ("ticks", f"{r.tick_seq} (last by {r.owner or '-'})"),
            ("updated", r.updated_at.isoformat()),
            ("queued", pending),
            ("reason", r.state.reason),
        ):
            out.print(f"{label + ':':<10}{value}")
        return
    columns = [Column(c) for c in ("NAME", "RUN", "CANARY", "PHASE", "STEP", "WEIGHT", "TICKS",
                                   "UPDATED")] + [Column("REASON", text=True)]
    rows = []
    for r in recs:
        pending = store.pending_commands(r.id)
        phase = str(r.phase) + (f" ({', '.join(str(c.command) for c in pending)} queued)"
                                if pending else "")
        rows.append([r.name, f"#{r.generation}", r.canary_version, phase, _step_of(r),
                     f"{r.state.weight}%", str(r.tick_seq),
                     r.updated_at.strftime("%Y-%m-%d %H:%M:%S"), r.state.reason])
    print_table(out, columns, rows, box=None, pad_edge=False)


def _step_of(r: RolloutRecord) -> str:
    """"2 of 4": the step as the dashboard and the judge's sentences number it."""
    from analyzer.core.rollout import RolloutPlan

    return RolloutPlan.from_policy(r.load_policy()).position(r.state.step)


# --------------------------------------------------------------------------- manual gates


def _command(name: str, command: Command, db: str | None, server: str | None = None,
             token_file: Path | None = None) -> None:
    if server:
        from analyzer.cli import remote

        remote.command(server, token_file, name, command)
        return
    from analyzer.daemon.store import NotFound, StoreError

    store = _store(db)
    try:
        rec, cid = store.add_command(name, command, _actor(), datetime.now(UTC))
    except NotFound as e:
        _fail(str(e))
    except StoreError as e:
        _fail(str(e))
    out.print(f"{command} queued for {rec.name} #{rec.generation} (command {cid}); the engine "
              "applies it at the rollout's next tick")


@app.command()
def promote(name: str = typer.Argument(..., help="rollout name"),
            db: str | None = _db_option(), server: str | None = server_option(),
            token_file: Path | None = token_option()) -> None:
    """Skip the rest of the current step (or pause): go to the next step."""
    from analyzer.core.rollout import Command

    _command(name, Command.PROMOTE, db, server, token_file)


@app.command()
def abort(name: str = typer.Argument(..., help="rollout name"),
          db: str | None = _db_option(), server: str | None = server_option(),
          token_file: Path | None = token_option()) -> None:
    """Roll back: all traffic to stable."""
    from analyzer.core.rollout import Command

    _command(name, Command.ABORT, db, server, token_file)


@app.command()
def pause(name: str = typer.Argument(..., help="rollout name"),
          db: str | None = _db_option(), server: str | None = server_option(),
          token_file: Path | None = token_option()) -> None:
    """Stop deciding; the weight stays where it is."""
    from analyzer.core.rollout import Command

    _command(name, Command.PAUSE, db, server, token_file)


@app.command()
def resume(name: str = typer.Argument(..., help="rollout name"),
           db: str | None = _db_option(), server: str | None = server_option(),
           token_file: Path | None = token_option()) -> None:
    """Continue a paused rollout (ends a pause step)."""
    from analyzer.core.rollout import Command

    _command(name, Command.RESUME, db, server, token_file)


# --------------------------------------------------------------------------- history


@app.command()
def history(
    name: str = typer.Argument(..., help="rollout name"),
    db: str | None = _db_option(),
    as_json: bool = typer.Option(False, "--json", help="every tick with samples and verdicts"),
    limit: int | None = typer.Option(None, "--limit", help="only the last N ticks"),
    server: str | None = server_option(),
) -> None:
    """The decision log of a rollout's newest run: one line per tick."""
    if server:
        from analyzer.cli import remote

        remote.history(server, name, as_json, limit)
        return
    from analyzer.daemon.store import NotFound, StoreError

    store = _store(db)
    try:
        rec = store.latest(name)
        rows = store.ticks(rec.id)
    except NotFound as e:
        _fail(str(e))
    except StoreError as e:
        _fail(str(e))
    if limit is not None:
        rows = rows[-limit:]
    if as_json:
        typer.echo(json.dumps({"rollout": rec.to_json(),
                               "ticks": [t.to_json(full=True) for t in rows]}, indent=1))
        return
    out.print(f"{rec.name} #{rec.generation}: {rec.stable_version} -> {rec.canary_version}, "
              f"{rec.phase} at {rec.state.weight}%", markup=False)
    columns = [Column(c) for c in ("TICK", "TIME", "PHASE", "WEIGHT", "ACTION")] + [
        Column("REASON", text=True)]
    lines = [[str(t.seq), t.scheduled_at.strftime("%H:%M:%S"), _phase(t), _weights(t),
              t.action + (f" ({t.command})" if t.command else ""), t.reason] for t in rows]
    print_table(out, columns, lines, box=None, pad_edge=False)


def _phase(t: TickRow) -> str:
    return t.phase_after if t.phase_before == t.phase_after else (
        f"{t.phase_before}->{t.phase_after}")


def _weights(t: TickRow) -> str:
    return f"{t.weight_after}%" if t.weight_before == t.weight_after else (
        f"{t.weight_before}->{t.weight_after}%")
