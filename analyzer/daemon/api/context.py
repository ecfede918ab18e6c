"""What the HTTP layer serves from, and how it reaches the database without blocking.

`ApiContext` holds the store, the engine's metrics, the scheduler (poked after a command), the
token, the link templates and the limits. Every store call goes through `ApiContext.call`: it
runs on a fixed pool of `Limits.db_threads` threads, so however many requests arrive, at most
that many database calls run at once (the rest queue); the request deadline (limits.py)
cancels a queued or slow call's wait and answers 503, while a call already running finishes
on its thread and its result is dropped.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from analyzer.daemon.api.links import LinkTemplate
from analyzer.daemon.metrics import EngineMetrics
from analyzer.daemon.store import Store

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """The HTTP layer's bounds (docs/engine.md, "HTTP API: limits")."""

    #: connections (and requests in progress) uvicorn accepts; beyond, new requests get 503
    max_connections: int = 256
    #: database calls running at once (the rest wait, within their deadline)
    db_threads: int = 8
    #: seconds from a request's head to the start of its answer; then 503
    request_deadline: float = 10.0
    #: seconds a connection has to send a complete request head, counted from the connection
    #: (or from the end of the previous answer on a kept-alive connection); then it is closed
    head_timeout: float = 10.0
    #: seconds an idle kept-alive connection stays open
    keep_alive: float = 5.0
    #: live-update streams (/events) open at once; beyond, 503
    max_streams: int = 32
    #: seconds between two looks at the store for changes (live updates)
    poll_interval: float = 0.5
    #: largest request body announced in Content-Length (the write calls take none); beyond, 413
    max_body: int = 65536


@dataclass
class ApiContext:
    store: Store
    metrics: EngineMetrics
    scheduler: Any = None  # analyzer.daemon.scheduler.Scheduler (poke, running)
    token: str | None = None
    links: tuple[LinkTemplate, ...] = ()
    limits: Limits = field(default_factory=Limits)
    _pool: ThreadPoolExecutor | None = None

    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.limits.db_threads, thread_name_prefix="api-db")
        return self._pool

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` (a store call) on the database threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
