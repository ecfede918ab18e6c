"""Whole objects on the real test API server, as raw JSON, named by apiVersion and kind.

What a test uses to put objects on the server and read them back WITHOUT the code under test
(the routers, the event recorder): every call is the admin's, through `KubeCluster.request()`
(stdlib, verified TLS, no client models that would drop unknown fields).

    objects = ClusterObjects(cluster, namespace)
    stored = objects.seed(VIRTUAL_SERVICE)         # created in `namespace`; the stored copy
    objects.get("networking.istio.io/v1", "VirtualService", "checkout")   # None when absent
    objects.modify("networking.istio.io/v1", "VirtualService", "checkout", fn)  # a foreign writer
    objects.delete(...); objects.list("v1", "Event")
    history = objects.watch("networking.istio.io/v1", "VirtualService", "checkout")
    history.versions()                               # every version the server stored since

The REST path of a kind comes from the server's discovery document of its group version
(cached; a kind the cache does not know is looked up again, so CRDs installed later work).
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from tests.support.kube_cluster import KubeApiError, KubeCluster

Obj = dict[str, Any]


def group_version_path(api_version: str) -> str:
    """`/api/v1` for the core group, `/apis/<group>/<version>` otherwise."""
    return "/api/v1" if api_version == "v1" else f"/apis/{api_version}"


class ClusterObjects:
    """Raw-JSON create / get / modify / delete / list / watch of namespaced objects in one
    namespace, as the cluster admin (see the module docstring)."""

    def __init__(self, cluster: KubeCluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self._plurals: dict[tuple[str, str], str] = {}

    # ----------------------------------------------------------------- paths

    def plural(self, api_version: str, kind: str) -> str:
        """The resource name (`virtualservices`) of a namespaced kind, from discovery."""
        if (api_version, kind) not in self._plurals:
            doc = self.cluster.request("GET", group_version_path(api_version))
            for r in doc["resources"]:
                if "/" not in r["name"] and r.get("namespaced"):
                    self._plurals[(api_version, r["kind"])] = r["name"]
        try:
            return self._plurals[(api_version, kind)]
        except KeyError:
            raise KeyError(f"the API server serves no namespaced {kind} in {api_version}; "
                           "is its CRD installed?") from None

    def path(self, api_version: str, kind: str, name: str | None = None) -> str:
        base = (f"{group_version_path(api_version)}/namespaces/{self.namespace}/"
                f"{self.plural(api_version, kind)}")
        return f"{base}/{name}" if name else base

    # ----------------------------------------------------------------- objects

    def seed(self, obj: Obj) -> Obj:
        """Create a copy of obj in this namespace (its own namespace is replaced); the stored
        object comes back, with the server's defaults and without pruned fields."""
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["namespace"] = self.namespace
        result: Obj = self.cluster.request("POST", self.path(obj["apiVersion"], obj["kind"]), obj)
        return result

    def get(self, api_version: str, kind: str, name: str) -> Obj | None:
        try:
            result: Obj = self.cluster.request("GET", self.path(api_version, kind, name))
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def modify(self, api_version: str, kind: str, name: str, change: Callable[[Obj], None]
               ) -> Obj:
        """A foreign writer: read, change(obj) in place, replace guarded by the read's
        resourceVersion (a concurrent write makes it raise KubeApiError 409)."""
        obj = self.get(api_version, kind, name)
        if obj is None:
            raise KeyError(f"{kind} {self.namespace}/{name} does not exist")
        change(obj)
        result: Obj = self.cluster.request("PUT", self.path(api_version, kind, name), obj)
        return result

    def delete(self, api_version: str, kind: str, name: str) -> None:
        """Delete; absent is fine."""
        with contextlib.suppress(KubeApiError):
            self.cluster.request("DELETE", self.path(api_version, kind, name))

    def list(self, api_version: str, kind: str) -> list[Obj]:
        items: list[Obj] = self.cluster.request("GET", self.path(api_version, kind))["items"]
        return items

    def watch(self, api_version: str, kind: str, name: str) -> ObjectHistory:
        """Start recording every version of one existing object (see ObjectHistory)."""
        current = self.get(api_version, kind, name)
        if current is None:
            raise KeyError(f"{kind} {self.namespace}/{name} does not exist")
        return ObjectHistory(self, api_version, kind, name, current)


