"""Builds the Router a policy names: `build_router(policy, api_client=..., dry_run=...)`."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from analyzer.policy import Policy
from analyzer.routers.base import Router, RouterError
from analyzer.routers.kube.objects import KubeObjects

# provider -> (module, class); every Kubernetes router takes (policy, KubeObjects).
KUBE_ROUTERS = {
    "istio": ("analyzer.routers.kube.istio", "IstioRouter"),
    "nginx-ingress": ("analyzer.routers.kube.nginx_ingress", "NginxIngressRouter"),
    "knative": ("analyzer.routers.kube.knative", "KnativeRouter"),
    "seldon": ("analyzer.routers.kube.seldon", "SeldonRouter"),
    "seldon-v2": ("analyzer.routers.kube.seldon_v2", "SeldonV2Router"),
    "kubernetes": ("analyzer.routers.kube.replicas", "KubernetesRouter"),
    "gateway-api": ("analyzer.routers.kube.gateway_api", "GatewayApiRouter"),
    "smi": ("analyzer.routers.kube.smi", "SmiRouter"),
}


def build_router(
    policy: Policy,
    *,
    api_client: Any | None = None,
    dry_run: bool = False,
    current_object: dict[str, Any] | Iterable[dict[str, Any]] | None = None,
    kubeconfig: str | None = None,
    conflict_retries: int | None = None,
) -> Router:
    """The router for `policy.spec.router.provider`.

    api_client: a `kubernetes.client.ApiClient` (tests point one at the real test API server);
      None loads --kubeconfig / in-cluster / ~/.kube/config lazily, on the first API call.
    dry_run: read, compute and record in `last_applied`, write nothing.
    current_object: the current object(s) (a dict or a list of dicts, e.g. from `--current
      FILE`): read from these instead of the API; implies dry_run (fully offline).
    """
    provider = policy.spec.router.provider
    if provider == "dry-run":
        from analyzer.routers.dry_run import DryRunRouter

        return DryRunRouter(policy)
    if provider == "nginx":
        from analyzer.routers.nginx_file import NginxLocalRouter

        return NginxLocalRouter(policy, dry_run=dry_run or current_object is not None)
    if provider not in KUBE_ROUTERS:
        raise RouterError(f"unknown router provider {provider!r}")
    current: list[dict[str, Any]] | None = None
    if current_object is not None:
        current = [current_object] if isinstance(current_object, dict) else list(current_object)
    extra = {} if conflict_retries is None else {"conflict_retries": conflict_retries}
    objects = KubeObjects(api_client, dry_run=dry_run, current=current, kubeconfig=kubeconfig,
                          **extra)
    module_name, cls_name = KUBE_ROUTERS[provider]
    cls = getattr(importlib.import_module(module_name), cls_name)
    router: Router = cls(policy, objects)
    return router
