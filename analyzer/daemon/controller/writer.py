"""Status writes and Events on RolloutPolicies, off the controller's and the engine's path.

`StatusWriter.submit(namespace, name, status)` never blocks and never raises: it replaces the
status waiting for that policy (coalescing: ten updates within one rate-limit period become one
write of the latest) and wakes the writer thread. The thread writes each policy's status at most
once per `min_interval` seconds (a merge patch of the status subresource), skips a status equal
to the last one written, and keeps a failed write to retry after `min_interval` unless a newer
status replaced it. Events go through a bounded queue on the same thread (a full queue drops
the Event and counts it: the decision itself is in the store).

The rate limit reads `monotonic()` (injectable). `pump(now)` does one round of due writes and
returns when the next one is due: the thread calls it in a loop, tests call it with a
simulated clock.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("analyzer.daemon.controller.writer")

Key = tuple[str, str]  # (namespace, name)


class StatusWriter:
    """See the module docstring. `api` has `patch_status(ns, name, status)` and
    `create_event(ns, body)`."""

    def __init__(self, api: Any, *, min_interval: float = 2.0,
                 monotonic: Callable[[], float] = time.monotonic,
                 max_events: int = 1000) -> None:
        self.api = api
        self.min_interval = min_interval
        self.monotonic = monotonic
        self._pending: dict[Key, dict[str, Any]] = {}
        self._written: dict[Key, dict[str, Any]] = {}
        self._last_write: dict[Key, float] = {}
        self._events: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()
        self.max_events = max_events
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._busy = False
        self.writes = self.coalesced = self.failures = 0
        self.events_sent = self.events_failed = self.events_dropped = 0

    # -- what the controller calls (never blocks on the network) -----------------------

    def submit(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        key = (namespace, name)
        with self._cond:
            if key in self._pending:
                self.coalesced += 1
            self._pending[key] = status
            self._cond.notify()

    def event(self, namespace: str, body: dict[str, Any]) -> None:
        with self._cond:
            if len(self._events) >= self.max_events:
                self.events_dropped += 1
                return
            self._events.append((namespace, body))
            self._cond.notify()

    def forget(self, namespace: str, name: str) -> None:
        """The policy is gone: drop what waits for it."""
        key = (namespace, name)
        with self._cond:
            self._pending.pop(key, None)
            self._written.pop(key, None)
            self._last_write.pop(key, None)

    def last_written(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._cond:
            return self._written.get((namespace, name))

    # -- the writer ----------------------------------------------------------------------

    def pump(self, now: float | None = None) -> float | None:
        """Write every due status and queued Event; the seconds until the next status is due
        (None: nothing waits)."""
        now = self.monotonic() if now is None else now
        with self._cond:
            events = list(self._events)
            self._events.clear()
            due: list[tuple[Key, dict[str, Any]]] = []
            wait: float | None = None
            for key, status in list(self._pending.items()):
                if status == self._written.get(key):
                    del self._pending[key]
                    continue
                left = self._last_write.get(key, -1e18) + self.min_interval - now
                if left <= 0:
                    due.append((key, status))
                    del self._pending[key]
                else:
                    wait = left if wait is None else min(wait, left)
            self._busy = True
        try:
            for ns, body in events:
                try:
                    self.api.create_event(ns, body)
                    self.events_sent += 1
                except Exception as e:
                    self.events_failed += 1
                    log.warning("could not record an Event on RolloutPolicy %s/%s: %s", ns,
                                body.get("involvedObject", {}).get("name"), _first_line(e))
            for key, status in due:
                try:
                    self.api.patch_status(key[0], key[1], status)
                    self.writes += 1
                    with self._cond:
                        self._written[key] = status
                        self._last_write[key] = now
                except Exception as e:
                    if getattr(e, "status", None) == 404:  # the policy is gone: nothing to say
                        self.forget(*key)
                        continue
                    self.failures += 1
                    log.warning("status of RolloutPolicy %s/%s not written (retried): %s",
                                key[0], key[1], _first_line(e))
                    with self._cond:
                        self._last_write[key] = now
                        self._pending.setdefault(key, status)  # a newer one wins
                        wait = self.min_interval if wait is None else min(wait,
                                                                          self.min_interval)
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
        return wait

    def start(self) -> StatusWriter:
        self._thread = threading.Thread(target=self._run, name="status-writer", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            wait = self.pump()
            with self._cond:
                if self._stop:
                    return
                if not self._events and (not self._pending or wait is not None):
                    self._cond.wait(wait if wait is not None else 1.0)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait (bounded) until nothing waits to be written; True when done."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._events or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def stop(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
