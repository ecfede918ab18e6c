"""A judge's baseline from Prometheus: consecutive windows read with one range query per metric
(`PrometheusMetricSource.fetch_intervals`) count exactly what one fetch per window counts,
counter resets and series that appear or vanish included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from analyzer.core.types import Samples
from analyzer.demo.local_prometheus import PrometheusServer, free_port
from analyzer.sources.base import fetch_windows
from analyzer.sources.prometheus.source import PrometheusMetricSource, QueryCoalescer
from tests.prometheus import datasets
from tests.prometheus.conftest import CountingSession, make_policy

pytestmark = pytest.mark.prometheus

T0 = datetime.fromtimestamp(datasets.T0, UTC)
MINUTE = timedelta(minutes=1)
# ten 1-minute windows over the dataset's (T0, T1]: the canary's pod "a" resets at step 40
# (T0 + 5 min), its pod "new" appears at step 30, the stable's pod "gone" vanishes at step 35
WINDOWS = [(T0 + k * MINUTE, T0 + (k + 1) * MINUTE) for k in range(10)]


def _counts(s: Samples) -> tuple[object, ...]:
    def version(v: object) -> object:
        if v is None:
            return None
        lat = v.latency  # type: ignore[attr-defined]
        return (v.requests, v.errors, lat.counts if lat is not None else None)  # type: ignore[attr-defined]

    return (s.t0, s.t1, s.ok, version(s.stable), version(s.canary))


def _read_alone(s: Samples) -> bool:
    """The window was fetched on its own: its raw-sample queries are among its queries (the
    fast form, range or instant, starts with label_replace)."""
    return any(not q.startswith("label_replace") for q in s.queries)


def test_range_query_counts_as_one_fetch_per_window(
    prom: PrometheusServer, dataset: datasets.Dataset
) -> None:
    policy = make_policy("generic", prom.url)
    session = CountingSession()
    src = PrometheusMetricSource(policy, coalescer=QueryCoalescer(), session=session)
    ref_session = CountingSession()
    ref = PrometheusMetricSource(policy, coalescer=QueryCoalescer(), session=ref_session)

    got = src.fetch_intervals(WINDOWS)
    want = [ref.fetch(t0, t1) for t0, t1 in WINDOWS]

    assert [_counts(s) for s in got] == [_counts(s) for s in want]
    assert all(s.ok for s in got), [s.no_data_reason for s in got]
    for role, version in (("stable", "v1"), ("canary", "v2")):
        expected = dataset.expected[("generic", "checkout", version)]
        assert sum(getattr(s, role).requests for s in got) == expected.requests
        assert sum(getattr(s, role).errors for s in got) == expected.errors
    # the windows with a reset or churn (within the 5 min lookback of a vanished series: most
    # of this dataset) were read on their own; the others came from the three range queries
    # (requests, errors, latency)
    alone = [s for s in got if _read_alone(s)]
    assert 1 <= len(alone) < len(WINDOWS)
    assert [_read_alone(s) for s in got] == [_read_alone(s) for s in want]
    instant = sum(len(s.queries) for s in alone)
    assert len(session.sent) == 3 + instant < len(ref_session.sent)


def test_windows_that_do_not_tile_are_fetched_one_by_one(prom: PrometheusServer) -> None:
    policy = make_policy("generic", prom.url, service="cart")
    session = CountingSession()
    src = PrometheusMetricSource(policy, coalescer=QueryCoalescer(), session=session)
    gappy = [WINDOWS[0], WINDOWS[2], WINDOWS[3]]
    got = src.fetch_intervals(gappy)
    ref = PrometheusMetricSource(policy, coalescer=QueryCoalescer(), session=CountingSession())
    assert [_counts(s) for s in got] == [_counts(ref.fetch(a, b)) for a, b in gappy]
    assert len(session.sent) >= 3 * len(gappy)


def test_a_dead_prometheus_fails_every_window_after_one_metric() -> None:
    """As `fetch` does: the first failing metric ends the reading, so a dead Prometheus costs
    one query's bounded retries for the whole baseline, not three per window."""
    policy = make_policy("generic", f"http://127.0.0.1:{free_port()}", retries=0)
    session = CountingSession()
    src = PrometheusMetricSource(policy, coalescer=QueryCoalescer(), session=session)
    got = list(fetch_windows(src, WINDOWS, canary_weight=0))
    assert len(got) == len(WINDOWS) and len(session.sent) == 1
    assert all(not s.ok and s.stable is None and s.canary is None for s in got)
    assert got[0].no_data_reason is not None
    assert got[0].no_data_reason.startswith("requests query failed")


def test_after_its_baseline_a_rollout_is_in_step_not_new(prom: PrometheusServer) -> None:
    """A rollout that read its baseline with its own range queries is known to the coalescer
    as in step with the windows that follow it: its first analysed window is shared with the
    rollouts in step with it, and it is not put into the queries of everyone else (as a
    rollout that never asked would be)."""
    coalescer, session = QueryCoalescer(), CountingSession()

    def source(service: str) -> PrometheusMetricSource:
        return PrometheusMetricSource(
            make_policy("generic", prom.url, service=service, namespace="fleet"),
            coalescer=coalescer, session=session)

    a, b, c = source("svc0"), source("svc1"), source("svc2")
    a.fetch_intervals(WINDOWS[:5])
    b.fetch_intervals(WINDOWS[2:7])  # started two minutes later: not in step with a
    c.fetch_intervals(WINDOWS[:5])  # started with a
    first = a.fetch(*WINDOWS[5])
    assert first.ok, first.no_data_reason
    shared = first.queries[0]
    assert 'svc0' in shared and 'svc2' in shared and 'svc1' not in shared
    sent = len(session.sent)
    assert c.fetch(*WINDOWS[5]).ok and len(session.sent) == sent  # c read a's answer
