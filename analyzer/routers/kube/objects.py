"""Shared Kubernetes plumbing for the routers: object references, raw dict reads, optimistic
read-modify-write with a bounded 409 retry, dry-run capture and offline (`--current`) objects.

Custom resources are read and written in the version the API server serves them in
(discovery.py): an `ObjectRef` names the versions its router reads, `KubeObjects.resolve` picks
one, and error messages print it. Every write is a JSON merge patch (RFC 7386) that carries the
`metadata.resourceVersion` the change was computed from, so the API server answers 409 Conflict
when someone else wrote in between; the helper then reads again and recomputes. Objects are read
as raw JSON (never through the client's typed models) and the patch holds only the fields that
changed, so fields this client version does not know, other routes and other annotations are
never rewritten.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import urllib3

from analyzer.routers.arguments import KEEP, check_match, check_mirror, check_weight
from analyzer.routers.base import RouterError
from analyzer.routers.fence import Fence
from analyzer.routers.kube.discovery import Discovery
from analyzer.routers.kube.inputs import api_client_from_config

# Bounded retry on 409 Conflict: enough for a handful of concurrent writers, never endless.
DEFAULT_CONFLICT_RETRIES = 8
# (connect, read) seconds for every API call: a hung API server must not hang a rollout tick.
DEFAULT_REQUEST_TIMEOUT = (5.0, 30.0)
MERGE_PATCH = "application/merge-patch+json"

Mutator = Callable[[dict[str, Any]], None]
# What a misshapen object (a list where a mapping belongs, a string weight) raises in a router's
# reading of it; turned into a RouterError naming the object, never a traceback.
SHAPE_ERRORS = (TypeError, KeyError, AttributeError, ValueError, IndexError)
# What a dead or hung API server raises through urllib3 (the client's own HTTP errors are
# ApiException and handled separately).
_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError)


@dataclass(frozen=True)
class ObjectRef:
    """Names one namespaced object: `ObjectRef("networking.istio.io/v1", "VirtualService",
    "virtualservices", "default", "checkout", versions=("v1", "v1beta1", "v1alpha3"))`.

    `versions`: the versions the router reads, newest first (empty: only `api_version`'s, as for
    built-in kinds); `KubeObjects.resolve` returns the ref at the version the server serves.
    """

    api_version: str
    kind: str
    plural: str
    namespace: str
    name: str
    versions: tuple[str, ...] = ()

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.group, self.kind, self.namespace, self.name)

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name} ({self.api_version})"

    def at(self, version: str) -> ObjectRef:
        """The same object at another version of its group."""
        return dataclasses.replace(self, api_version=f"{self.group}/{version}")

    def as_read(self, obj: Any) -> ObjectRef:
        """The ref at the version `obj` (read through this ref) came in: for messages."""
        api_version = str(obj.get("apiVersion", "")) if isinstance(obj, dict) else ""
        group, _, version = api_version.rpartition("/")
        return self.at(version) if version and group == self.group else self


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch that turns `old` into `new` (lists are replaced whole)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return copy.deepcopy(new)
    patch: dict[str, Any] = {}
    for k in old:
        if k not in new:
            patch[k] = None
    for k, v in new.items():
        if k not in old:
            patch[k] = copy.deepcopy(v)
        elif old[k] != v:
            if isinstance(old[k], dict) and isinstance(v, dict):
                patch[k] = merge_patch(old[k], v)
            else:
                patch[k] = copy.deepcopy(v)
    return patch


def _api_message(e: Any) -> str:
    """The API server's Status message (or the HTTP reason) of an ApiException."""
    body = getattr(e, "body", None)
    if body:
        try:
            status = json.loads(body)
            if isinstance(status, dict) and status.get("message"):
                return str(status["message"])
        except (TypeError, ValueError):
            return str(body)[:300]
    reason = getattr(e, "reason", None) or str(e)
    return str(reason).strip()


