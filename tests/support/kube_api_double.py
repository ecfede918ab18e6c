"""An HTTP TEST DOUBLE of the Kubernetes API server. It is not a Kubernetes API server.

It speaks just enough of the API's REST protocol for the real `kubernetes` python client to
read and write objects the way it does against a cluster:

- GET (one object or a list), PUT, POST (create), PATCH with `application/merge-patch+json`,
  `application/strategic-merge-patch+json` (treated as a merge patch: no list merge keys) and
  `application/json-patch+json` (RFC 6902: add, remove, replace, move, copy, test);
- core (`/api/v1/...`), `apps/v1` deployments and their `scale` subresource,
  `networking.k8s.io/v1` ingresses, and any custom object by group/version/plural (the version
  in the URL is not checked against a CRD; objects are stored by group, plural, namespace, name);
- a cluster-wide resourceVersion bumped on every write, `metadata.generation` bumped when
  `spec` changes, 409 Conflict when a write carries a stale resourceVersion, 409 AlreadyExists
  on a second create, 404 NotFound with the API's Status body;
- fault injection: `inject(500)`, `inject(409, count=20)` (a conflict storm), `inject(None,
  delay=2.0)` (a slow API), each optionally limited to a method and a path substring;
- an optional `validator(obj)` called on every object about to be stored; when it raises, the
  write is refused with 422 Invalid (as admission/validation would), and nothing is stored;
- a request log (`requests`) so tests can compare the calls made with declared RBAC.

It does no authentication, no admission webhooks, no defaulting, no pruning, no watch, no
server-side apply and no CEL validation. It runs in a daemon thread on a free loopback port.
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

PLURALS = {
    "Deployment": "deployments",
    "Ingress": "ingresses",
    "Service": "services",
    "ConfigMap": "configmaps",
    "VirtualService": "virtualservices",
    "DestinationRule": "destinationrules",
    "SeldonDeployment": "seldondeployments",
    "HTTPRoute": "httproutes",
    "TrafficSplit": "trafficsplits",
}


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    content_type: str
    status: int


@dataclass
class Fault:
    status: int | None
    count: int | None  # None: until cleared
    method: str | None = None
    path: str | None = None
    delay: float = 0.0
    message: str = "injected fault"
    hits: int = field(default=0)


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def _status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


# ------------------------------------------------------------------------------- patches


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"json patch path {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> tuple[Any, str]:
    node = doc
    for p in parts[:-1]:
        if isinstance(node, list):
            node = node[int(p)]
        elif isinstance(node, dict) and p in node:
            node = node[p]
        else:
            raise ApiError(422, "Invalid", f"json patch: path segment {p!r} not found")
    return node, parts[-1]


def json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 (add, remove, replace, move, copy, test)."""
    doc = copy.deepcopy(doc)

    def get(path: str) -> Any:
        node = doc
        for p in _pointer(path):
            try:
                node = node[int(p)] if isinstance(node, list) else node[p]
            except (KeyError, IndexError, ValueError):
                raise ApiError(422, "Invalid", f"json patch: {path} not found") from None
        return node

    def add(path: str, value: Any) -> None:
        nonlocal doc
        parts = _pointer(path)
        if not parts:
            doc = value
            return
        parent, key = _parent(doc, parts)
        if isinstance(parent, list):
            parent.insert(len(parent) if key == "-" else int(key), value)
        else:
            parent[key] = value

    def remove(path: str) -> Any:
        parent, key = _parent(doc, _pointer(path))
        try:
            return parent.pop(int(key) if isinstance(parent, list) else key)
        except (KeyError, IndexError, ValueError):
            raise ApiError(422, "Invalid", f"json patch: cannot remove {path}") from None

    if not isinstance(ops, list):
        raise ApiError(400, "BadRequest", "a json patch is a list of operations")
    for op in ops:
        kind, path = op.get("op"), op.get("path", "")
        if kind == "add":
            add(path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            remove(path)
        elif kind == "replace":
            get(path)
            remove(path) if _pointer(path) else None
            add(path, copy.deepcopy(op["value"]))
        elif kind == "move":
            add(path, remove(op["from"]))
        elif kind == "copy":
            add(path, copy.deepcopy(get(op["from"])))
        elif kind == "test":
            if get(path) != op.get("value"):
                raise ApiError(422, "Invalid", f"json patch test failed at {path}")
        else:
            raise ApiError(400, "BadRequest", f"unknown json patch op {kind!r}")
    return doc


# ------------------------------------------------------------------------------- the double


class KubeApiDouble:
    """Test double of the Kubernetes API server; see the module docstring."""

    def __init__(self, validator: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.validator = validator
        self._objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self._kinds: dict[tuple[str, str], tuple[str, str]] = {}  # (group, plural) -> kind, apiV
        self._rv = 1000
        self._lock = threading.RLock()
        self._faults: list[Fault] = []
        self.requests: list[RequestRecord] = []
        self.written: list[dict[str, Any]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> KubeApiDouble:
        double = self

        class Handler(_Handler):
            owner = double

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True,
                                        name="kube-api-double")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> KubeApiDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the double first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def api_client(self) -> Any:
        """A real `kubernetes.client.ApiClient` pointed at this double."""
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        return client.ApiClient(cfg)

    # ----------------------------------------------------------------- test helpers

    def seed(self, obj: dict[str, Any], plural: str | None = None) -> dict[str, Any]:
        """Store an object as if created (no validation, no faults); returns the stored copy."""
        obj = copy.deepcopy(obj)
        group = obj["apiVersion"].rpartition("/")[0]
        plural = plural or PLURALS.get(obj["kind"], obj["kind"].lower() + "s")
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        with self._lock:
            self._kinds[(group, plural)] = (obj["kind"], obj["apiVersion"])
            self._stamp(obj, None)
            self._objects[(group, plural, meta["namespace"], meta["name"])] = obj
        return copy.deepcopy(obj)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        group = api_version.rpartition("/")[0]
        plural = PLURALS.get(kind, kind.lower() + "s")
        with self._lock:
            obj = self._objects.get((group, plural, namespace, name))
            return copy.deepcopy(obj)

    def modify(self, api_version: str, kind: str, namespace: str, name: str,
               fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """A foreign writer: change the stored object in place, bumping its resourceVersion."""
        group = api_version.rpartition("/")[0]
        plural = PLURALS.get(kind, kind.lower() + "s")
        with self._lock:
            key = (group, plural, namespace, name)
            obj = copy.deepcopy(self._objects[key])
            fn(obj)
            self._stamp(obj, self._objects[key])
            self._objects[key] = obj
            return copy.deepcopy(obj)

    def inject(self, status: int | None = 500, *, count: int | None = 1,
               method: str | None = None, path: str | None = None, delay: float = 0.0,
               message: str = "injected fault") -> Fault:
        """Make the next `count` matching requests fail with `status` (after `delay` s)."""
        fault = Fault(status, count, method.upper() if method else None, path, delay, message)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def calls(self) -> set[tuple[str, str, str]]:
        """(api group, resource[/subresource], RBAC verb) of every request served."""
        verbs = {"GET": "get", "PUT": "update", "PATCH": "patch", "POST": "create",
                 "DELETE": "delete"}
        out = set()
        for r in self.requests:
            try:
                group, _, _, plural, name, sub = _parse(r.path)
            except ApiError:
                continue
            verb = verbs[r.method]
            if r.method == "GET" and name is None:
                verb = "list"
            out.add((group, plural + (f"/{sub}" if sub else ""), verb))
        return out

    # ----------------------------------------------------------------- internals

    def _stamp(self, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        self._rv += 1
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(self._rv)
        if old is None:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp",
                            datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            meta.setdefault("generation", 1)
        else:
            for k in ("uid", "creationTimestamp"):
                if k in old.get("metadata", {}):
                    meta[k] = old["metadata"][k]
            gen = old.get("metadata", {}).get("generation", 1)
            meta["generation"] = gen + 1 if obj.get("spec") != old.get("spec") else gen

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.count is not None and f.count <= 0:
                    continue
                if f.method and f.method != method:
                    continue
                if f.path and f.path not in path:
                    continue
                if f.count is not None:
                    f.count -= 1
                f.hits += 1
                return f
        return None

    def handle(self, method: str, raw_path: str, content_type: str,
               body: bytes) -> tuple[int, dict[str, Any]]:
        path = urlsplit(raw_path).path
        fault = self._fault_for(method, path)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.status is not None:
                reason = {409: "Conflict", 500: "InternalError", 503: "ServiceUnavailable",
                          429: "TooManyRequests", 403: "Forbidden"}.get(fault.status, "Unknown")
                return fault.status, _status_body(fault.status, reason, fault.message)
        try:
            return 200 if method != "POST" else 201, self._dispatch(method, path, content_type,
                                                                    body)
        except ApiError as e:
            return e.code, _status_body(e.code, e.reason, e.message)

    def _dispatch(self, method: str, path: str, content_type: str, body: bytes) -> dict[str, Any]:
        group, version, ns, plural, name, sub = _parse(path)
        resource = f"{plural}.{group}" if group else plural
        payload: Any = None
        if body:
            try:
                payload = json.loads(body)
            except ValueError:
                raise ApiError(400, "BadRequest", "request body is not JSON") from None
        with self._lock:
            if name is None:
                if method == "GET":
                    items = [copy.deepcopy(o) for (g, p, n, _), o in sorted(self._objects.items())
                             if g == group and p == plural and n == ns]
                    kind = self._kinds.get((group, plural), ("Object", ""))[0]
                    return {"kind": f"{kind}List", "apiVersion": f"{group}/{version}".strip("/"),
                            "metadata": {"resourceVersion": str(self._rv)}, "items": items}
                if method == "POST":
                    return self._create(group, plural, ns, resource, payload)
                raise ApiError(405, "MethodNotAllowed", f"{method} on a collection")
            key = (group, plural, ns, name)
            current = self._objects.get(key)
            if current is None:
                raise ApiError(404, "NotFound", f'{resource} "{name}" not found')
            if sub == "scale":
                return self._scale(method, key, current, content_type, payload, resource)
            if sub not in (None, "status"):
                raise ApiError(404, "NotFound", f"subresource {sub!r} not served by the double")
            if method == "GET":
                return copy.deepcopy(current)
            if method == "PUT":
                new = payload
            elif method == "PATCH":
                new = self._patched(current, content_type, payload)
            else:
                raise ApiError(405, "MethodNotAllowed", f"{method} not served by the double")
            if sub == "status":
                status = new.get("status")
                new = copy.deepcopy(current)
                new["status"] = status
            return self._store(key, current, new, resource)

    def _patched(self, current: dict[str, Any], content_type: str, payload: Any) -> Any:
        ct = content_type.split(";")[0].strip()
        if ct in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            return merge_patch(current, payload)
        if ct == "application/json-patch+json":
            return json_patch(current, payload)
        raise ApiError(415, "UnsupportedMediaType", f"patch content type {ct!r} not supported")

    def _create(self, group: str, plural: str, ns: str, resource: str,
                payload: Any) -> dict[str, Any]:
        if isinstance(payload, dict) and not payload.get("metadata", {}).get("name") and \
                payload.get("metadata", {}).get("generateName"):
            # as the API server does: generateName plus a random suffix
            payload["metadata"]["name"] = payload["metadata"]["generateName"] + \
                uuid.uuid4().hex[:5]
        if not isinstance(payload, dict) or not payload.get("metadata", {}).get("name"):
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        name = payload["metadata"]["name"]
        key = (group, plural, ns, name)
        if key in self._objects:
            raise ApiError(409, "AlreadyExists", f'{resource} "{name}" already exists')
        obj = copy.deepcopy(payload)
        obj["metadata"]["namespace"] = ns
        obj["metadata"].pop("resourceVersion", None)
        self._validate(obj, resource, name)
        self._kinds.setdefault((group, plural), (obj.get("kind", ""), obj.get("apiVersion", "")))
        self._stamp(obj, None)
        self._objects[key] = obj
        self.written.append(copy.deepcopy(obj))
        return copy.deepcopy(obj)

    def _store(self, key: tuple[str, str, str, str], current: dict[str, Any], new: Any,
               resource: str) -> dict[str, Any]:
        name = key[3]
        if not isinstance(new, dict):
            raise ApiError(400, "BadRequest", "the object must be a JSON object")
        meta = new.setdefault("metadata", {})
        if meta.get("name", name) != name:
            raise ApiError(400, "BadRequest", "metadata.name does not match the URL")
        sent_rv = meta.get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409, "Conflict",
                f'Operation cannot be fulfilled on {resource} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
            )
        meta["name"], meta["namespace"] = name, key[2]
        self._validate(new, resource, name)
        self._stamp(new, current)
        self._objects[key] = new
        self.written.append(copy.deepcopy(new))
        return copy.deepcopy(new)

    def _validate(self, obj: dict[str, Any], resource: str, name: str) -> None:
        if self.validator is None:
            return
        try:
            self.validator(obj)
        except Exception as e:
            raise ApiError(422, "Invalid", f'{resource} "{name}" is invalid: {e}') from None

    def _scale(self, method: str, key: tuple[str, str, str, str], current: dict[str, Any],
               content_type: str, payload: Any, resource: str) -> dict[str, Any]:
        meta = current["metadata"]
        scale = {
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                         "resourceVersion": meta["resourceVersion"],
                         "uid": meta.get("uid", ""),
                         "creationTimestamp": meta.get("creationTimestamp")},
            "spec": {"replicas": current.get("spec", {}).get("replicas", 1)},
            "status": {"replicas": current.get("status", {}).get("replicas", 0)},
        }
        if method == "GET":
            return scale
        if method == "PUT":
            new_scale = payload
        elif method == "PATCH":
            new_scale = self._patched(scale, content_type, payload)
        else:
            raise ApiError(405, "MethodNotAllowed", f"{method} on scale")
        new = copy.deepcopy(current)
        new["metadata"]["resourceVersion"] = (new_scale.get("metadata") or {}).get(
            "resourceVersion") or meta["resourceVersion"]
        new.setdefault("spec", {})["replicas"] = (new_scale.get("spec") or {}).get("replicas", 1)
        stored = self._store(key, current, new, resource)
        scale["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
        scale["spec"]["replicas"] = stored["spec"]["replicas"]
        return scale


def _parse(path: str) -> tuple[str, str, str, str, str | None, str | None]:
    """(group, version, namespace, plural, name, subresource) of a namespaced resource path."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise ApiError(404, "NotFound", f"path {path} not served by the double")
    if len(rest) < 3 or rest[0] != "namespaces":
        raise ApiError(404, "NotFound", f"path {path}: only namespaced resources are served")
    ns, plural = rest[1], rest[2]
    name = rest[3] if len(rest) > 3 else None
    sub = rest[4] if len(rest) > 4 else None
    return group, version, ns, plural, name, sub


class _Handler(BaseHTTPRequestHandler):
    owner: KubeApiDouble
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without NODELAY each response waits ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        ctype = self.headers.get("Content-Type", "")
        status, payload = self.owner.handle(self.command, self.path, ctype, body)
        with self.owner._lock:
            self.owner.requests.append(
                RequestRecord(self.command, urlsplit(self.path).path, ctype, status))
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. its read timeout during an injected delay)

    do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = _serve
