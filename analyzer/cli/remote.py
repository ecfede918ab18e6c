"""The engine's HTTP API from the command line: `canary status|history|start|promote|... --server
URL` (instead of `--db`), with the write token from `CANARY_API_TOKEN` or `--token-file`.

One small client (`EngineApi`) over `requests`; every refusal becomes a one-line error naming
the URL, the status and the API's own message (never a traceback).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import typer

from analyzer.cli.tables import Column, print_table

SERVER_HELP = ("the engine's HTTP API, e.g. http://canary-analyzer.canary-analyzer:8080 "
               "(instead of --db; writes need CANARY_API_TOKEN or --token-file)")


class ApiError(Exception):
    """The API refused or could not be reached; the message says which and why."""


def server_option() -> Any:
    return typer.Option(None, "--server", help=SERVER_HELP)


def token_option() -> Any:
    return typer.Option(None, "--token-file", help="file holding the API bearer token "
                        "(default: env CANARY_API_TOKEN)")


class EngineApi:
    def __init__(self, server: str, token_file: Path | None = None, timeout: float = 15.0) -> None:
        self.base = server.rstrip("/")
        if not self.base.startswith(("http://", "https://")):
            raise ApiError(f"--server {server!r}: expected an http(s) URL")
        self.timeout = timeout
        token = None
        if token_file is not None:
            try:
                token = token_file.read_text().strip() or None
            except OSError as e:
                raise ApiError(f"--token-file {token_file}: {e.strerror}") from None
        self.token = token or os.environ.get("CANARY_API_TOKEN") or None

    def _call(self, method: str, path: str, body: Any = None, write: bool = False) -> Any:
        import requests

        headers = {"Accept": "application/json"}
        if write:
            if not self.token:
                raise ApiError("this call needs the API token: set CANARY_API_TOKEN or pass "
                               "--token-file")
            headers["Authorization"] = f"Bearer {self.token}"
        url = self.base + path
        try:
            resp = requests.request(method, url, json=body, headers=headers,
                                    timeout=self.timeout)
        except requests.RequestException as e:
            raise ApiError(f"{method} {url}: {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}") from None
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.status_code >= 400:
            message = data.get("message") if isinstance(data, dict) else resp.text[:200]
            raise ApiError(f"{method} {url}: {resp.status_code}: {message}")
        return data

    def rollouts(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/rollouts")["rollouts"])

    def rollout(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self._call("GET", f"/rollouts/{quote(name)}")
        return out

    def ticks(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self._call("GET", f"/rollouts/{quote(name)}/ticks")
        return out

    def command(self, name: str, command: str) -> dict[str, Any]:
        out: dict[str, Any] = self._call("POST", f"/rollouts/{quote(name)}/{command}",
                                         write=True)
        return out

    def start(self, body: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = self._call("POST", "/rollouts", body, write=True)
        return out


# --------------------------------------------------------------------------- the commands


def _api(server: str, token_file: Path | None) -> EngineApi:
    try:
        return EngineApi(server, token_file)
    except ApiError as e:
        _fail(str(e))


def _fail(message: str) -> NoReturn:
    from analyzer.cli.engine_cmds import _fail as fail

    fail(message)


def _call(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ApiError as e:
        _fail(str(e))


def start(server: str, token_file: Path | None, name: str, canary_version: str | None,
          as_json: bool) -> None:
    """A new run of the policy the engine knows by `name` (its own copy: the engine runs
    what it was given, a policy file or a RolloutPolicy, not this machine's file)."""
    body: dict[str, Any] = {"name": name}
    if canary_version:
        body["canaryVersion"] = canary_version
    data = _call(_api(server, token_file).start, body)
    if as_json:
        typer.echo(json.dumps(data, indent=1))
        return
    _out().print(f"rollout {data['name']} #{data['generation']} (id {data['id']}): "
                 f"{data['stable_version']} -> {data['canary_version']}, {data['phase']}")


def status(server: str, name: str | None, as_json: bool) -> None:
    api = _api(server, None)
    data = _call(api.rollout, name) if name else _call(api.rollouts)
    if as_json:
        typer.echo(json.dumps(data, indent=1))
        return
    rows = [data] if name else data
    if not rows:
        _out().print("no rollouts (start one: canary start POLICY --server URL)")
        return
    columns = [Column(c) for c in ("NAME", "RUN", "CANARY", "PHASE", "STEP", "WEIGHT",
                                   "TICKS")] + [Column("REASON", text=True)]
    lines = [[r["name"], f"#{r['generation']}", r["canary_version"], r["phase"],
              "-" if r["step"] < 0 else f"{r['step'] + 1} of {len(r['steps'])}",
              f"{r['weight']}%", str(r["tick_seq"]), str(r["reason"])] for r in rows]
    print_table(_out(), columns, lines, box=None, pad_edge=False)


def command(server: str, token_file: Path | None, name: str, cmd: Any) -> None:
    data = _call(_api(server, token_file).command, name, str(cmd))
    _out().print(f"{cmd} queued for {name} (command {data['command_id']}); the engine "
                 f"applies it {data['applies']}")


def history(server: str, name: str, as_json: bool, limit: int | None) -> None:
    data = _call(_api(server, None).ticks, name)
    rows = data["ticks"][-limit:] if limit else data["ticks"]
    if as_json:
        typer.echo(json.dumps({**data, "ticks": rows}, indent=1))
        return
    columns = [Column(c) for c in ("TICK", "TIME", "PHASE", "WEIGHT", "ACTION")] + [
        Column("REASON", text=True)]
    lines = []
    for t in rows:
        p0, p1, w0, w1 = t["phase_before"], t["phase_after"], t["weight_before"], t["weight_after"]
        lines.append([str(t["seq"]), str(t["scheduled_at"])[11:19],
                      p1 if p0 == p1 else f"{p0}->{p1}", f"{w1}%" if w0 == w1 else f"{w0}->{w1}%",
                      t["action"] + (f" ({t['command']})" if t["command"] else ""), t["reason"]])
    _out().print(f"{data['rollout']}:", markup=False)
    print_table(_out(), columns, lines, box=None, pad_edge=False)


def _out() -> Any:
    from analyzer.cli.engine_cmds import out

    return out
