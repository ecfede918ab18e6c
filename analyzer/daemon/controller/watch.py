"""List-then-watch loops that never miss a change: resume from the last resourceVersion, list
again on 410 Gone, follow bookmarks.

`ListWatch` runs in its own thread until stopped:

1. `lister()` returns the current objects and the collection's resourceVersion; they go to
   `on_list(items)` (the consumer replaces its view: objects deleted while nobody watched
   disappear);
2. `watcher(rv)` streams events from rv; each ADDED/MODIFIED/DELETED goes to
   `on_event(type, object)` and moves rv on; a BOOKMARK only moves rv (the server's way of
   keeping an idle watch's rv fresh, so a reconnect after a quiet hour does not hit 410);
3. when the server ends the stream (its timeout) the loop watches again from rv; a 410 (an
   ERROR event with code 410, or the HTTP status) means rv is older than the server's history:
   back to 1. Connection errors wait (backoff, doubled up to `max_backoff`) and re-watch from rv.

Counters (`lists`, `gone`, `bookmarks`, `events`, `errors`) say what happened. The waits go
through `sleep(seconds, stop)` (injectable: tests pass a function that does not wait).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from analyzer.daemon.controller.kube import Gone

log = logging.getLogger("analyzer.daemon.controller.watch")

Obj = dict[str, Any]
Lister = Callable[[], tuple[list[Obj], str]]
Watcher = Callable[[str], Iterable[Obj]]


def real_sleep(seconds: float, stop: threading.Event) -> None:
    stop.wait(seconds)


class ListWatch:
    """See the module docstring."""

    def __init__(self, name: str, lister: Lister, watcher: Watcher, *,
                 on_list: Callable[[list[Obj]], None],
                 on_event: Callable[[str, Obj], None],
                 sleep: Callable[[float, threading.Event], None] = real_sleep,
                 min_backoff: float = 0.5, max_backoff: float = 30.0) -> None:
        self.name = name
        self.lister, self.watcher = lister, watcher
        self.on_list, self.on_event = on_list, on_event
        self.sleep = sleep
        self.min_backoff, self.max_backoff = min_backoff, max_backoff
        self.resource_version: str | None = None
        self.lists = self.gone = self.bookmarks = self.events = self.errors = 0
        self.stopped = threading.Event()
        self.synced = threading.Event()  # the first list was delivered
        self._thread: threading.Thread | None = None

    def start(self) -> ListWatch:
        self._thread = threading.Thread(target=self.run, name=f"watch-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.stopped.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> None:
        backoff = self.min_backoff
        while not self.stopped.is_set():
            try:
                if self.resource_version is None:
                    items, rv = self.lister()
                    self.lists += 1
                    self.resource_version = rv
                    self.on_list(items)
                    self.synced.set()
                self._follow(self.watcher(self.resource_version))
                backoff = self.min_backoff
            except Gone:
                self.gone += 1
                log.info("%s: resourceVersion %s too old (410 Gone): listing again", self.name,
                         self.resource_version)
                self.resource_version = None
            except Exception as e:
                if self.stopped.is_set():
                    return
                if getattr(e, "status", None) == 410:
                    self.gone += 1
                    self.resource_version = None
                    continue
                self.errors += 1
                log.warning("%s: watch failed (retrying in %.1f s): %s", self.name, backoff,
                            str(e).splitlines()[0] if str(e) else type(e).__name__)
                self.sleep(backoff, self.stopped)
                backoff = min(backoff * 2, self.max_backoff)

    def _follow(self, stream: Iterable[Obj]) -> None:
        it: Iterator[Obj] = iter(stream)
        for event in it:
            if self.stopped.is_set():
                return
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise Gone(str(obj.get("message")))
                raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('message')}")
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if rv:
                self.resource_version = str(rv)
            if kind == "BOOKMARK":
                self.bookmarks += 1
                continue
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self.events += 1
                self.on_event(str(kind), obj)
