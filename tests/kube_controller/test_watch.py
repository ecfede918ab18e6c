"""The controller's watches never miss a change: resume from the last resourceVersion, list
again on 410 Gone (a real one from the API server), follow bookmarks; and its status writer
coalesces and rate-limits on a simulated clock without ever blocking the caller."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from analyzer.daemon.controller.kube import Gone, KubeApi
from analyzer.daemon.controller.watch import ListWatch
from analyzer.daemon.controller.writer import StatusWriter
from tests.kube_controller.conftest import rollout_policy, wait_for
from tests.support.kube_cluster import KubeCluster
from tests.support.kube_objects import ClusterObjects


def _obj(rv: int, name: str = "p") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "n", "resourceVersion": str(rv)}}


class FakeServer:
    """Scripted list and watch answers; records from which rv each watch started."""

    def __init__(self, streams: list[Any]) -> None:
        self.streams = streams
        self.watched_from: list[str] = []
        self.lists = 0

    def lister(self) -> tuple[list[dict[str, Any]], str]:
        self.lists += 1
        return [_obj(10 * self.lists)], str(10 * self.lists)

    def watcher(self, rv: str) -> Iterator[dict[str, Any]]:
        self.watched_from.append(rv)
        if not self.streams:
            raise AssertionError("no more scripted streams")
        step = self.streams.pop(0)
        if isinstance(step, Exception):
            raise step
        yield from step


def _run(server: FakeServer, stop_after: int) -> tuple[ListWatch, list[Any], list[float]]:
    seen: list[Any] = []
    slept: list[float] = []
    lw: ListWatch

    def on_event(kind: str, obj: dict[str, Any]) -> None:
        seen.append((kind, obj["metadata"]["resourceVersion"]))

    def sleep(seconds: float, stop: threading.Event) -> None:
        slept.append(seconds)  # simulated: no waiting

    def watcher(rv: str) -> Iterator[dict[str, Any]]:
        if len(server.watched_from) >= stop_after:
            lw.stopped.set()
            return iter(())
        return server.watcher(rv)

    lw = ListWatch("test", server.lister, watcher,
                   on_list=lambda items: seen.append(("LIST", len(items))),
                   on_event=on_event, sleep=sleep)
    lw.run()
    return lw, seen, slept


def test_resume_from_the_last_version_bookmarks_and_410() -> None:
    server = FakeServer([
        [{"type": "ADDED", "object": _obj(11)}, {"type": "BOOKMARK", "object": _obj(15)}],
        [{"type": "MODIFIED", "object": _obj(16)},
         {"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}}],
        Gone("HTTP 410"),
        ConnectionResetError("connection reset by peer"),
        [{"type": "DELETED", "object": _obj(31)}],
    ])
    lw, seen, slept = _run(server, stop_after=5)
    # the server ended the first watch: the next one starts at the bookmark's version
    assert server.watched_from == ["10", "15", "20", "30", "30"]
    assert seen == [("LIST", 1), ("ADDED", "11"), ("MODIFIED", "16"), ("LIST", 1),
                    ("LIST", 1), ("DELETED", "31")]
    assert (lw.lists, lw.gone, lw.bookmarks, lw.errors, lw.events) == (3, 2, 1, 1, 3)
    assert slept == [0.5]  # the connection error waited (backoff), the 410s listed at once


def test_backoff_doubles_up_to_its_bound() -> None:
    server = FakeServer([OSError("down")] * 8)
    lw, _, slept = _run(server, stop_after=8)
    assert slept == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert lw.errors == 8 and lw.lists == 1


def test_a_real_410_gone_lists_again_and_misses_nothing(rolloutpolicy_crd: KubeCluster,
                                                        kube_namespace: str) -> None:
    """The API server's own 410: a watch from a compacted resourceVersion ("1")."""
    cluster = rolloutpolicy_crd
    api = KubeApi(cluster.api_client())
    objects = ClusterObjects(cluster, kube_namespace)
    objects.seed(rollout_policy("first"))
    names: set[str] = set()

    def on_list(items: list[dict[str, Any]]) -> None:
        names.clear()
        names.update(o["metadata"]["name"] for o in items)

    lw = ListWatch("rolloutpolicies", lambda: api.list_policies(kube_namespace),
                   lambda rv: api.watch_policies(kube_namespace, rv, 2), on_list=on_list,
                   on_event=lambda kind, o: names.add(o["metadata"]["name"])).start()
    try:
        wait_for("the first list", lambda: lw.synced.is_set())
        assert names == {"first"}
        lw.resource_version = "1"  # older than the server keeps: its next watch gets a 410
        wait_for("a 410 Gone and a new list", lambda: lw.gone >= 1 and lw.lists >= 2)
        objects.seed(rollout_policy("second"))
        wait_for("the policy created after the relist", lambda: "second" in names)
        assert lw.errors == 0
    finally:
        lw.stop()


class FakeApi:
    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.fail = 0
        self.events: list[dict[str, Any]] = []

    def patch_status(self, ns: str, name: str, status: dict[str, Any]) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError("API server away")
        self.patches.append((name, status))

    def create_event(self, ns: str, body: dict[str, Any]) -> None:
        self.events.append(body)


def test_status_writes_coalesce_and_are_rate_limited() -> None:
    api = FakeApi()
    w = StatusWriter(api, min_interval=2.0, monotonic=lambda: 0.0)
    w.submit("n", "a", {"weight": 5})
    assert w.pump(100.0) is None
    assert api.patches == [("a", {"weight": 5})]
    for weight in (10, 20, 25):  # three updates within the rate-limit period
        w.submit("n", "a", {"weight": weight})
    assert w.pump(101.0) == 1.0  # not due yet: due in one second
    assert api.patches == [("a", {"weight": 5})]
    assert w.pump(102.0) is None
    assert api.patches[-1] == ("a", {"weight": 25}) and len(api.patches) == 2
    assert w.coalesced == 2
    w.submit("n", "a", {"weight": 25})  # the same status again: nothing to write
    assert w.pump(200.0) is None and len(api.patches) == 2
    w.submit("n", "b", {"weight": 1})  # another policy has its own period
    w.pump(200.5)
    assert api.patches[-1] == ("b", {"weight": 1})


def test_a_failed_write_is_retried_with_the_newest_status() -> None:
    api = FakeApi()
    api.fail = 1
    w = StatusWriter(api, min_interval=2.0)
    w.submit("n", "a", {"weight": 5})
    assert w.pump(10.0) == 2.0 and w.failures == 1
    w.submit("n", "a", {"weight": 20})  # newer than the one that failed
    w.pump(12.0)
    assert api.patches == [("a", {"weight": 20})]


def test_submit_never_blocks_on_the_api() -> None:
    """While a write hangs on the API server, the controller keeps submitting."""
    release = threading.Event()

    class Hanging(FakeApi):
        def patch_status(self, ns: str, name: str, status: dict[str, Any]) -> None:
            release.wait(30)
            super().patch_status(ns, name, status)

    api = Hanging()
    w = StatusWriter(api, min_interval=0.0).start()
    try:
        w.submit("n", "a", {"weight": 1})
        wait_for("the writer is inside the hanging call", lambda: w._busy)
        done = threading.Event()

        def submit_many() -> None:
            for i in range(100):
                w.submit("n", "a", {"weight": i})
            done.set()

        threading.Thread(target=submit_many, daemon=True).start()
        assert done.wait(5)  # a liveness bound: 100 submits never waited for the API
        release.set()
        assert w.flush(10)
        assert api.patches[-1] == ("a", {"weight": 99}) and len(api.patches) == 2
    finally:
        release.set()
        w.stop()
