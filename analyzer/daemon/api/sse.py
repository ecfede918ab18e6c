"""Live updates for the dashboard: server-sent events at `GET /events`.

One poller per process looks at the store every `Limits.poll_interval` seconds while at least
one browser listens (so it sees ticks committed by any replica sharing the database) and, when
any rollout changed (a tick, a phase, a new run), sends every listener one `rollouts` event
with the newest run of every policy (the rollouts table's rows). A page showing one rollout
refetches it when that rollout's `tick_seq` moved. A comment line every 15 s keeps proxies
from closing an idle stream; the browser's EventSource reconnects by itself.

Bounded: at most `Limits.max_streams` listeners (then 503), each with a one-slot queue (a slow
listener gets the latest state, not a backlog).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from analyzer.daemon.api.context import ApiContext
from analyzer.daemon.api.errors import error_body
from analyzer.daemon.api.routes import summaries
from analyzer.daemon.store import StoreError

log = logging.getLogger("analyzer.daemon.api")

HEARTBEAT_SECONDS = 15.0
RETRY_MS = 2000

router = APIRouter()


def _event(kind: str, data: Any, event_id: int | None = None) -> str:
    head = f"event: {kind}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n"


class ChangeFeed:
    """Polls the store while someone listens; fans each change out to every listener."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self._queues: set[asyncio.Queue[str | None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._latest: str | None = None
        self._signature: Any = None
        self._seq = 0
        self._closed = False

    @property
    def listeners(self) -> int:
        return len(self._queues)

    @property
    def full(self) -> bool:
        return self.listeners >= self.ctx.limits.max_streams

    async def stream(self) -> AsyncIterator[str]:
        if self._closed or self.full:
            yield _event("error", error_body(503, "too many live-update streams open"))
            return
        queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=1)
        self._queues.add(queue)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="api-change-feed")
        try:
            yield f"retry: {RETRY_MS}\n\n"
            if self._latest is not None:
                yield self._latest
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if item is None:
                    return
                yield item
        finally:
            self._queues.discard(queue)
            if not self._queues and self._poller is not None:
                self._poller.cancel()
                self._poller = None
                self._signature = None
                self._latest = None

    async def _poll(self) -> None:
        failing = False
        while self._queues and not self._closed:
            try:
                recs = await self.ctx.call(self.ctx.store.list_rollouts)
                failing = False
                signature = [(r.id, r.tick_seq, str(r.phase), r.updated_at) for r in recs]
                if signature != self._signature:
                    rows = await self.ctx.call(summaries, self.ctx.store, recs)
                    self._signature = signature
                    self._seq += 1
                    self._publish(_event("rollouts", {"rollouts": rows}, self._seq))
            except StoreError as e:
                if not failing:  # once per outage, not every poll
                    log.warning("live updates: %s", e)
                    self._publish(_event("error", error_body(503, str(e))))
                failing = True
            except Exception:
                log.exception("live updates: poll failed")
            await asyncio.sleep(self.ctx.limits.poll_interval)

    def _publish(self, item: str) -> None:
        if item.startswith("event: rollouts"):
            self._latest = item
        for q in list(self._queues):
            with contextlib.suppress(asyncio.QueueEmpty):
                q.get_nowait()  # latest wins: a slow listener skips to the newest state
            q.put_nowait(item)

    def close(self) -> None:
        """End every stream (server shutdown)."""
        self._closed = True
        for q in list(self._queues):
            with contextlib.suppress(asyncio.QueueEmpty):
                q.get_nowait()
            q.put_nowait(None)
        if self._poller is not None:
            self._poller.cancel()


@router.get("/events", include_in_schema=False)
async def events(request: Request) -> Any:
    feed: ChangeFeed = request.app.state.feed
    if feed.full:
        return JSONResponse(error_body(503, f"too many live-update streams open (at most "
                                            f"{feed.ctx.limits.max_streams}): retry later"),
                            status_code=503, headers={"Retry-After": "5"})
    return StreamingResponse(feed.stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
