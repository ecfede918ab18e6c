"""A fault-injecting HTTP reverse proxy in front of the real kube-apiserver (loopback only).

A real API server does not give 500 storms, slow answers or dropped connections on demand; this
proxy does. Requests that match no fault are
forwarded unchanged, so everything else (authentication, RBAC, validation, conflicts, watches)
is the real server's.

TLS: the proxy TERMINATES TLS with its own certificate, signed by the cluster's CA (see
`KubeCluster.fault_proxy()`), so clients verify it exactly as they verify the API server, and
it forwards each request over a second, verified TLS connection to the server. Request headers
pass through unchanged (Authorization, Impersonate-User/Group, Content-Type...): the server
authenticates and authorizes the client, not the proxy. A TCP passthrough could not see methods
or paths (no filtering, no per-request status); a plain-HTTP proxy (`cert_file=None`) is also
possible but would skip the client's TLS code. Only HTTP/1.1 is offered (ALPN), which the
`kubernetes` client and kubectl both speak; upgrades (exec, port-forward) are not proxied.

Faults (first match wins, each for `count` requests or forever with count=None), filtered by
method(s) and a path substring:

    proxy.inject(500, count=5)                       # a 500 storm on the next 5 requests
    proxy.inject(409, method=WRITE_METHODS, path="/virtualservices/")   # conflicts on writes
    proxy.inject(None, delay=2.0, method="GET")      # slow answers (then forwarded)
    proxy.inject(drop="before")                      # close the connection, request unsent
    proxy.inject(drop="after", method="PATCH")       # forward (the write happens), then drop

`requests` logs every request (method, path, query, status or None when dropped, fault), and
`calls()` gives the (group, resource, RBAC verb) set of what was forwarded.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length"}
REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
           409: "Conflict", 410: "Expired", 422: "Invalid", 429: "TooManyRequests",
           500: "InternalError", 502: "BadGateway", 503: "ServiceUnavailable", 504: "Timeout"}

Drop = Literal["before", "after"]


@dataclass
class Fault:
    """One injected fault; `hits` counts the requests it answered."""

    status: int | None
    count: int | None
    methods: frozenset[str] | None
    path: str | None
    delay: float
    drop: Drop | None
    message: str
    retry_after: int | None = None
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return ((self.count is None or self.hits < self.count)
                and (self.methods is None or method in self.methods)
                and (self.path is None or self.path in path))

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.hits >= self.count


@dataclass(frozen=True)
class RequestRecord:
    """A request the proxy saw; status None when the connection was dropped."""

    method: str
    path: str
    query: str
    status: int | None
    fault: str | None


def status_body(code: int, message: str) -> dict[str, Any]:
    """A Kubernetes `Status` object, as the API server sends with an error."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": REASONS.get(code, "Unknown"), "code": code}


class FaultProxy:
    """The proxy; see the module docstring. start() binds a free 127.0.0.1 port."""

    def __init__(self, upstream: str, *, upstream_ca: Path | str,
                 cert_file: Path | str | None = None, key_file: Path | str | None = None,
                 upstream_timeout: float = 600.0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "https" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be https://host:port, not {upstream!r}")
        self.upstream_host, self.upstream_port = parts.hostname, parts.port
        self.upstream_timeout = upstream_timeout
        self._upstream_ssl = ssl.create_default_context(cafile=str(upstream_ca))
        self._upstream_ssl.set_alpn_protocols(["http/1.1"])
        self._server_ssl: ssl.SSLContext | None = None
        if cert_file:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(cert_file), str(key_file))
            ctx.set_alpn_protocols(["http/1.1"])
            self._server_ssl = ctx
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self.requests: list[RequestRecord] = []
        self._server: _Server | None = None
        self._handlers: set[_Handler] = set()

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True,
                         name="kube-fault-proxy").start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (watches included)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        with self._lock:
            handlers = list(self._handlers)
        for h in handlers:
            h.abort()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The proxy's URL (https when it has a certificate)."""
        assert self._server is not None, "start() the proxy first"
        scheme = "https" if self._server_ssl else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    # ----------------------------------------------------------------- faults

    def inject(self, status: int | None = 500, *, count: int | None = 1,
               method: str | Iterable[str] | None = None, path: str | None = None,
               delay: float = 0.0, drop: Drop | None = None, message: str = "injected fault",
               retry_after: int | None = None) -> Fault:
        """Answer the next `count` matching requests (None: all) with `status` after `delay`
        seconds; status None forwards them (after the delay). drop="before" closes the
        connection without forwarding; drop="after" forwards, then closes without answering.
        method: one method or several (e.g. WRITE_METHODS); path: a substring of the URL path.
        """
        methods = None
        if method is not None:
            methods = frozenset([method.upper()] if isinstance(method, str)
                                else (m.upper() for m in method))
        fault = Fault(status if drop is None else None, count, methods, path, delay, drop,
                      message, retry_after)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._faults.clear()

    def clear_requests(self) -> None:
        """Forget the request log."""
        with self._lock:
            self.requests.clear()

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.matches(method, path):
                    f.hits += 1
                    return f
        return None

    def _record(self, rec: RequestRecord) -> None:
        with self._lock:
            self.requests.append(rec)

    def calls(self) -> set[tuple[str, str, str]]:
        """(API group, resource[/subresource], RBAC verb) of every request forwarded."""
        verbs = {"GET": "get", "PUT": "update", "PATCH": "patch", "POST": "create",
                 "DELETE": "delete"}
        out = set()
        with self._lock:
            recs = [r for r in self.requests if r.fault is None]
        for r in recs:
            parsed = parse_resource_path(r.path)
            if parsed is None:
                continue
            group, resource, name, sub = parsed
            verb = verbs.get(r.method, r.method.lower())
            if r.method == "GET" and name is None:
                verb = "watch" if parse_qs(r.query).get("watch") in (["true"], ["1"]) else "list"
            elif r.method == "DELETE" and name is None:
                verb = "deletecollection"
            out.add((group, resource + (f"/{sub}" if sub else ""), verb))
        return out

    # ----------------------------------------------------------------- forwarding

    def _upstream(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.upstream_host, self.upstream_port,
                                           timeout=self.upstream_timeout,
                                           context=self._upstream_ssl)