class ObjectHistory:
    """Every version of one object the API server stored, from a real watch.

    Starts at `first` (a version read from the server) and follows a watch from its
    resourceVersion in a background thread, re-opened from the last version seen when the
    server ends it (each watch asks for bookmarks so the version stays fresh). `versions()`
    raises AssertionError if the server said the history is gone (410 Expired): a gap is never
    silent.
    """

    WATCH_SECONDS = 30

    def __init__(self, objects: ClusterObjects, api_version: str, kind: str, name: str,
                 first: Obj) -> None:
        self._objects, self._name = objects, name
        self._path = objects.path(api_version, kind)
        self._versions = [copy.deepcopy(first)]
        self._arrived = [time.monotonic()]  # when each version reached this watch
        self._rv = first["metadata"]["resourceVersion"]
        self._error: str | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._follow, daemon=True,
                                        name=f"watch-{kind}-{name}")
        self._thread.start()

    def versions(self, settle: float = 5.0) -> list[Obj]:
        """The versions seen so far, oldest first, once the watch has delivered the object's
        current version (a write that returned before this call arrives within milliseconds;
        AssertionError when it has not after `settle` seconds, or when history was lost)."""
        caught_up = self._caught_up(settle)
        with self._lock:
            if self._error:
                raise AssertionError(f"the watch of {self._path}/{self._name} lost history: "
                                     f"{self._error}")
            if not caught_up:
                raise AssertionError(f"the watch of {self._path}/{self._name} is {settle:g} s "
                                     "behind the object")
            return copy.deepcopy(self._versions)

    def timed_versions(self, settle: float = 5.0) -> list[tuple[float, Obj]]:
        """`versions()` with the monotonic time each one reached the watch."""
        versions = self.versions(settle)
        with self._lock:
            return list(zip(self._arrived[:len(versions)], versions, strict=True))

    def stop(self) -> None:
        """Stop watching (the blocked read is woken by shutting its socket down)."""
        self._stopped.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    @property
    def watching(self) -> bool:
        return self._thread.is_alive()

    def _caught_up(self, settle: float) -> bool:
        try:
            rv = self._objects.cluster.request("GET", f"{self._path}/{self._name}")[
                "metadata"]["resourceVersion"]
        except KubeApiError as exc:
            if exc.status == 404:
                return True  # deleted: nothing more to wait for
            raise
        deadline = time.monotonic() + settle
        while True:
            with self._lock:
                if self._error or any(v["metadata"]["resourceVersion"] == rv
                                      for v in self._versions):
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def _follow(self) -> None:
        cluster = self._objects.cluster
        host, port = "127.0.0.1", cluster.port
        while not self._stopped.is_set():
            query = urlencode({"watch": "true", "resourceVersion": self._rv,
                               "allowWatchBookmarks": "true",
                               "fieldSelector": f"metadata.name={self._name}",
                               "timeoutSeconds": str(self.WATCH_SECONDS)})
            conn = http.client.HTTPSConnection(
                host, port, timeout=self.WATCH_SECONDS + 10, context=cluster.ssl_context())
            try:
                conn.connect()
                self._sock = conn.sock
                if self._stopped.is_set():
                    return
                conn.request("GET", f"{self._path}?{query}",
                             headers={"Authorization": f"Bearer {cluster.admin_token}"})
                resp = conn.getresponse()
                if resp.status != 200:
                    raise OSError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
                for line in resp:
                    if self._stopped.is_set():
                        return
                    self._event(json.loads(line))
            except (OSError, ValueError, http.client.HTTPException) as exc:
                if not self._stopped.is_set():
                    with self._lock:
                        self._error = f"watch failed: {exc!r}"
                return
            finally:
                conn.close()

    def _event(self, event: dict[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        with self._lock:
            if kind == "ERROR":
                self._error = f"{obj.get('code')} {obj.get('reason')}: {obj.get('message')}"
                self._stopped.set()
                return
            self._rv = obj["metadata"]["resourceVersion"]
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self._versions.append(obj)
                self._arrived.append(time.monotonic())
