"""SMI router: TrafficSplit `spec.backends[].weight` (split.smi-spec.io/v1alpha4).

Owns the backends for stableService and canaryService: weights 100-w and w (the canary backend
is appended when absent). `spec.service` must be the root service; another backend carrying
weight makes the router refuse. SMI TrafficSplit has no header match or mirroring.
"""

from __future__ import annotations

from typing import Any

from analyzer.policy import Policy
from analyzer.policy import SmiRouter as SmiConfig
from analyzer.routers.base import RouterError, TrafficSplit
from analyzer.routers.kube.objects import KEEP, KubeObjects, ObjectRef, SingleObjectRouter

API_VERSION = "split.smi-spec.io/v1alpha4"
PERMISSIONS = (("split.smi-spec.io", "trafficsplits", ("get", "patch")),)


class SmiRouter(SingleObjectRouter):
    provider = "smi"

    def __init__(self, policy: Policy, objects: KubeObjects) -> None:
        super().__init__(objects)
        cfg = policy.spec.router
        assert isinstance(cfg, SmiConfig)
        self.cfg = cfg
        self.root = cfg.rootService or policy.spec.target.service
        self.ref = ObjectRef(API_VERSION, "TrafficSplit", "trafficsplits",
                             policy.spec.target.namespace, cfg.trafficSplit)

    def _backends(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        spec = obj.get("spec") or {}
        if spec.get("service") != self.root:
            raise RouterError(f"{self.ref}: spec.service is {spec.get('service')!r}, expected the "
                              f"root service {self.root!r}")
        backends = spec.get("backends")
        if not isinstance(backends, list) or not any(
                b.get("service") == self.cfg.stableService for b in backends):
            raise RouterError(f"{self.ref}: no backend for stableService "
                              f"{self.cfg.stableService!r}")
        for b in backends:
            if b.get("service") not in (self.cfg.stableService, self.cfg.canaryService) and (
                    b.get("weight") or 0):
                raise RouterError(f"{self.ref}: backend {b.get('service')} carries weight "
                                  f"{b['weight']} the policy does not own; set it to 0 first")
        return backends

    def _apply(self, obj: dict[str, Any], weight: Any, match: Any, mirror: Any) -> None:
        if match not in (KEEP, None):
            raise self._unsupported("route by header or cookie")
        if mirror not in (KEEP, None):
            raise self._unsupported("mirror traffic")
        backends = self._backends(obj)
        if weight is KEEP:
            return
        for b in backends:
            if b.get("service") == self.cfg.stableService:
                b["weight"] = 100 - weight
        canary = [b for b in backends if b.get("service") == self.cfg.canaryService]
        if canary:
            canary[0]["weight"] = weight
        else:
            backends.append({"service": self.cfg.canaryService, "weight": weight})

    def _split(self, obj: dict[str, Any]) -> TrafficSplit:
        backends = self._backends(obj)
        total = sum(float(b.get("weight") or 0) for b in backends)
        canary = sum(float(b.get("weight") or 0) for b in backends
                     if b.get("service") == self.cfg.canaryService)
        return TrafficSplit(canary_weight=round(100 * canary / total) if total else 0)
