"""Which version of a custom resource the API server serves: API discovery, cached per client.

`GET /apis/<group>` lists the versions a group serves and the server's preferred one;
`GET /apis/<group>/<version>` lists the resources each version serves (the CRDs of one group may
serve different versions). A router names the versions it reads, newest first (Istio: v1,
v1beta1, v1alpha3); the version used is the server's preferred one when the router reads it and
it serves the resource, else the first of the router's versions that does. Reads and writes then
go to that version's URL, so an object is written in the version it was read in.

Discovery needs no RBAC rule of ours: the `system:discovery` ClusterRole grants it to every
authenticated client. When discovery cannot answer (HTTP 403 from a restrictive proxy, a
non-JSON answer) the router's newest version is used and the reason is kept for error messages;
a group the server does not serve at all (404) is reported as such.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import urllib3

from analyzer.routers.base import RouterError

_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError)


@dataclass(frozen=True)
class Resolution:
    """What discovery said about one resource: `version` to use (None: discovery could not
    tell, use the router's newest) and, when None, `note` saying why."""

    version: str | None
    note: str = ""


def choose_version(supported: Sequence[str], preferred: str | None,
                   serving: Callable[[str], bool]) -> str | None:
    """The server's preferred version if the router reads it and it serves the resource, else
    the first supported version that serves it; None when no supported version does."""
    if preferred in supported and serving(preferred):
        return preferred
    for v in supported:
        if serving(v):
            return v
    return None


class Discovery:
    """Discovery answers through one `kubernetes.client.ApiClient` (from `client()`, created
    lazily), cached for the life of this object (one router)."""

    def __init__(self, client: Callable[[], Any], timeout: tuple[float, float]) -> None:
        self._client = client
        self._timeout = timeout
        self._lock = threading.Lock()
        self._groups: dict[str, tuple[str | None, tuple[str, ...]] | None] = {}
        self._resources: dict[tuple[str, str], frozenset[str]] = {}

    def _get(self, path: str) -> tuple[int, Any]:
        api = self._client()
        params = api.param_serialize(method="GET", resource_path=path,
                                     header_params={"Accept": "application/json"},
                                     auth_settings=["BearerToken"])
        try:
            resp = api.call_api(*params, _request_timeout=self._timeout)
            resp.read()
        except _TRANSPORT_ERRORS as e:
            text = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise RouterError(f"cannot discover {path}: the Kubernetes API is unreachable "
                              f"({type(e).__name__}: {text[:200]})") from None
        try:
            return resp.status, json.loads(resp.data or b"null")
        except ValueError:
            return resp.status, None

    def _group(self, group: str) -> tuple[int, tuple[str | None, tuple[str, ...]] | None]:
        status, body = self._get(f"/apis/{group}")
        if status != 200 or not isinstance(body, dict):
            return status, None
        versions = tuple(str(v.get("version")) for v in body.get("versions") or []
                         if isinstance(v, dict) and v.get("version"))
        preferred = (body.get("preferredVersion") or {}).get("version")
        return status, (str(preferred) if preferred else None, versions)

    def _serves(self, group: str, version: str, plural: str) -> bool:
        key = (group, version)
        if key not in self._resources:
            status, body = self._get(f"/apis/{group}/{version}")
            names = {str(r.get("name")) for r in (body or {}).get("resources") or []
                     if isinstance(r, dict)} if status == 200 and isinstance(body, dict) else set()
            self._resources[key] = frozenset(names)
        return plural in self._resources[key]

    def forget(self, group: str) -> None:
        """Drop what is known of `group` (after a 404: its CRD may have changed versions)."""
        with self._lock:
            self._groups.pop(group, None)
            for key in [k for k in self._resources if k[0] == group]:
                del self._resources[key]

    def resolve(self, group: str, kind: str, plural: str,
                supported: Sequence[str]) -> Resolution:
        """The version of `group`/`plural` to read and write. RouterError when the group is
        served but in none of the `supported` versions."""
        with self._lock:
            if group not in self._groups:
                status, answer = self._group(group)
                if answer is None:
                    if status == 404:
                        return Resolution(None, f"the API server serves no API group {group} "
                                                f"(is the {kind} CRD installed?)")
                    return Resolution(None, f"API discovery of {group} answered HTTP {status}")
                self._groups[group] = answer
            preferred, versions = self._groups[group] or (None, ())
            version = choose_version([v for v in supported if v in versions], preferred,
                                     lambda v: self._serves(group, v, plural))
            if version is None:
                serving = [v for v in versions if self._serves(group, v, plural)]
                raise RouterError(
                    f"the API server serves {kind} ({group}) in "
                    f"{', '.join(serving) or 'no version'} (the group serves "
                    f"{', '.join(versions) or 'nothing'}); this router reads "
                    f"{', '.join(supported)}: upgrade the CRD or ask for support of that version")
            return Resolution(version)
