"""Istio router: weights on a VirtualService's http routes, an A/B header route, mirroring.

Owns, in VirtualService `spec.http[]`:
- the managed routes (the policy's `routes` by name, else every route sending traffic to the
  stable destination): their `route[]` becomes exactly [stable (100-w), canary (w)], each entry
  keeping its other fields (headers, port); `mirror` + `mirrorPercentage` when mirroring;
- one route named `canary-analyzer-ab` (A/B), inserted first so it wins, matching the header
  (or the cookie `NAME=always`) and sending everything to the canary.
Every other route and field is left exactly as it was. Destinations are DestinationRule subsets
of one host (subset mode: the subsets must exist in the DestinationRule) or two hosts.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from analyzer.policy import IstioRouter as IstioConfig
from analyzer.policy import Policy
from analyzer.routers.base import RouterError, TrafficSplit
from analyzer.routers.kube.objects import KEEP, KubeObjects, ObjectRef, SingleObjectRouter

API_VERSION = "networking.istio.io/v1"
AB_ROUTE = "canary-analyzer-ab"
PERMISSIONS = (
    ("networking.istio.io", "virtualservices", ("get", "patch")),
    ("networking.istio.io", "destinationrules", ("get",)),
)


class IstioRouter(SingleObjectRouter):
    provider = "istio"

    def __init__(self, policy: Policy, objects: KubeObjects) -> None:
        super().__init__(objects)
        cfg = policy.spec.router
        assert isinstance(cfg, IstioConfig)
        self.cfg = cfg
        self.target = policy.spec.target
        ns = policy.spec.target.namespace
        self.ref = ObjectRef(API_VERSION, "VirtualService", "virtualservices", ns,
                             cfg.virtualService)
        self.dr_ref = (
            ObjectRef(API_VERSION, "DestinationRule", "destinationrules", ns, cfg.destinationRule)
            if cfg.destinationRule
            else None
        )
        self.subset_mode = cfg.stableSubset is not None

    # ------------------------------------------------------------------ destinations

    def _is(self, dest: dict[str, Any] | None, which: str) -> bool:
        if not isinstance(dest, dict):
            return False
        if self.subset_mode:
            subset = self.cfg.stableSubset if which == "stable" else self.cfg.canarySubset
            if dest.get("subset") != subset:
                return False
            return self.cfg.host is None or dest.get("host") == self.cfg.host
        host = self.cfg.stableHost if which == "stable" else self.cfg.canaryHost
        return dest.get("host") == host

    def _dest(self, which: str, like: dict[str, Any] | None) -> dict[str, Any]:
        """The destination for stable/canary, keeping `like`'s host and port in subset mode."""
        if self.subset_mode:
            dest = {k: v for k, v in (like or {}).items() if k in ("host", "port")}
            dest.setdefault("host", self.cfg.host or self.target.service)
            dest["subset"] = self.cfg.stableSubset if which == "stable" else self.cfg.canarySubset
            return dest
        dest = {k: v for k, v in (like or {}).items() if k == "port"}
        dest["host"] = self.cfg.stableHost if which == "stable" else self.cfg.canaryHost
        return dest

    def _managed(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        """The http routes this policy owns (refuses when the object is not shaped for it)."""
        http = (obj.get("spec") or {}).get("http")
        if not isinstance(http, list) or not http:
            raise RouterError(f"{self.ref} has no spec.http routes; add the route to manage")
        if self.cfg.routes:
            by_name = {r.get("name"): r for r in http if isinstance(r, dict)}
            missing = [n for n in self.cfg.routes if n not in by_name]
            if missing:
                have = ", ".join(str(n) for n in by_name if n) or "no named routes"
                raise RouterError(
                    f"{self.ref}: http route(s) {', '.join(missing)} not found (it has {have})"
                )
            routes = [by_name[n] for n in self.cfg.routes]
        else:
            routes = [
                r for r in http
                if isinstance(r, dict) and r.get("name") != AB_ROUTE
                and any(self._is(d.get("destination"), "stable") for d in r.get("route") or [])
            ]
            if not routes:
                want = self._describe("stable")
                raise RouterError(
                    f"{self.ref}: no http route sends traffic to {want}; name the routes "
                    "in spec.router.routes or fix the destination"
                )
        for r in routes:
            dests = r.get("route") or []
            foreign = [d.get("destination") for d in dests
                       if not (self._is(d.get("destination"), "stable")
                               or self._is(d.get("destination"), "canary"))]
            if foreign or not any(self._is(d.get("destination"), "stable") for d in dests):
                raise RouterError(
                    f"{self.ref}: http route {r.get('name') or '(unnamed)'} must send traffic "
                    f"to {self._describe('stable')} (and only to stable/canary); it has "
                    f"destinations {[d.get('destination') for d in dests]}"
                )
        return routes

    def _describe(self, which: str) -> str:
        if self.subset_mode:
            subset = self.cfg.stableSubset if which == "stable" else self.cfg.canarySubset
            return f"subset {subset!r}" + (f" of host {self.cfg.host!r}" if self.cfg.host else "")
        return f"host {self.cfg.stableHost if which == 'stable' else self.cfg.canaryHost!r}"

    def _prepare(self) -> None:
        if self.dr_ref is None:
            return
        dr = self.objects.read(self.dr_ref)
        assert dr is not None
        names = {s.get("name") for s in (dr.get("spec") or {}).get("subsets") or []
                 if isinstance(s, dict)}
        missing = [s for s in (self.cfg.stableSubset, self.cfg.canarySubset) if s not in names]
        if missing:
            raise RouterError(
                f"{self.dr_ref}: subset(s) {', '.join(map(str, missing))} missing (it defines "
                f"{', '.join(sorted(map(str, names - {None}))) or 'none'}); add them first"
            )

    # ------------------------------------------------------------------ the change

    def _apply(self, obj: dict[str, Any], weight: Any, match: Any, mirror: Any) -> None:
        routes = self._managed(obj)
        for r in routes:
            entries = r.get("route") or []
            stable = next(d for d in entries if self._is(d.get("destination"), "stable"))
            canary = next((d for d in entries if self._is(d.get("destination"), "canary")), None)
            if weight is not KEEP:
                if canary is None:
                    canary = copy.deepcopy(stable)
                    canary["destination"] = self._dest("canary", stable["destination"])
                stable["weight"] = 100 - weight
                canary["weight"] = weight
                # Stable first, then canary; no other destinations (checked in _managed).
                r["route"] = [stable, canary]
            if mirror is not KEEP:
                if mirror is None:
                    r.pop("mirror", None)
                    r.pop("mirrorPercentage", None)
                else:
                    r["mirror"] = self._dest("canary", stable["destination"])
                    r["mirrorPercentage"] = {"value": mirror}
        if match is not KEEP:
            http = obj["spec"]["http"]
            http[:] = [r for r in http if not (isinstance(r, dict) and r.get("name") == AB_ROUTE)]
            if match is not None:
                like = next(d for d in routes[0]["route"]
                            if self._is(d.get("destination"), "stable"))["destination"]
                http.insert(0, {
                    "name": AB_ROUTE,
                    "match": [{"headers": _header_match(match)}],
                    "route": [{"destination": self._dest("canary", like)}],
                })

    def _split(self, obj: dict[str, Any]) -> TrafficSplit:
        routes = self._managed(obj)
        first = routes[0]
        entries = first.get("route") or []
        total = sum(int(d.get("weight", 0) or 0) for d in entries)
        canary = sum(int(d.get("weight", 0) or 0) for d in entries
                     if self._is(d.get("destination"), "canary"))
        if total == 0:  # Istio: a lone destination without weight takes everything
            weight = 100 if all(self._is(d.get("destination"), "canary") for d in entries) else 0
        else:
            weight = round(100 * canary / total)
        header = None
        for r in obj["spec"]["http"]:
            if isinstance(r, dict) and r.get("name") == AB_ROUTE:
                header = _read_match(r)
        mirror = None
        if self._is(first.get("mirror"), "canary"):
            mirror = float((first.get("mirrorPercentage") or {}).get("value", 100.0))
        return TrafficSplit(canary_weight=weight, header_route=header, mirror_percent=mirror)


def _header_match(match: dict[str, str]) -> dict[str, Any]:
    if "cookie" in match:
        # nginx-ingress semantics: the cookie set to "always" selects the canary.
        name = re.escape(match["cookie"])
        return {"cookie": {"regex": f"^(.*?;\\s*)?{name}=always(;.*)?$"}}
    return {match["header"].lower(): {"exact": match["value"]}}


def _read_match(route: dict[str, Any]) -> dict[str, str] | None:
    for m in route.get("match") or []:
        for name, cond in (m.get("headers") or {}).items():
            if name == "cookie" and "regex" in cond:
                found = re.search(r"\)\?(.+)=always", cond["regex"])
                if found:
                    return {"cookie": found.group(1).replace("\\", "")}
            if "exact" in cond:
                return {"header": name, "value": cond["exact"]}
    return None
