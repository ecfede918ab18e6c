"""Query coalescing: rollouts that share a Prometheus and a query shape (selection.py's
`Layout`) share one query per metric per tick, grouped by (namespace, service, version), so a
tick's cost does not grow with the number of rollouts: each rollout reads its own rows of the
shared answer through an index built once per answer (`MetricResult.rows_of`), not by looking
at every row.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from analyzer.sources.prometheus.client import PrometheusClient
from analyzer.sources.prometheus.selection import Layout, Member


@dataclass(frozen=True)
class MetricResult:
    """Exact counts of one metric per group key, or why there are none."""

    counts: Mapping[tuple[str, ...], int] | None
    queries: tuple[str, ...]
    error: str | None = None
    # rows by Layout.owner, built by the first rollout that reads the answer
    _index: dict[Any, list[tuple[tuple[str, ...], int]]] = field(
        default_factory=dict, compare=False, repr=False)
    _indexed: threading.Event = field(default_factory=threading.Event, compare=False,
                                      repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def rows_of(self, layout: Layout, member: Member) -> list[tuple[tuple[str, ...], int]]:
        """The (group key, count) rows that may be `member`'s (Layout.role decides): a look-up
        in an index of the answer by (namespace, service), built once for every rollout
        sharing it."""
        if not self.counts:
            return []
        if not self._indexed.is_set():
            with self._lock:
                if not self._indexed.is_set():
                    for key, n in self.counts.items():
                        self._index.setdefault(layout.owner(key), []).append((key, n))
                    self._indexed.set()
        return [row for owner in layout.owners(member) for row in self._index.get(owner, ())]


@dataclass(frozen=True)
class BatchKey:
    """Rollouts with equal keys may share queries: the same Prometheus, the same query shape."""

    address: str
    headers: tuple[tuple[str, str], ...]
    timeout: float
    retries: int
    layout: Layout


@dataclass
class _Entry:
    members: frozenset[Member]
    created: float
    event: threading.Event = field(default_factory=threading.Event)
    result: MetricResult | None = None
    served: set[Member] = field(default_factory=set)
    earlier: frozenset[Member] = frozenset()  # served by earlier answers for the same tick
    unread: int = 0  # members that have not read the result yet (0: the result is let go)


class QueryCoalescer:
    """Shares one query per metric per tick among rollouts using the same Prometheus + preset.

    Every live `PrometheusMetricSource` registers its slice (namespace, service, versions). The
    first rollout to ask for a (Prometheus, preset, labels, metric, t0, t1) builds one query over
    the union of the registered slices likely to ask for the same window, grouped by
    (namespace, service, version); the others in the same second read their slice from that
    answer (concurrent callers wait for it); a rollout asking again for a tick it already had
    gets a new query. A source that is garbage-collected or `close()`d leaves the union.
    `queries` counts the queries this coalescer started (one per metric per tick and group,
    retries aside).

    "Likely to ask": a slice whose last window ended at this t0 (its ticks are in step with
    the asker's), one in the middle of this very window (its other metrics), or one that has
    not asked yet; minus those an earlier answer for the same tick already served. Rollouts
    ticking at other seconds, and one-off windows such as a rollout's pre-rollout baseline,
    are left out: with every slice in every query, each query would cost Prometheus (and the
    parsing) O(all rollouts) while serving only those ticking together.
    A slice left out that asks after all simply runs its own query.

    An answer is let go as soon as every rollout in its query has read it (the entry, small,
    stays until `ttl` for the bookkeeping above): ten thousand rollouts would otherwise keep
    several rounds of answers alive.
    """

    def __init__(self, ttl: float = 120.0) -> None:
        self.ttl = ttl
        self.queries = 0
        self._lock = threading.Lock()
        self._groups: dict[BatchKey, _Group] = {}
        self._cache: dict[tuple[Any, ...], _Entry] = {}
        self._created: deque[tuple[float, tuple[Any, ...], _Entry]] = deque()
        self._clients: dict[BatchKey, PrometheusClient] = {}
        self._next = 0

    def register(self, key: BatchKey, member: Member) -> int:
        with self._lock:
            self._next += 1
            self._groups.setdefault(key, _Group()).add(self._next, member)
            return self._next

    def unregister(self, key: BatchKey, token: int) -> None:
        with self._lock:
            group = self._groups.get(key)
            if group is not None:
                group.remove(token)
                if not group.tokens:
                    del self._groups[key]
                    self._clients.pop(key, None)

    def client(self, key: BatchKey, make: Callable[[], PrometheusClient]) -> PrometheusClient:
        with self._lock:
            c = self._clients.get(key)
            if c is None:
                c = self._clients[key] = make()
            return c

    def get(
        self, key: BatchKey, member: Member, tick: tuple[Any, ...],
        execute: Callable[[frozenset[Member]], MetricResult],
    ) -> MetricResult:
        """`tick` is (metric, t0, t1); `execute(members)` runs the shared query."""
        cache_key = (key, *tick)
        window = (tick[1], tick[2])
        now = time.monotonic()
        with self._lock:
            self._evict(now)
            group = self._groups.get(key) or _Group()
            entry = self._cache.get(cache_key)
            # A rollout asking twice for the same tick wants fresh data (a retry, a recovery),
            # not the answer it already had.
            if entry is None or member not in entry.members or member in entry.served:
                # those earlier answers for this very tick served will not ask again
                done = entry.earlier | entry.served if entry is not None else frozenset()
                members = (group.may_ask(window) - done) | {member}
                entry = _Entry(members=members, created=now, earlier=done,
                               unread=len(members))
                self._cache[cache_key] = entry
                self._created.append((now, cache_key, entry))
                leader = True
                self.queries += 1
            else:
                leader = False
            entry.served.add(member)
            group.asked(member, window)
        if leader:
            try:
                entry.result = execute(entry.members)
            except Exception as e:  # never leave waiters hanging; the caller: no-data
                entry.result = MetricResult(None, (), f"internal error: {type(e).__name__}: {e}")
            finally:
                entry.event.set()
        else:
            entry.event.wait()
        with self._lock:
            result = entry.result
            entry.unread -= 1
            if entry.unread <= 0:
                entry.result = None  # every member has it: let the answer go
        assert result is not None
        return result

    def asked(self, key: BatchKey, member: Member, window: tuple[Any, Any]) -> None:
        """`member` read `window` without a shared query (a range query of its own, such as
        a judge's baseline): it is no longer new, and it is in step with the rollouts whose
        windows end where this one ends. Without this a rollout that read its baseline at once
        would stay "not asked yet" and be put into every query until its first tick."""
        with self._lock:
            group = self._groups.get(key)
            if group is not None:
                group.asked(member, window)

    def _evict(self, now: float) -> None:
        # oldest first, so each get costs only what expired (not a scan of the whole cache)
        while self._created and now - self._created[0][0] > self.ttl:
            _, cache_key, entry = self._created[0]
            if not entry.event.is_set():
                break  # a query still running past the ttl: keep it (and what follows) for now
            self._created.popleft()
            if self._cache.get(cache_key) is entry:
                del self._cache[cache_key]


@dataclass
class _Group:
    """The registered slices of one batch key, indexed by the window each asked for last, so
    building a query's union costs the size of the union, not of the whole group."""

    tokens: dict[int, Member] = field(default_factory=dict)
    count: dict[Member, int] = field(default_factory=dict)  # tokens per slice
    fresh: set[Member] = field(default_factory=set)  # registered, not asked yet
    last: dict[Member, tuple[Any, Any]] = field(default_factory=dict)
    by_end: dict[Any, set[Member]] = field(default_factory=dict)
    by_window: dict[tuple[Any, Any], set[Member]] = field(default_factory=dict)

    def add(self, token: int, member: Member) -> None:
        self.tokens[token] = member
        self.count[member] = self.count.get(member, 0) + 1
        if member not in self.last:
            self.fresh.add(member)

    def remove(self, token: int) -> None:
        member = self.tokens.pop(token, None)
        if member is None:
            return
        self.count[member] -= 1
        if self.count[member] > 0:
            return
        del self.count[member]
        self.fresh.discard(member)
        self._unindex(member)

    def may_ask(self, window: tuple[Any, Any]) -> frozenset[Member]:
        """Slices likely to ask for `window`: in step (their last window ended at its start),
        in the middle of it (their other metrics), or not asked yet."""
        return frozenset(self.fresh).union(self.by_end.get(window[0], ()),
                                           self.by_window.get(window, ()))

    def asked(self, member: Member, window: tuple[Any, Any]) -> None:
        if member not in self.count:
            return  # not registered (or already gone): nothing to index
        self.fresh.discard(member)
        if self.last.get(member) == window:
            return
        self._unindex(member)
        self.last[member] = window
        self.by_end.setdefault(window[1], set()).add(member)
        self.by_window.setdefault(window, set()).add(member)

    def _unindex(self, member: Member) -> None:
        old = self.last.pop(member, None)
        if old is None:
            return
        for index, k in ((self.by_end, old[1]), (self.by_window, old)):
            bucket = index.get(k)
            if bucket is not None:
                bucket.discard(member)
                if not bucket:
                    del index[k]


SHARED_COALESCER = QueryCoalescer()
"""The process-wide coalescer a source built from a whole policy uses by default."""
