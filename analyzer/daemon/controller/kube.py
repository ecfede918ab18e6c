"""The controller's calls to the Kubernetes API: RolloutPolicies (list, watch, metadata and status
patches), the canaryRef objects (get, watch) and Events, all as raw JSON through the
`kubernetes` client (the same client, credentials and TLS as the routers).

`PERMISSIONS` is what these calls need; deploy/kustomize/base/rbac-controller.yaml grants
exactly that (tests/deploy check both against the code, and the real API server against the
ServiceAccount).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from analyzer.policy import CANARY_REF_API_VERSIONS
from analyzer.policy.crd import GROUP, PLURAL, VERSION

Obj = dict[str, Any]

#: apiVersion of each canaryRef kind -> its resource (plural)
CANARY_REF_RESOURCES = {
    "Deployment": "deployments",
    "Service": "services",
    "SeldonDeployment": "seldondeployments",
    "Model": "models",
}

#: (API group, resource, verbs) the controller uses
PERMISSIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (GROUP, PLURAL, ("get", "list", "watch", "patch")),
    (GROUP, f"{PLURAL}/status", ("patch",)),
    ("", "events", ("create",)),
    *((CANARY_REF_API_VERSIONS[k].rpartition("/")[0], r, ("get", "watch"))
      for k, r in CANARY_REF_RESOURCES.items()),
)


class Gone(Exception):
    """410 Gone: the resourceVersion is too old; list again."""


class KubeApi:
    """Raw-JSON calls on one `kubernetes.client.ApiClient`."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.api_client = api_client
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)

    # -- collections and objects --------------------------------------------------------

    def list_policies(self, namespace: str | None) -> tuple[list[Obj], str]:
        if namespace:
            out = self._custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                             _request_timeout=30)
        else:
            out = self._custom.list_cluster_custom_object(GROUP, VERSION, PLURAL,
                                                          _request_timeout=30)
        return list(out.get("items") or []), str(out["metadata"]["resourceVersion"])

    def watch_policies(self, namespace: str | None, resource_version: str,
                       timeout_seconds: int) -> Iterator[Obj]:
        kwargs = self._watch_args(resource_version, timeout_seconds)
        if namespace:
            resp = self._custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                              **kwargs)
        else:
            resp = self._custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)
        return self._lines(resp)

    def get_object(self, api_version: str, resource: str, namespace: str, name: str) -> Obj:
        group, _, version = api_version.rpartition("/")
        out: Obj = self._custom.get_namespaced_custom_object(group, version, namespace, resource,
                                                             name, _request_timeout=30)
        return out

    def watch_object(self, api_version: str, resource: str, namespace: str, name: str,
                     resource_version: str, timeout_seconds: int) -> Iterator[Obj]:
        """Watch ONE object (fieldSelector on its name: RBAC `watch` on that name)."""
        group, _, version = api_version.rpartition("/")
        resp = self._custom.list_namespaced_custom_object(
            group, version, namespace, resource, field_selector=f"metadata.name={name}",
            **self._watch_args(resource_version, timeout_seconds))
        return self._lines(resp)

    # -- writes --------------------------------------------------------------------------

    def patch_policy(self, namespace: str, name: str, patch: list[Obj]) -> Obj:
        """A JSON patch (RFC 6902) of the RolloutPolicy: finalizers, the command annotation;
        `test` operations make it fail (422) when someone changed that field meanwhile."""
        out: Obj = self._custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, patch,
            _content_type="application/json-patch+json", _request_timeout=30)
        return out

    def patch_status(self, namespace: str, name: str, status: Obj) -> Obj:
        """A merge patch of the status subresource."""
        out: Obj = self._custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status},
            _content_type="application/merge-patch+json", _request_timeout=30)
        return out

    def create_event(self, namespace: str, body: Obj) -> None:
        self._core.create_namespaced_event(namespace, body, _request_timeout=10)

    # -- plumbing ------------------------------------------------------------------------

    @staticmethod
    def _watch_args(resource_version: str, timeout_seconds: int) -> dict[str, Any]:
        args: dict[str, Any] = {"watch": True, "allow_watch_bookmarks": True,
                                "timeout_seconds": timeout_seconds, "_preload_content": False,
                                "_request_timeout": (10, timeout_seconds + 15)}
        if resource_version:
            args["resource_version"] = resource_version
        return args

    @staticmethod
    def _lines(resp: Any) -> Iterator[Obj]:
        from kubernetes.watch.watch import iter_resp_lines

        try:
            for line in iter_resp_lines(resp):
                if line.strip():
                    yield json.loads(line)
        finally:
            resp.release_conn()
