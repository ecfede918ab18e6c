"""SMI router: TrafficSplit `spec.backends[].weight` (split.smi-spec.io v1alpha1 to v1alpha4).

Owns the backends for stableService and canaryService: weights 100-w and w, written as integers
(valid in every version; v1alpha1's weights are Kubernetes quantities and take them too). The
canary backend is appended when absent. Read back, weights are relative (v1alpha1 `1` and
`500m` is a third to the second) and quantities are parsed (`500m`, `1`, `10k`).
`spec.service` must be the root service; another backend carrying weight makes the router
refuse. A TrafficSplit with `spec.matches` (v1alpha3+) splits only the requests its
HTTPRouteGroups match, so shifting it is not a canary of the service: the router refuses it.
SMI TrafficSplit has no header match or mirroring here.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from analyzer.policy import Policy
from analyzer.policy import SmiRouter as SmiConfig
from analyzer.routers.arguments import KEEP
from analyzer.routers.base import RouterError, TrafficSplit
from analyzer.routers.kube.objects import KubeObjects, ObjectRef, SingleObjectRouter
from analyzer.routers.kube.routing import as_dict, as_list, percent_of

API_VERSION = "split.smi-spec.io/v1alpha4"
VERSIONS = ("v1alpha4", "v1alpha3", "v1alpha2", "v1alpha1")
PERMISSIONS = (("split.smi-spec.io", "trafficsplits", ("get", "patch")),)

_QUANTITY = re.compile(
    r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SUFFIX = {None: Decimal(1), "m": Decimal("0.001"), "k": Decimal(10) ** 3,
           "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12,
           "P": Decimal(10) ** 15, "E": Decimal(10) ** 18, "Ki": Decimal(2) ** 10,
           "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
           "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60}


def quantity(value: Any) -> Decimal:
    """A backend weight: a number, or a Kubernetes quantity string (`500m`, `1`, `2k`)."""
    if value is None:
        return Decimal(0)
    if isinstance(value, bool):
        raise ValueError(f"weight {value!r} is not a number")
    if isinstance(value, int | float):
        return Decimal(str(value))
    found = _QUANTITY.match(str(value).strip())
    if not found:
        raise ValueError(f"weight {value!r} is not a number or Kubernetes quantity")
    try:
        return Decimal(found.group(1)) * _SUFFIX[found.group(2)]
    except InvalidOperation:
        raise ValueError(f"weight {value!r} is not a number") from None


class SmiRouter(SingleObjectRouter):
    provider = "smi"

    def __init__(self, policy: Policy, objects: KubeObjects) -> None:
        super().__init__(objects)
        cfg = policy.spec.router
        assert isinstance(cfg, SmiConfig)
        self.cfg = cfg
        self.root = cfg.rootService or policy.spec.target.service
        self.ref = ObjectRef(API_VERSION, "TrafficSplit", "trafficsplits",
                             policy.spec.target.namespace, cfg.trafficSplit, versions=VERSIONS)

    def _weight_of(self, b: dict[str, Any], where: ObjectRef) -> Decimal:
        try:
            return quantity(b.get("weight"))
        except ValueError as e:
            raise RouterError(f"{where}: backend {b.get('service')}: {e}") from None

    def _backends(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        where = self.ref.as_read(obj)
        spec = as_dict(obj.get("spec"))
        matches = as_list(spec.get("matches"))
        if matches:
            groups = ", ".join(f"{as_dict(m).get('kind')} {as_dict(m).get('name')}"
                               for m in matches)
            raise RouterError(
                f"{where} splits only the requests matching {groups} (spec.matches); everyone "
                f"else goes to {spec.get('service')!r} unsplit, so its weights are not the "
                "canary's share of the service. Point the policy at a TrafficSplit without "
                "matches")
        if spec.get("service") != self.root:
            raise RouterError(f"{where}: spec.service is {spec.get('service')!r}, expected the "
                              f"root service {self.root!r}")
        backends = spec.get("backends")
        if not isinstance(backends, list) or not all(isinstance(b, dict) for b in backends) or (
                not any(b.get("service") == self.cfg.stableService for b in backends)):
            raise RouterError(f"{where}: no backend for stableService "
                              f"{self.cfg.stableService!r}")
        for b in backends:
            if b.get("service") not in (self.cfg.stableService, self.cfg.canaryService) and (
                    self._weight_of(b, where)):
                raise RouterError(f"{where}: backend {b.get('service')} carries weight "
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
        where = self.ref.as_read(obj)
        backends = self._backends(obj)
        total = sum(self._weight_of(b, where) for b in backends)
        canary = sum(self._weight_of(b, where) for b in backends
                     if b.get("service") == self.cfg.canaryService)
        return TrafficSplit(canary_weight=percent_of(float(canary), float(total)))
