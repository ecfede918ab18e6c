"""Serves the ASGI app with uvicorn in a background thread (`canary run`, the demo, tests).

`ApiServer(store, metrics, ...)` binds its socket at construction (an address in use fails
there, as an OSError), `start()` serves until `stop()`. Bounds (Limits in context.py):

- uvicorn's `limit_concurrency`: connections and requests in progress beyond
  `max_connections` get a 503;
- a connection has `head_timeout` seconds to send a complete request head, from the moment it
  connects or its previous answer ended, however slowly it trickles bytes (slowloris): then it
  is closed. uvicorn alone never closes a connection that keeps sending a byte now and then,
  and each such connection counts against `limit_concurrency`;
- no access log (uvicorn's would write every query string; limits.py logs method and path);
- requests the h11 parser refuses (a malformed Content-Length, a header line too long) get
  the API's JSON 400, not uvicorn's plain text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from analyzer.daemon.api.app import create_app
from analyzer.daemon.api.context import ApiContext, Limits
from analyzer.daemon.api.errors import error_body
from analyzer.daemon.api.links import LinkTemplate
from analyzer.daemon.metrics import EngineMetrics
from analyzer.daemon.store import Store

log = logging.getLogger("analyzer.daemon.api")

#: the largest request head (request line and headers) h11 buffers
MAX_HEAD_BYTES = 16384


class HeadTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on receiving each request head."""

    head_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn writes its access log (request line with the query string) whenever the
        # "uvicorn.access" logger has a handler, its own or an ancestor's, whatever
        # Config(access_log=False) set up: never here.
        self.access_log = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _busy(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._busy():
            self._disarm()  # a request is being answered: the request deadline bounds it

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._busy():
            self._arm()  # the next head (or the rest of an unread body) has head_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        data = (json.dumps(error_body(400, f"malformed HTTP request: {msg}")) + "\n").encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
                   (b"content-length", str(len(data)).encode())]
        try:
            for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                          h11.Data(data=data), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
        except h11.LocalProtocolError:
            pass  # an answer had started already: just close
        self.transport.close()


def _protocol(head_timeout: float) -> type[HeadTimeoutProtocol]:
    return type("HeadTimeoutProtocol", (HeadTimeoutProtocol,), {"head_timeout": head_timeout})


class ApiServer:
    """The HTTP API and the dashboard for one store; `scheduler` (optional) gets poked after a
    command so the owning replica ticks at once instead of at its next interval."""

    def __init__(self, store: Store, metrics: EngineMetrics, *, scheduler: Any = None,
                 token: str | None = None, host: str = "127.0.0.1", port: int = 8080,
                 links: tuple[LinkTemplate, ...] = (), limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.context = ApiContext(store=store, metrics=metrics, scheduler=scheduler,
                                  token=token or None, links=tuple(links), limits=self.limits)
        self.app = create_app(self.context)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family, backlog=256)
        self._sock.setblocking(False)
        host, port = self._sock.getsockname()[:2]
        self._address = (str(host), int(port))
        config = uvicorn.Config(
            self.app, http=_protocol(self.limits.head_timeout), lifespan="on",
            access_log=False, log_config=None, server_header=False,
            limit_concurrency=self.limits.max_connections,
            timeout_keep_alive=max(1, round(self.limits.keep_alive)),
            timeout_graceful_shutdown=2, h11_max_incomplete_event_size=MAX_HEAD_BYTES)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self._address

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self, timeout: float = 15.0) -> None:
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP API did not start on {self.url}")
            time.sleep(0.01)

    def stop(self) -> None:
        """Close the live-update streams, finish requests in flight (2 s at most), stop."""
        loop = getattr(self.app.state, "loop", None)
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(self.app.state.feed.close)
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._sock.close()
        self.context.close()

    def close(self) -> None:
        """Release the socket of a server that was never started."""
        if self._thread is None:
            self._sock.close()
            self.context.close()
