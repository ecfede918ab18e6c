"""Gateway API router: HTTPRoute `spec.rules[].backendRefs[].weight`.

Owns, in the managed rules (the policy's `rules` indexes, else every rule with a backendRef to
stableService), the backendRefs to stableService and canaryService: weights 100-w and w (a
canary ref is added, copied from the stable one, when absent). A rule that also sends traffic
to another backend makes the router refuse. A/B adds one rule named `canary-analyzer-ab` whose
matches are the managed rules' matches plus the header (Gateway API gives precedence to the
match with more header conditions), sending everything to the canary. Gateway API HTTPRoute has
no cookie match and this router does not mirror.
"""

from __future__ import annotations

import copy
from typing import Any

from analyzer.policy import GatewayApiRouter as GatewayConfig
from analyzer.policy import Policy
from analyzer.routers.base import RouterError, TrafficSplit
from analyzer.routers.kube.objects import KEEP, KubeObjects, ObjectRef, SingleObjectRouter

API_VERSION = "gateway.networking.k8s.io/v1"
AB_RULE = "canary-analyzer-ab"
PERMISSIONS = (("gateway.networking.k8s.io", "httproutes", ("get", "patch")),)


def _is_service(ref: dict[str, Any], name: str) -> bool:
    return (ref.get("name") == name and ref.get("kind", "Service") == "Service"
            and ref.get("group", "") == "")


class GatewayApiRouter(SingleObjectRouter):
    provider = "gateway-api"

    def __init__(self, policy: Policy, objects: KubeObjects) -> None:
        super().__init__(objects)
        cfg = policy.spec.router
        assert isinstance(cfg, GatewayConfig)
        self.cfg = cfg
        self.ref = ObjectRef(API_VERSION, "HTTPRoute", "httproutes", policy.spec.target.namespace,
                             cfg.httpRoute)

    def _managed(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        rules = (obj.get("spec") or {}).get("rules")
        if not isinstance(rules, list) or not rules:
            raise RouterError(f"{self.ref} has no spec.rules")
        if self.cfg.rules is not None:
            bad = [i for i in self.cfg.rules if not 0 <= i < len(rules)]
            if bad:
                raise RouterError(f"{self.ref}: rule index(es) {bad} not found (it has "
                                  f"{len(rules)} rules)")
            managed = [rules[i] for i in self.cfg.rules]
        else:
            managed = [r for r in rules if r.get("name") != AB_RULE and any(
                _is_service(b, self.cfg.stableService) for b in r.get("backendRefs") or [])]
            if not managed:
                raise RouterError(f"{self.ref}: no rule sends traffic to stableService "
                                  f"{self.cfg.stableService!r}")
        for r in managed:
            refs = r.get("backendRefs") or []
            others = [b.get("name") for b in refs if not (
                _is_service(b, self.cfg.stableService) or _is_service(b, self.cfg.canaryService))]
            if others or not any(_is_service(b, self.cfg.stableService) for b in refs):
                raise RouterError(
                    f"{self.ref}: rule {r.get('name') or rules.index(r)} must send traffic to "
                    f"{self.cfg.stableService!r} (and only to stable/canary); its backends are "
                    f"{[b.get('name') for b in refs]}"
                )
        return managed

    def _canary_ref(self, stable: dict[str, Any]) -> dict[str, Any]:
        ref = copy.deepcopy(stable)
        ref["name"] = self.cfg.canaryService
        if self.cfg.port is not None:
            ref["port"] = self.cfg.port
        return ref

    def _apply(self, obj: dict[str, Any], weight: Any, match: Any, mirror: Any) -> None:
        if mirror not in (KEEP, None):
            raise self._unsupported("mirror traffic")
        if match not in (KEEP, None) and "cookie" in match:
            raise self._unsupported("route by cookie (HTTPRoute has no cookie match)")
        managed = self._managed(obj)
        if weight is not KEEP:
            for r in managed:
                refs = r["backendRefs"]
                stable = next(b for b in refs if _is_service(b, self.cfg.stableService))
                canary = next((b for b in refs if _is_service(b, self.cfg.canaryService)), None)
                if canary is None:
                    canary = self._canary_ref(stable)
                stable["weight"] = 100 - weight
                canary["weight"] = weight
                r["backendRefs"] = [stable, canary]
        if match is not KEEP:
            rules = obj["spec"]["rules"]
            rules[:] = [r for r in rules if r.get("name") != AB_RULE]
            if match is not None:
                header = {"type": "Exact", "name": match["header"], "value": match["value"]}
                matches = []
                for r in managed:
                    for m in r.get("matches") or [{}]:
                        m = copy.deepcopy(m)
                        m["headers"] = [*(m.get("headers") or []), header]
                        if m not in matches:
                            matches.append(m)
                stable = next(b for b in managed[0]["backendRefs"]
                              if _is_service(b, self.cfg.stableService))
                canary = self._canary_ref(stable)
                canary.pop("weight", None)
                rules.insert(0, {"name": AB_RULE, "matches": matches, "backendRefs": [canary]})

    def _split(self, obj: dict[str, Any]) -> TrafficSplit:
        first = self._managed(obj)[0]
        refs = first.get("backendRefs") or []
        total = sum(int(b.get("weight", 1)) for b in refs)  # Gateway API: weight defaults to 1
        canary = sum(int(b.get("weight", 1)) for b in refs
                     if _is_service(b, self.cfg.canaryService))
        weight = round(100 * canary / total) if total else 0
        header = None
        for r in obj["spec"]["rules"]:
            if r.get("name") == AB_RULE:
                hs = ((r.get("matches") or [{}])[0].get("headers") or [])
                if hs:
                    header = {"header": hs[-1]["name"], "value": hs[-1]["value"]}
        return TrafficSplit(canary_weight=weight, header_route=header)