def parse_resource_path(path: str) -> tuple[str, str, str | None, str | None] | None:
    """(group, resource, name, subresource) of an API path; None for /version, /apis etc."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) != 2:
        rest = rest[2:]  # /namespaces/<ns>/<resource>...; /namespaces/<name> is the namespace
    return group, rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-handshake or mid-stream is not news


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        raw: socket.socket = self.request
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ctx = self.owner._server_ssl
        if ctx is not None:
            try:
                self.request = ctx.wrap_socket(raw, server_side=True)
            except (OSError, ssl.SSLError):
                raw.close()
                raise
        self._conn: http.client.HTTPSConnection | None = None
        with self.owner._lock:
            self.owner._handlers.add(self)
        super().setup()

    def abort(self) -> None:
        """Cut this client connection and its upstream connection (from another thread)."""
        for sock in (self.request, self._conn.sock if self._conn else None):
            with contextlib.suppress(OSError, AttributeError):
                sock.shutdown(socket.SHUT_RDWR)

    def _close_upstream_when_client_leaves(self, done: threading.Event) -> None:
        """While a response streams (a watch), notice the client hanging up and close the
        upstream request, as the server would see it without the proxy. A streaming client
        sends nothing more on its connection, so readable means EOF or a TLS close_notify."""
        conn = self._conn
        while not done.is_set():
            try:
                readable, _, _ = select.select([self.request], [], [], 0.2)
            except (OSError, ValueError):
                readable = [True]
            if readable and not done.is_set():
                with contextlib.suppress(OSError, AttributeError):
                    conn.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
                return

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.owner._lock:
            self.owner._handlers.discard(self)
        if self._conn is not None:
            self._conn.close()
        with contextlib.suppress(OSError):
            self.request.close()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _drop(self) -> None:
        """Close the client connection at once with a TCP reset, no answer."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            sock = self.request
            if isinstance(sock, ssl.SSLSocket):  # close the TCP socket under TLS, no alert
                socket.socket(fileno=sock.detach()).close()
            else:
                sock.close()

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _serve(self) -> None:
        owner = self.owner
        split = urlsplit(self.path)
        method = self.command
        body = self._read_body()
        fault = owner._take_fault(method, split.path)
        label = None
        if fault is not None:
            label = (f"drop-{fault.drop}" if fault.drop else
                     str(fault.status) if fault.status is not None else f"delay-{fault.delay}")
            if fault.delay:
                time.sleep(fault.delay)
            if fault.drop == "before":
                owner._record(RequestRecord(method, split.path, split.query, None, label))
                self._drop()
                return
            if fault.status is not None:
                owner._record(RequestRecord(method, split.path, split.query, fault.status,
                                            label))
                headers = [("Content-Type", "application/json")]
                if fault.retry_after is not None:
                    headers.append(("Retry-After", str(fault.retry_after)))
                self._send(fault.status, headers,
                           json.dumps(status_body(fault.status, fault.message)).encode())
                return
        try:
            resp = self._forward(method, body)
        except (OSError, http.client.HTTPException) as exc:
            owner._record(RequestRecord(method, split.path, split.query, 502, label))
            self._send(502, [("Content-Type", "application/json")], json.dumps(
                status_body(502, f"fault proxy: upstream failed: {exc!r}")).encode())
            return
        owner._record(RequestRecord(method, split.path, split.query, resp.status, label))
        if fault is not None and fault.drop == "after":
            resp.read()
            self._drop()
            return
        headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
        length = resp.getheader("Content-Length")
        if length is not None or not resp.chunked:
            self._send(resp.status, headers, resp.read())
            return
        # streamed (a watch, or a large list): pass each piece on as it arrives
        self.send_response(resp.status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        done = threading.Event()
        threading.Thread(target=self._close_upstream_when_client_leaves, args=(done,),
                         daemon=True, name="kube-fault-proxy-stream").start()
        try:
            while True:
                piece = resp.read1(65536)
                if not piece:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (OSError, http.client.HTTPException):
            self.close_connection = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        finally:
            done.set()

    def _forward(self, method: str, body: bytes) -> http.client.HTTPResponse:
        """Send the request upstream on this client connection's upstream connection.

        A reused keep-alive connection the server has closed meanwhile is retried once on a
        new one; a fresh connection's failure is not (a write may have been applied).
        """
        # items() keeps repeated headers (Impersonate-Group) repeated
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP]
        while True:
            fresh = self._conn is None
            if self._conn is None:
                self._conn = self.owner._upstream()
            conn = self._conn
            try:
                conn.putrequest(method, self.path, skip_accept_encoding=True)
                for k, v in headers:
                    conn.putheader(k, v)
                if body or method in ("POST", "PUT", "PATCH"):
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body or None)
                return conn.getresponse()
            except (OSError, http.client.HTTPException):
                conn.close()
                self._conn = None
                if fresh:
                    raise

    do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = _serve