class KubeObjects:
    """Raw-JSON get / merge-patch / create through the real `kubernetes` client.

    Kinds are dispatched to the typed APIs the server groups them under (AppsV1Api for
    Deployments, NetworkingV1Api for Ingresses) and to CustomObjectsApi for custom resources;
    every call uses `_preload_content=False` so the object comes back byte-exact as JSON.

    `dry_run=True`: reads go to the API (or to `current` objects), writes are recorded in
    `pending` and served to later reads, so several operations compose, but nothing is sent.
    `current` (objects from a file) makes it fully offline: nothing is read from the API either.
    """

    def __init__(
        self,
        api_client: Any | None = None,
        *,
        dry_run: bool = False,
        current: Iterable[dict[str, Any]] | None = None,
        kubeconfig: str | None = None,
        conflict_retries: int = DEFAULT_CONFLICT_RETRIES,
        request_timeout: tuple[float, float] = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        self._api_client = api_client
        self._kubeconfig = kubeconfig
        self.offline = current is not None
        self.dry_run = dry_run or self.offline
        self._current: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        for obj in current or ():
            self._current[_key_of(obj)] = copy.deepcopy(obj)
        self.pending: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.conflict_retries = conflict_retries
        self.request_timeout = request_timeout
        self.last_applied: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._apis: dict[str, Any] = {}
        self.discovery = Discovery(self._client, request_timeout)
        self._notes: dict[tuple[str, str, str, str], str] = {}  # why a version is a guess
        # Set by the engine for each tick (analyzer/routers/fence.py): every write below
        # checks the lease and carries the fencing token; None (the CLI) writes unfenced.
        self.fence: Fence | None = None

    # ------------------------------------------------------------------ raw API access

    def _client(self) -> Any:
        """The ApiClient, loading the configuration on first use."""
        with self._lock:
            if self._api_client is None:
                self._api_client = api_client_from_config(self._kubeconfig)
            return self._api_client

    def _api(self, name: str) -> Any:
        client_ = self._client()
        with self._lock:
            if name not in self._apis:
                from kubernetes import client

                cls = {
                    "custom": client.CustomObjectsApi,
                    "apps": client.AppsV1Api,
                    "networking": client.NetworkingV1Api,
                }[name]
                self._apis[name] = cls(client_)
            return self._apis[name]

    def _call(self, ref: ObjectRef, verb: str, body: Any = None, *,
              server_dry_run: bool = False) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "_preload_content": False,
            "_request_timeout": self.request_timeout,
        }
        if verb == "patch":
            opts["_content_type"] = MERGE_PATCH
        if server_dry_run:
            opts["dry_run"] = "All"
        ns, name = ref.namespace, ref.name
        if (ref.api_version, ref.kind) == ("apps/v1", "Deployment"):
            api = self._api("apps")
            fn = {
                "get": lambda: api.read_namespaced_deployment(name, ns, **opts),
                "patch": lambda: api.patch_namespaced_deployment(name, ns, body, **opts),
            }[verb]
        elif (ref.api_version, ref.kind) == ("networking.k8s.io/v1", "Ingress"):
            from kubernetes.client import V1Ingress

            api = self._api("networking")
            fn = {
                "get": lambda: api.read_namespaced_ingress(name, ns, **opts),
                "patch": lambda: api.patch_namespaced_ingress(name, ns, body, **opts),
                "create": lambda: api.create_namespaced_ingress(
                    ns, V1Ingress.from_dict(body), **opts
                ),
            }[verb]
        else:
            api = self._api("custom")
            g, v, p = ref.group, ref.version, ref.plural
            fn = {
                "get": lambda: api.get_namespaced_custom_object(g, v, ns, p, name, **opts),
                "patch": lambda: api.patch_namespaced_custom_object(
                    g, v, ns, p, name, body, **opts
                ),
                "create": lambda: api.create_namespaced_custom_object(g, v, ns, p, body, **opts),
            }[verb]
        resp = fn()
        data = resp.data if hasattr(resp, "data") else resp.read()
        return json.loads(data) if data else {}

    # ------------------------------------------------------------------ versions

    def resolve(self, ref: ObjectRef) -> ObjectRef:
        """`ref` at the version its object is read and written in: offline, the version of the
        given object; live, the one discovery picks (discovery.py). Refs without `versions`
        (built-in kinds) stay as they are."""
        if not ref.versions:
            return ref
        if self.offline:
            obj = self.pending.get(ref.key) or self._current.get(ref.key)
            if obj is None:
                return ref
            version = str(obj.get("apiVersion", "")).rpartition("/")[2]
            if version not in ref.versions:
                raise RouterError(
                    f"{ref.kind} {ref.namespace}/{ref.name} is {obj.get('apiVersion')}; this "
                    f"router reads {ref.group} {', '.join(ref.versions)}")
            return ref.at(version)
        found = self.discovery.resolve(ref.group, ref.kind, ref.plural, ref.versions)
        if found.version is None:
            self._notes[ref.key] = found.note
            return ref
        return ref.at(found.version)

    # ------------------------------------------------------------------ reads

    def read(self, ref: ObjectRef, *, missing_ok: bool = False) -> dict[str, Any] | None:
        """The object as a dict (a private copy); None when absent and `missing_ok`."""
        ref = self.resolve(ref)
        if ref.key in self.pending:
            return copy.deepcopy(self.pending[ref.key])
        if self.offline:
            obj = self._current.get(ref.key)
            other = next((o for k, o in self._current.items()
                          if k[1:] == ref.key[1:] and k[0] != ref.group), None)
            if obj is None and other is not None:
                raise RouterError(
                    f"the --current file has {ref.kind} {ref.namespace}/{ref.name} of "
                    f"{other.get('apiVersion')}, another API group; this router reads "
                    f"{ref.group} ({', '.join(ref.versions or (ref.version,))})")
            if obj is None and not missing_ok:
                raise RouterError(
                    f"{ref} is not in the --current file; add it (kubectl get -o yaml) "
                    "or drop --current to read it from the cluster"
                )
            return copy.deepcopy(obj)
        from kubernetes.client.exceptions import ApiException

        try:
            return self._call(ref, "get")
        except ApiException as e:
            if e.status == 404 and missing_ok:
                return None
            raise self._error(ref, "read", e) from None
        except _TRANSPORT_ERRORS as e:  # connection refused, timeout, TLS: unreachable
            raise RouterError(f"cannot read {ref}: {_transport_message(e)}") from None

    # ------------------------------------------------------------------ writes

    def update(self, ref: ObjectRef, mutate: Mutator,
               check: Callable[[dict[str, Any]], str | None] | None = None
               ) -> dict[str, Any] | None:
        """Read, apply `mutate` to a copy, write the difference as a merge patch guarded by
        the read's resourceVersion; on 409 read again and recompute (bounded).

        `mutate` edits the dict in place and raises RouterError when the object is not shaped
        as expected (then nothing is written). Returns the written object, or None when the
        object already was as wanted (idempotent: no write at all).
        `check`: live writes are first sent as a server-side dry run, and `check(result)` sees
        the object as the server would store it (pruned and defaulted by the served schema);
        a message it returns is raised as RouterError and nothing is written.
        """
        from kubernetes.client.exceptions import ApiException

        ref = self.resolve(ref)
        last_conflict = ""
        for attempt in range(self.conflict_retries + 1):
            current = self.read(ref)
            assert current is not None
            wanted = copy.deepcopy(current)
            with shape_errors(ref.as_read(current), "nothing was applied"):
                mutate(wanted)
            if self.fence is not None:
                self.fence.stamp_object(str(ref), current, wanted)
            if wanted == current:
                return None
            if self.dry_run:
                return self._record(ref, wanted)
            patch = merge_patch(current, wanted)
            rv = (current.get("metadata") or {}).get("resourceVersion")
            if rv:
                patch.setdefault("metadata", {})["resourceVersion"] = rv
            try:
                if check is not None:
                    problem = check(self._call(ref, "patch", patch, server_dry_run=True))
                    if problem:
                        raise RouterError(f"{ref}: {problem}; nothing was applied")
                if self.fence is not None:
                    self.fence.check_lease(str(ref))
                written = self._call(ref, "patch", patch)
            except ApiException as e:
                if e.status == 409:
                    last_conflict = _api_message(e)
                    _backoff(attempt)
                    continue
                raise self._error(ref, "update", e) from None
            except _TRANSPORT_ERRORS as e:
                raise RouterError(
                    f"cannot update {ref}: {_transport_message(e)}; the previous state stands "
                    "unless the API applied the write before the connection failed"
                ) from None
            self.last_applied.append(written)
            return written
        raise RouterError(
            f"cannot update {ref}: it kept changing under us ({self.conflict_retries + 1} "
            f"conflicting writes in a row; last: {last_conflict}); nothing was applied, try again"
        )

    def create(self, ref: ObjectRef, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create; None when it already exists (AlreadyExists: the caller re-reads and updates)."""
        from kubernetes.client.exceptions import ApiException

        ref = self.resolve(ref)
        if self.fence is not None:
            body = copy.deepcopy(body)
            self.fence.stamp_object(str(ref), None, body)
        if self.dry_run:
            return self._record(ref, body)
        try:
            if self.fence is not None:
                self.fence.check_lease(str(ref))
            written = self._call(ref, "create", body)
        except ApiException as e:
            if e.status == 409:
                return None
            raise self._error(ref, "create", e) from None
        except _TRANSPORT_ERRORS as e:
            raise RouterError(f"cannot create {ref}: {_transport_message(e)}") from None
        self.last_applied.append(written)
        return written

    def _record(self, ref: ObjectRef, obj: dict[str, Any]) -> dict[str, Any]:
        self.pending[ref.key] = copy.deepcopy(obj)
        self.last_applied.append(copy.deepcopy(obj))
        return obj

    def _error(self, ref: ObjectRef, action: str, e: Any) -> RouterError:
        status = getattr(e, "status", "?")
        msg = _api_message(e)
        if status == 404:
            self.discovery.forget(ref.group)  # the next call discovers the versions again
            note = self._notes.get(ref.key)
            if note:
                return RouterError(f"cannot {action} {ref}: it does not exist, and {note} "
                                   f"(API: {msg})")
            hint = "it does not exist; check the name and namespace in the policy"
            return RouterError(f"cannot {action} {ref}: {hint} (API: {msg})")
        if status in (401, 403):
            return RouterError(
                f"cannot {action} {ref}: HTTP {status}, not allowed (API: {msg}); grant the "
                "RBAC in deploy/ (see docs/routers.md)"
            )
        return RouterError(
            f"cannot {action} {ref}: HTTP {status} (API: {msg}); nothing was applied"
        )


@contextlib.contextmanager
def shape_errors(ref: ObjectRef, consequence: str) -> Iterator[None]:
    """Turns what a misshapen object makes a router raise into a RouterError naming it."""
    try:
        yield
    except RouterError:
        raise
    except SHAPE_ERRORS as e:
        raise RouterError(
            f"{ref} is not shaped as this router expects ({type(e).__name__}: {e}); "
            f"{consequence}; fix the object or the policy") from None


def _transport_message(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return f"the Kubernetes API is unreachable ({type(e).__name__}: {text[:200]})"


def _backoff(attempt: int) -> None:
    # Jitter spreads concurrent writers apart so each retry round lets at least one through.
    time.sleep(random.uniform(0, min(0.2, 0.01 * 2**attempt)))


def _key_of(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    api_version = str(obj.get("apiVersion", ""))
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    return (
        api_version.rpartition("/")[0],
        str(obj.get("kind", "")),
        str(meta.get("namespace") or "default"),
        str(meta.get("name", "")),
    )


# ---------------------------------------------------------------------- router scaffolding

class KubeRouter:
    """Common shape of the Kubernetes routers: one `KubeObjects`, `last_applied` per call."""

    provider = "?"

    def __init__(self, objects: KubeObjects) -> None:
        self.objects = objects

    @property
    def fence(self) -> Fence | None:
        """The fence every write of this router checks (on its objects' write path)."""
        return self.objects.fence

    @fence.setter
    def fence(self, fence: Fence | None) -> None:
        self.objects.fence = fence

    @property
    def last_applied(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for o in self.objects.last_applied]

    def _begin(self) -> None:
        self.objects.last_applied = []

    def _unsupported(self, what: str) -> RouterError:
        return RouterError(f"the {self.provider} router cannot {what}; pick a strategy it supports")


class SingleObjectRouter(KubeRouter):
    """A router whose whole state lives in one object: each operation is one guarded write,
    so reset (weight 0 + no header route + no mirror) is atomic too."""

    ref: ObjectRef

    def _prepare(self) -> None:
        """Checks on other objects (e.g. DestinationRule subsets) before any write."""

    def _apply(self, obj: dict[str, Any], weight: Any, match: Any, mirror: Any) -> None:
        raise NotImplementedError

    def _split(self, obj: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _server_check(self, weight: Any, match: Any, mirror: Any
                      ) -> Callable[[dict[str, Any]], str | None] | None:
        """A check of the server's dry-run result before a live write (see
        `KubeObjects.update`); None: write directly."""
        return None

    def _update(self, weight: Any = KEEP, match: Any = KEEP, mirror: Any = KEEP) -> None:
        self._begin()
        with shape_errors(self.ref, "nothing was applied"):
            self._prepare()
        self.objects.update(self.ref, lambda obj: self._apply(obj, weight, match, mirror),
                            check=self._server_check(weight, match, mirror))

    def get_weight(self) -> Any:
        obj = self.objects.read(self.ref)
        assert obj is not None
        with shape_errors(self.ref.as_read(obj), "cannot read the split"):
            return self._split(obj)

    def set_weight(self, canary_percent: int) -> None:
        self._update(weight=check_weight(canary_percent))

    def set_header_route(self, match: dict[str, str] | None) -> None:
        self._update(match=check_match(match))

    def set_mirror(self, percent: float | None) -> None:
        self._update(mirror=check_mirror(percent))

    def reset(self) -> None:
        self._update(weight=0, match=None, mirror=None)
