"""The engine's HTTP API (stdlib `ThreadingHTTPServer`, no web framework).

Owns the routes, their JSON shapes and the bearer-token check:

    GET  /rollouts                        newest run of every policy
    GET  /rollouts/{name}                 one rollout: state, pending commands, weight changes,
                                          events, policy (secrets redacted)
    GET  /rollouts/{name}/ticks           the decision log (?since=SEQ&limit=N&full=1)
    POST /rollouts/{name}/{promote|abort|pause|resume}
                                          queue a manual command (202); needs
                                          `Authorization: Bearer <token>`
    GET  /metrics                         Prometheus text format (EngineMetrics)
    GET  /healthz, /readyz                liveness; readiness (database and scheduler)
    GET  /openapi.json                    OpenAPI 3.0 description of the above

Write calls are refused (403) when no token is configured and 401 without the right one; the
token is compared in constant time and never logged. The server binds 127.0.0.1 by default.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import sys
import threading
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST

from analyzer.core.rollout import Command
from analyzer.daemon.metrics import EngineMetrics
from analyzer.daemon.store import InvalidCommand, NotFound, Store, StoreError
from analyzer.util.redaction import redact_policy

log = logging.getLogger("analyzer.daemon.server")

_NAME = r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?"
_ROLLOUT = re.compile(rf"^/rollouts/(?P<name>{_NAME})$")
_TICKS = re.compile(rf"^/rollouts/(?P<name>{_NAME})/ticks$")
_COMMAND = re.compile(rf"^/rollouts/(?P<name>{_NAME})/(?P<cmd>promote|abort|pause|resume)$")
_GET_PATHS = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/rollouts")


def allowed_methods(path: str) -> tuple[str, ...]:
    """The methods a path answers (empty: no such route). The `Allow` header of a 405."""
    if path in _GET_PATHS or _ROLLOUT.match(path) or _TICKS.match(path):
        return ("GET",)
    if _COMMAND.match(path):
        return ("POST",)
    return ()


def check_token(header: str | None, token: str | None) -> int:
    """HTTP status for a write call: 0 when allowed, 403 without a configured token, 401
    when the bearer token is missing or wrong (constant-time comparison)."""
    if not token:
        return 403
    if not header or not header.startswith("Bearer "):
        return 401
    given = header[len("Bearer "):].strip().encode()
    return 0 if hmac.compare_digest(given, token.encode()) else 401


class ApiServer:
    """Serves the API for one store; `scheduler` (optional) gets poked after a command so the
    owning replica ticks at once instead of at its next interval."""

    def __init__(self, store: Store, metrics: EngineMetrics, *, scheduler: Any = None,
                 token: str | None = None, host: str = "127.0.0.1", port: int = 8080) -> None:
        self.store = store
        self.metrics = metrics
        self.scheduler = scheduler
        self._token = token or None
        handler = _make_handler(self)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = self._handle_error  # type: ignore[method-assign]
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="api",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @staticmethod
    def _handle_error(request: Any, client_address: Any) -> None:
        # A client that vanished mid-answer (or sent garbage): one line, not the stdlib's
        # traceback on stderr.
        exc = sys.exc_info()[1]
        log.info("request from %s dropped: %s", client_address[0], type(exc).__name__)

    # -- handlers (called by the request handler) ------------------------------------------

    def authorize(self, header: str | None) -> int:
        return check_token(header, self._token)

    def ready(self) -> tuple[bool, str]:
        if not self.store.ping():
            return False, "database unreachable"
        if self.scheduler is not None and not self.scheduler.running:
            return False, "scheduler not running"
        return True, "ready"

    def rollout_detail(self, name: str) -> dict[str, Any]:
        rec = self.store.latest(name)
        out = rec.to_json()
        out["pending_commands"] = [
            {"id": c.id, "command": str(c.command), "actor": c.actor,
             "requested_at": c.requested_at.isoformat()}
            for c in self.store.pending_commands(rec.id)
        ]
        out["weight_changes"] = [
            {"tick": w.tick_seq, "at": w.at.isoformat(), "from": w.weight_before,
             "to": w.weight_after, "cause": w.cause}
            for w in self.store.weight_changes(rec.id)
        ]
        out["events"] = [
            {"tick": e.tick_seq, "at": e.at.isoformat(), "kind": e.kind, "message": e.message}
            for e in self.store.events(rec.id)[-50:]
        ]
        out["policy"] = redact_policy(rec.policy)
        return out

    def command(self, name: str, cmd: str, actor: str) -> dict[str, Any]:
        rec, cid = self.store.add_command(name, Command(cmd), actor, datetime.now(UTC))
        poked = bool(self.scheduler.poke(rec.id)) if self.scheduler is not None else False
        return {"rollout": name, "rollout_id": rec.id, "command": cmd, "command_id": cid,
                "status": "queued", "applies": "now" if poked else "at the next tick"}


def _make_handler(api: ApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "canary-analyzer"
        protocol_version = "HTTP/1.1"
        timeout = 30  # seconds a client may take to send its request (slow clients hold threads)

        def log_message(self, format: str, *args: Any) -> None:
            # The request line only (never headers: they carry the token).
            log.debug("%s %s", self.address_string(), format % args)

        def _send(self, status: int, body: Any, content_type: str = "application/json",
                  headers: dict[str, str] | None = None) -> None:
            data = body if isinstance(body, bytes) else (
                json.dumps(body, indent=1, default=str) + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, **headers: str) -> None:
            self._send(status, {"error": HTTPStatus(status).phrase, "message": message},
                       headers=headers)

        def send_error(self, code: int, message: str | None = None,
                       explain: str | None = None) -> None:
            # The stdlib's own refusals (malformed request line, URI too long, ...) in JSON too.
            if code == HTTPStatus.NOT_IMPLEMENTED:
                # a method with no do_* handler (TRACE, CONNECT, anything): the resource
                # exists, the method does not apply to it
                self._not_allowed()
                return
            self.close_connection = True
            try:
                phrase = HTTPStatus(code).phrase
            except ValueError:
                phrase = "Error"
            self._send(code, {"error": phrase, "message": message or phrase},
                       headers={"Connection": "close"})

        def _not_allowed(self) -> None:
            self.close_connection = True  # an unread body must not become the next request
            path = urlsplit(self.path).path.rstrip("/") or "/"
            allowed = allowed_methods(path)
            if not allowed:
                self._error(404, f"no route {self.command} {path} (see /openapi.json)",
                            Connection="close")
                return
            self._error(405, f"method {self.command} not allowed on {path}: "
                        f"{', '.join(allowed)} only (see /openapi.json)",
                        Allow=", ".join(allowed), Connection="close")

        do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _not_allowed

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            path, query = url.path.rstrip("/") or "/", parse_qs(url.query)
            if allowed_methods(path) == ("POST",):
                self._not_allowed()
                return
            try:
                if path == "/healthz":
                    self._send(200, {"status": "ok"})
                elif path == "/readyz":
                    ok, why = api.ready()
                    self._send(200 if ok else 503, {"status": why})
                elif path == "/metrics":
                    self._send(200, api.metrics.render(), CONTENT_TYPE_LATEST)
                elif path == "/openapi.json":
                    self._send(200, OPENAPI)
                elif path == "/rollouts":
                    self._send(200, {"rollouts": [r.to_json() for r in api.store.list_rollouts()]})
                elif m := _ROLLOUT.match(path):
                    self._send(200, api.rollout_detail(m["name"]))
                elif m := _TICKS.match(path):
                    rec = api.store.latest(m["name"])
                    since = int(query.get("since", ["0"])[0])
                    limit = int(query["limit"][0]) if "limit" in query else None
                    full = query.get("full", ["0"])[0] in ("1", "true", "yes")
                    rows = api.store.ticks(rec.id, since_seq=since, limit=limit)
                    self._send(200, {"rollout": rec.name, "rollout_id": rec.id,
                                     "ticks": [t.to_json(full=full) for t in rows]})
                else:
                    self._error(404, f"no route GET {path} (see /openapi.json)")
            except NotFound as e:
                self._error(404, str(e))
            except ValueError as e:
                self._error(400, f"bad query: {e}")
            except StoreError as e:
                self._error(503, str(e))

        def do_POST(self) -> None:
            path = urlsplit(self.path).path.rstrip("/")
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= 65536:
                self.close_connection = True  # the body cannot be drained safely
                self._error(400 if length < 0 else 413,
                            "Content-Length must be a number of bytes up to 65536 (the write "
                            "calls take no body)", Connection="close")
                return
            if length:
                self.rfile.read(length)  # body unused; drain it
            m = _COMMAND.match(path)
            if not m:
                self._not_allowed()
                return
            status = api.authorize(self.headers.get("Authorization"))
            if status == 403:
                self._error(403, "write API disabled: start `canary run` with CANARY_API_TOKEN "
                                 "set (or --api-token-file)")
                return
            if status == 401:
                self._error(401, "missing or wrong bearer token",
                            **{"WWW-Authenticate": 'Bearer realm="canary-analyzer"'})
                return
            try:
                actor = f"api ({self.client_address[0]})"
                self._send(202, api.command(m["name"], m["cmd"], actor))
            except NotFound as e:
                self._error(404, str(e))
            except InvalidCommand as e:
                self._error(409, str(e))
            except StoreError as e:
                self._error(503, str(e))

    return Handler


_ROLLOUT_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"}, "name": {"type": "string"},
        "generation": {"type": "integer"}, "canary_version": {"type": "string"},
        "stable_version": {"type": "string"},
        "phase": {"type": "string", "enum": ["pending", "progressing", "paused", "promoting",
                                             "succeeded", "rolled_back", "failed"]},
        "step": {"type": "integer"}, "weight": {"type": "integer"},
        "reason": {"type": "string"}, "tick_seq": {"type": "integer"},
    },
}
_TICK_SCHEMA = {
    "type": "object",
    "properties": {
        "seq": {"type": "integer"}, "scheduled_at": {"type": "string", "format": "date-time"},
        "phase_before": {"type": "string"}, "phase_after": {"type": "string"},
        "weight_before": {"type": "integer"}, "weight_after": {"type": "integer"},
        "action": {"type": "string"}, "decision": {"type": "string", "nullable": True},
        "reason": {"type": "string"}, "checks": {"type": "array", "items": {"type": "object"}},
    },
}
_NAME_PARAM = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Canary Analyzer engine API", "version": "1"},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {"Rollout": _ROLLOUT_SCHEMA, "Tick": _TICK_SCHEMA},
    },
    "paths": {
        "/rollouts": {"get": {"summary": "Newest run of every policy", "responses": {"200": {
            "description": "rollouts", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"rollouts": {"type": "array", "items": {
                    "$ref": "#/components/schemas/Rollout"}}}}}}},
            "503": {"description": "store unreachable"}}}},
        "/rollouts/{name}": {"get": {
            "summary": "One rollout with pending commands, weight changes and events",
            "parameters": [_NAME_PARAM],
            "responses": {"200": {"description": "rollout", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Rollout"}}}},
                "404": {"description": "unknown rollout"},
                "503": {"description": "store unreachable"}}}},
        "/rollouts/{name}/ticks": {"get": {
            "summary": "Decision log", "parameters": [
                _NAME_PARAM,
                {"name": "since", "in": "query", "schema": {"type": "integer"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                {"name": "full", "in": "query", "schema": {"type": "boolean"}}],
            "responses": {"200": {"description": "ticks", "content": {"application/json": {
                "schema": {"type": "object", "properties": {"ticks": {
                    "type": "array", "items": {"$ref": "#/components/schemas/Tick"}}}}}}},
                "400": {"description": "a query parameter that is not a number"},
                "404": {"description": "unknown rollout"},
                "503": {"description": "store unreachable"}}}},
        **{f"/rollouts/{{name}}/{cmd}": {"post": {
            "summary": f"Queue a manual {cmd}", "security": [{"bearer": []}],
            "parameters": [_NAME_PARAM],
            "responses": {"202": {"description": "queued"},
                          "401": {"description": "missing or wrong token"},
                          "403": {"description": "write API disabled (no token configured)"},
                          "404": {"description": "unknown rollout"},
                          "409": {"description": "rollout already finished"}}}}
           for cmd in ("promote", "abort", "pause", "resume")},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
            "description": "text exposition format"}}}},
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "ok"}}}},
        "/readyz": {"get": {"summary": "Readiness", "responses": {
            "200": {"description": "ready"}, "503": {"description": "not ready"}}}},
    },
}
