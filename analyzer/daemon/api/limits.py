"""Per-request bounds, as ASGI middleware around the whole app: a body size limit (413), a
deadline from the request head to the answer (503 when it passes), and one DEBUG log line per
request with the method, the path (never the query string: it may carry a token) and the
status. Streams (/events) have no deadline; their number is bounded by the change feed.

The other bounds sit elsewhere: connections and the time to send a request head in
server.py (uvicorn), database calls in flight in context.py.
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from analyzer.daemon.api.context import Limits
from analyzer.daemon.api.errors import send_json_error

log = logging.getLogger("analyzer.daemon.api")

STREAM_PATHS = frozenset({"/events"})


class RequestLimits:
    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.monotonic()
        status = 0

        async def send_tracked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            declared = _content_length(scope)
            if declared > self.limits.max_body:
                await send_json_error(
                    send_tracked, 413, f"request body of {declared} bytes: at most "
                    f"{self.limits.max_body} (a start request carries a policy, far smaller)",
                    {"Connection": "close"})
            elif scope["path"] in STREAM_PATHS:
                await self.app(scope, receive, send_tracked)
            else:
                try:
                    await asyncio.wait_for(self.app(scope, receive, send_tracked),
                                           self.limits.request_deadline)
                except TimeoutError:
                    if status:
                        raise  # the answer had started: uvicorn closes the connection
                    await send_json_error(
                        send_tracked, 503, f"no answer within the request deadline of "
                        f"{self.limits.request_deadline:g}s (database slow or busy): retry",
                        {"Retry-After": "1"})
        finally:
            # method and path only: the query string and the headers may carry secrets
            log.debug("%s %s %s %.0fms", scope["method"], scope["path"], status or "-",
                      1000 * (time.monotonic() - t0))


def _content_length(scope: Scope) -> int:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0  # h11 refuses a malformed Content-Length before the app runs
    return 0
