"""Rollouts sharing a Prometheus and a preset share one query per metric per tick."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from analyzer.demo.local_prometheus import PrometheusServer
from analyzer.sources.prometheus.source import PrometheusMetricSource, QueryCoalescer
from tests.prometheus import datasets
from tests.prometheus.conftest import CountingSession, make_policy

pytestmark = pytest.mark.prometheus

T0 = datetime.fromtimestamp(datasets.T0, UTC)
T1 = datetime.fromtimestamp(datasets.T1, UTC)


def _fleet(prom: PrometheusServer, n: int, session: CountingSession,
           coalescer: QueryCoalescer) -> list[PrometheusMetricSource]:
    return [
        PrometheusMetricSource(
            make_policy("generic", prom.url, service=f"svc{k}", namespace="fleet"),
            coalescer=coalescer, session=session,
        )
        for k in range(n)
    ]


@pytest.mark.parametrize("n", [2, 12])
def test_tick_cost_does_not_grow_with_rollouts(
    prom: PrometheusServer, dataset: datasets.Dataset, n: int
) -> None:
    session = CountingSession()
    sources = _fleet(prom, n, session, QueryCoalescer())
    results = [s.fetch(T0, T1) for s in sources]
    assert len(session.sent) == 3  # requests, errors, latency: for all n rollouts
    for k, r in enumerate(results):
        assert r.ok, r.no_data_reason
        assert r.stable is not None and r.canary is not None and r.canary.latency is not None
        want_s = dataset.expected[("generic", f"svc{k}", "v1")]
        want_c = dataset.expected[("generic", f"svc{k}", "v2")]
        assert (r.stable.requests, r.stable.errors) == (want_s.requests, want_s.errors)
        assert (r.canary.requests, r.canary.errors) == (want_c.requests, want_c.errors)
        assert r.canary.latency.counts == tuple(want_c.buckets.values())
    # the shared query is grouped by service
    assert "sum by (namespace, service, version)" in results[0].queries[0]


def test_concurrent_ticks_share_queries(prom: PrometheusServer) -> None:
    session = CountingSession()
    sources = _fleet(prom, 8, session, QueryCoalescer())
    barrier = threading.Barrier(len(sources))
    out: dict[int, object] = {}

    def tick(i: int) -> None:
        barrier.wait()
        out[i] = sources[i].fetch(T0, T1)

    threads = [threading.Thread(target=tick, args=(i,)) for i in range(len(sources))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(out) == len(sources)
    assert all(getattr(s, "ok", False) for s in out.values())
    # at most one extra query per metric for a rollout whose registration raced the leader
    assert len(session.sent) == 3


def test_next_tick_queries_again_and_closed_sources_leave(prom: PrometheusServer) -> None:
    session = CountingSession()
    coalescer = QueryCoalescer()
    sources = _fleet(prom, 3, session, coalescer)
    for s in sources:
        s.fetch(T0, T1)
    later = datetime.fromtimestamp(datasets.T1 + 60, UTC)
    sources[2].close()
    for s in sources[:2]:
        r = s.fetch(T1, later)
        assert r.ok
    assert len(session.sent) == 6
    assert 'service=~"svc0|svc1"' in r.queries[0]


def test_only_rollouts_in_step_join_a_shared_query(prom: PrometheusServer) -> None:
    """A rollout ticking at another second, or a one-off window (a pre-rollout baseline), is
    not dragged into everyone's queries: each query costs what the rollouts sharing it use."""
    session = CountingSession()
    sources = _fleet(prom, 4, session, QueryCoalescer())
    mid = datetime.fromtimestamp(datasets.T0 + 300, UTC)
    first = [s.fetch(T0, mid) for s in sources[:2]]  # in step
    assert all(r.ok for r in first)
    assert sources[2].fetch(T0, datetime.fromtimestamp(datasets.T0 + 290, UTC)).ok  # off step
    # nobody had asked yet: all four were in the first query
    assert 'service=~"svc0|svc1|svc2|svc3"' in first[0].queries[0], first[0].queries[0]
    before = len(session.sent)
    r = sources[0].fetch(mid, T1)  # the next tick of the in-step pair (and svc3, new)
    assert r.ok
    assert 'service=~"svc0|svc1|svc3"' in r.queries[0], r.queries[0]
    assert sources[1].fetch(mid, T1).ok and len(session.sent) == before + 3  # shared
    # a baseline-like window of svc3's own: nobody else is in it
    base = sources[3].fetch(datetime.fromtimestamp(datasets.T0 - 600, UTC), T0)
    assert 'service=~"svc3"' in base.queries[0] or 'service="svc3"' in base.queries[0], (
        base.queries[0])


def test_different_presets_do_not_share(prom: PrometheusServer) -> None:
    session = CountingSession()
    coalescer = QueryCoalescer()
    a = PrometheusMetricSource(make_policy("generic", prom.url, service="svc0",
                                           namespace="fleet"), coalescer=coalescer,
                               session=session)
    b = PrometheusMetricSource(make_policy("istio", prom.url), coalescer=coalescer,
                               session=session)
    assert a.fetch(T0, T1).ok and b.fetch(T0, T1).ok
    assert coalescer.queries == 6


def test_union_bookkeeping_and_eviction_without_a_server() -> None:
    """The coalescer's own logic: who joins a query, who leaves, and that old answers are
    dropped oldest first (a get must not scan the whole cache)."""
    from analyzer.sources.prometheus.coalescer import MetricResult

    c = QueryCoalescer(ttl=-1.0)  # every finished answer has expired at the next get
    key: Any = "prom"
    tokens = {m: c.register(key, m) for m in ("a", "b", "c")}  # type: ignore[arg-type]
    unions: list[frozenset[Any]] = []

    def ask(m: str, t0: int, t1: int) -> None:
        def execute(members: frozenset[Any]) -> MetricResult:
            unions.append(members)
            return MetricResult({}, ())
        c.get(key, m, ("requests", t0, t1), execute)  # type: ignore[arg-type]

    ask("a", 0, 10)
    assert unions[-1] == {"a", "b", "c"}  # nobody has asked: all may be in step
    ask("c", 0, 9)
    assert unions[-1] == {"b", "c"}  # a is elsewhere now; b has not asked yet
    ask("b", 0, 10)
    assert unions[-1] == {"a", "b"}  # the answer expired: a new query; a is still in step
    ask("a", 10, 20)
    assert unions[-1] == {"a", "b"}  # b ended at 10 too
    c.unregister(key, tokens["b"])
    ask("a", 20, 30)
    assert unions[-1] == {"a"}
    assert len(c._cache) <= 1 and len(c._created) <= 1


def test_a_late_joiner_does_not_requery_those_already_served() -> None:
    """Rollouts starting in the same second ask for the same baseline window one after
    another; each later one must not fetch again the slices of those already answered."""
    from analyzer.sources.prometheus.coalescer import MetricResult

    c = QueryCoalescer()
    key: Any = "prom"
    unions: list[frozenset[Any]] = []

    def execute(members: frozenset[Any]) -> MetricResult:
        unions.append(members)
        return MetricResult({}, ())

    for m in ("a", "b", "c"):
        c.register(key, m)  # type: ignore[arg-type]
        for kind in ("requests", "errors"):
            c.get(key, m, (kind, 0, 600), execute)  # type: ignore[arg-type]
    assert unions == [frozenset({m}) for m in ("a", "a", "b", "b", "c", "c")]
