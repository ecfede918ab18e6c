"""Istio router: weights on a VirtualService's routes, A/B routes, mirroring, sticky sessions.

Which routes: the policy's `routes` (http route names, or `http[N]`, `tls[N]`, `tcp[N]`
counting the VirtualService's own routes); without it, the one route (http, tls or tcp) that
sends traffic to the stable destination. With several such routes the router refuses and lists
them: a route the policy does not name is never touched (a user's test route, the TLS route of
the same hosts).

What it writes, in the managed routes only:
- `route[]`: the stable and canary entries' weights (a canary entry is added after the stable
  one, copied from it); other entries keep their weight when the policy lists them in
  `keepDestinations` (stable gets 100 - canary - theirs), otherwise the router refuses;
- http routes: `mirror` + `mirrorPercentage` to the canary (the deprecated `mirrorPercent` is
  removed); a mirror to anything else is the user's and stays;
- sticky sessions: `headers.response.add.set-cookie` on the canary entry;
- the A/B and sticky routes of istio_routes.py, each directly before its route.
Everything else (other routes, match, rewrite, retries, timeout, corsPolicy, fault, hosts,
gateways) stays as it was; DestinationRules are only read.

Destinations: subset mode compares host AND subset (the host is `host`, else the
DestinationRule's, else the target service; short and full names compare equal); two-host mode
compares hosts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from analyzer.policy import IstioRouter as IstioConfig
from analyzer.policy import Policy
from analyzer.policy.routers import ROUTE_INDEX
from analyzer.routers.arguments import KEEP
from analyzer.routers.base import RouterError, TrafficSplit
from analyzer.routers.kube import istio_routes as ours
from analyzer.routers.kube.objects import KubeObjects, ObjectRef, SingleObjectRouter
from analyzer.routers.kube.routing import (
    agreed_weight,
    as_dict,
    as_list,
    expire_cookie,
    give_cookie,
    is_our_cookie,
    percent_of,
    refuse_ambiguous,
    sticky_value,
)

API_VERSION = "networking.istio.io/v1"
VERSIONS = ("v1", "v1beta1", "v1alpha3")
KINDS = ("http", "tls", "tcp")
PERMISSIONS = (
    ("networking.istio.io", "virtualservices", ("get", "patch")),
    ("networking.istio.io", "destinationrules", ("get",)),
)


@dataclass(frozen=True)
class Route:
    """One of the VirtualService's own routes: `http[1]` etc. (index among the user's routes)."""

    kind: str
    index: int
    body: dict[str, Any]

    @property
    def label(self) -> str:
        name = self.body.get("name")
        return str(name) if self.kind == "http" and isinstance(name, str) and name else (
            f"{self.kind}{self.index}")

    def describe(self) -> str:
        name = self.body.get("name")
        text = f"{self.kind}[{self.index}]" + (f" name={name}" if name else "")
        matches = as_list(self.body.get("match"))
        text += f" ({len(matches)} match{'es' if len(matches) != 1 else ''}" if matches else (
            " (no match")
        extras = [k for k in ("fault", "rewrite", "redirect", "delegate") if k in self.body]
        text += (", " + ", ".join(extras) if extras else "") + ")"
        dests = [as_dict(as_dict(e).get("destination")) for e in as_list(self.body.get("route"))]
        return text + " -> " + ", ".join(
            f"{d.get('host')}" + (f"/{d['subset']}" if d.get("subset") else "") for d in dests)


class IstioRouter(SingleObjectRouter):
    provider = "istio"

    def __init__(self, policy: Policy, objects: KubeObjects) -> None:
        super().__init__(objects)
        cfg = policy.spec.router
        assert isinstance(cfg, IstioConfig)
        self.cfg = cfg
        self.target = policy.spec.target
        self.ns = policy.spec.target.namespace
        self.ref = ObjectRef(API_VERSION, "VirtualService", "virtualservices", self.ns,
                             cfg.virtualService, versions=VERSIONS)
        self.dr_ref = (
            ObjectRef(API_VERSION, "DestinationRule", "destinationrules", self.ns,
                      cfg.destinationRule, versions=VERSIONS)
            if cfg.destinationRule else None
        )
        self.subset_mode = cfg.stableSubset is not None
        self.host = cfg.host or self.target.service  # subset mode; the DestinationRule's wins
        self.cookie = sticky_value(self.ns, policy.name, self.target.canary)

    # ------------------------------------------------------------------ destinations

    def _same_host(self, a: Any, b: str | None) -> bool:
        return isinstance(a, str) and b is not None and (
            ours.fqdn(a, self.ns) == ours.fqdn(b, self.ns))

    def _role(self, dest: Any) -> str | None:
        """"stable", "canary", "keep" (a keepDestinations entry) or None."""
        if not isinstance(dest, dict):
            return None
        host = dest.get("host")
        if self.subset_mode:
            if self._same_host(host, self.host):
                if dest.get("subset") == self.cfg.stableSubset:
                    return "stable"
                if dest.get("subset") == self.cfg.canarySubset:
                    return "canary"
        elif self._same_host(host, self.cfg.stableHost):
            return "stable"
        elif self._same_host(host, self.cfg.canaryHost):
            return "canary"
        for keep in self.cfg.keepDestinations:
            if self._same_host(host, keep.host) and keep.subset in (None, dest.get("subset")):
                return "keep"
        return None

    def _dest(self, which: str, like: dict[str, Any]) -> dict[str, Any]:
        """The destination of stable/canary, keeping `like`'s host (subset mode) and port."""
        if self.subset_mode:
            dest = {k: copy.deepcopy(v) for k, v in like.items() if k in ("host", "port")}
            dest["subset"] = self.cfg.stableSubset if which == "stable" else self.cfg.canarySubset
            return dest
        dest = {k: copy.deepcopy(v) for k, v in like.items() if k == "port"}
        dest["host"] = self.cfg.stableHost if which == "stable" else self.cfg.canaryHost
        return dest

    def _describe(self, which: str) -> str:
        if self.subset_mode:
            subset = self.cfg.stableSubset if which == "stable" else self.cfg.canarySubset
            return f"subset {subset!r} of host {self.host!r}"
        return f"host {self.cfg.stableHost if which == 'stable' else self.cfg.canaryHost!r}"

    def _entry(self, route: dict[str, Any], role: str) -> dict[str, Any] | None:
        return next((e for e in as_list(route.get("route"))
                     if self._role(as_dict(e).get("destination")) == role), None)

    # ------------------------------------------------------------------ which routes

    def _read_destination_rule(self) -> tuple[ObjectRef, set[Any]] | None:
        """Subset mode: take the host from the DestinationRule (checked against `host`);
        (where, subset names)."""
        if self.dr_ref is None:
            return None
        dr = self.objects.read(self.dr_ref)
        assert dr is not None
        where = self.dr_ref.as_read(dr)
        spec = as_dict(dr.get("spec"))
        dr_host = spec.get("host")
        if isinstance(dr_host, str) and dr_host:
            if self.cfg.host is not None and not self._same_host(dr_host, self.cfg.host):
                raise RouterError(f"{where}: its host is {dr_host!r} but spec.router.host is "
                                  f"{self.cfg.host!r}; subsets belong to the DestinationRule's "
                                  "host: fix one of them")
            self.host = dr_host
        names = {as_dict(s).get("name") for s in as_list(spec.get("subsets"))
                 if isinstance(as_dict(s).get("name"), str)}
        return where, names

    def _prepare(self) -> None:
        """Before any write: both subsets must exist in the DestinationRule."""
        found = self._read_destination_rule()
        if found is None:
            return
        where, names = found
        missing = [s for s in (self.cfg.stableSubset, self.cfg.canarySubset) if s not in names]
        if missing:
            raise RouterError(
                f"{where}: subset(s) {', '.join(map(str, missing))} missing (it defines "
                f"{', '.join(sorted(names)) or 'none'}); add them first"
            )

    def _routes(self, obj: dict[str, Any], where: ObjectRef) -> list[Route]:
        spec = as_dict(obj.get("spec"))
        out = []
        for kind in KINDS:
            routes = spec.get(kind)
            if routes is not None and not isinstance(routes, list):
                raise RouterError(f"{where}: spec.{kind} is not a list")
            user = [r for r in as_list(routes) if isinstance(r, dict) and not ours.is_ours(r)]
            out += [Route(kind, i, r) for i, r in enumerate(user)]
        return out

    def _managed(self, obj: dict[str, Any]) -> list[Route]:
        """The routes this policy manages (refuses when the object is not shaped for it)."""
        where = self.ref.as_read(obj)
        routes = self._routes(obj, where)
        if not routes:
            raise RouterError(f"{where} has no http, tls or tcp routes; add the route to manage")
        if self.cfg.routes:
            managed, missing = [], []
            for want in self.cfg.routes:
                found = ROUTE_INDEX.match(want)
                hits = ([r for r in routes if (r.kind, r.index) == (found[1], int(found[2]))]
                        if found else
                        [r for r in routes if r.kind == "http" and r.body.get("name") == want])
                if len(hits) > 1:
                    raise RouterError(f"{where}: {len(hits)} http routes are named {want!r}; "
                                      "name them apart or use http[N]")
                (managed if hits else missing).extend(hits or [want])
            if missing:
                have = "; ".join(r.describe() for r in routes)
                raise RouterError(f"{where}: route(s) {', '.join(missing)} not found (it has "
                                  f"{have})")
        else:
            managed = [r for r in routes
                       if self._entry(r.body, "stable") is not None]
            if not managed:
                raise RouterError(
                    f"{where}: no route sends traffic to {self._describe('stable')}; name the "
                    "routes in spec.router.routes or fix the destination")
            if len(managed) > 1:
                raise refuse_ambiguous(
                    where, f"routes send traffic to {self._describe('stable')}",
                    [r.describe() for r in managed], "routes",
                    "http route names, or http[N], tls[N], tcp[N]")
        for r in managed:
            dests = [as_dict(e).get("destination") for e in as_list(r.body.get("route"))]
            roles = [self._role(d) for d in dests]
            if None in roles or "stable" not in roles:
                raise RouterError(
                    f"{where}: route {r.describe()} must send traffic to "
                    f"{self._describe('stable')} (and only to stable/canary, or to a "
                    f"destination listed in spec.router.keepDestinations); it has destinations "
                    f"{dests}")
            for role in ("stable", "canary"):
                if roles.count(role) > 1:
                    raise RouterError(f"{where}: route {r.describe()} has {roles.count(role)} "
                                      f"{role} destinations; merge them into one")
        return managed

    # ------------------------------------------------------------------ the change

    def _set_weight(self, r: Route, weight: int, where: ObjectRef) -> None:
        entries = r.body["route"]
        stable = self._entry(r.body, "stable")
        assert stable is not None
        canary = self._entry(r.body, "canary")
        kept = sum(int(as_dict(e).get("weight") or 0) for e in entries
                   if self._role(as_dict(e).get("destination")) == "keep")
        if weight + kept > 100:
            raise RouterError(f"{where}: route {r.describe()}: canary {weight}% plus the kept "
                              f"destinations' {kept}% exceed 100")
        if canary is None:
            canary = copy.deepcopy(stable)
            canary["destination"] = self._dest("canary", stable["destination"])
            entries.insert(entries.index(stable) + 1, canary)
        stable["weight"] = 100 - weight - kept
        canary["weight"] = weight

    def _set_mirror(self, r: Route, mirror: float | None, where: ObjectRef) -> None:
        body = r.body
        current = body.get("mirror")
        if current is not None and self._role(current) != "canary":
            if mirror is None:
                return  # the user's own mirror
            raise RouterError(f"{where}: route {r.describe()} already mirrors to {current}; "
                              "remove that mirror or pick another route")
        for key in ("mirror", "mirrorPercentage", "mirrorPercent"):
            body.pop(key, None)
        if mirror is not None:
            stable = self._entry(body, "stable")
            assert stable is not None
            body["mirror"] = self._dest("canary", stable["destination"])
            body["mirrorPercentage"] = {"value": mirror}

    def _set_sticky_cookie(self, r: Route, give: str | None, where: ObjectRef) -> None:
        """Put (or, with None, take away) our Set-Cookie on the canary entry of an http route."""
        canary = self._entry(r.body, "canary")
        if canary is None:
            return
        headers = canary.get("headers")
        add = as_dict(as_dict(as_dict(headers).get("response")).get("add"))
        current = add.get("set-cookie")
        if current is not None and not is_our_cookie(current, self._sticky_name()):
            if give is None:
                return  # the user's cookie
            raise RouterError(f"{where}: route {r.describe()}: the canary destination already "
                              f"sets a cookie ({current!r}); sticky sessions would replace it")
        if give is None:
            if current is None:
                return
            add.pop("set-cookie")
            response = headers["response"]
            if not add:
                response.pop("add")
            if not response:
                headers.pop("response")
            if not headers:
                canary.pop("headers")
            return
        headers = canary.setdefault("headers", {})
        headers.setdefault("response", {}).setdefault("add", {})["set-cookie"] = give

    def _sticky_name(self) -> str:
        return self.cfg.stickySessions.cookieName if self.cfg.stickySessions else ""

    def _apply(self, obj: dict[str, Any], weight: Any, match: Any, mirror: Any) -> None:
        where = self.ref.as_read(obj)
        managed = self._managed(obj)
        http_managed = [r for r in managed if r.kind == "http"]
        if not http_managed and (match not in (KEEP, None) or mirror not in (KEEP, None)):
            raise RouterError(f"{where}: A/B routes and mirroring need an http route; the "
                              "managed routes are " + ", ".join(r.describe() for r in managed))
        http = as_list(as_dict(obj.get("spec")).get("http"))
        ab = ours.read_ab(http) if match is KEEP else match
        if weight is KEEP:
            weight = self._weight(managed, where)
        else:
            for r in managed:
                self._set_weight(r, weight, where)
        if mirror is not KEEP:
            for r in http_managed:
                self._set_mirror(r, mirror, where)
        sticky = self._sticky_plan(http, weight)
        if self.cfg.stickySessions is not None:
            max_age = int(self.cfg.stickySessions.maxAge.total_seconds())
            for r in http_managed:
                give = None
                if sticky is not None and sticky[1]:
                    give = give_cookie(self._sticky_name(), sticky[0], max_age)
                self._set_sticky_cookie(r, give, where)
        self._place_our_routes(obj, http_managed, ab, sticky)

    def _sticky_plan(self, http: list[Any], weight: int) -> tuple[str, bool] | None:
        """(cookie value, active) of the sticky route to have, None for none: active at a
        weight above 0; at 0 an active one turns into an expiring one, which then stays."""
        if self.cfg.stickySessions is None:
            return None
        if weight > 0:
            return self.cookie, True
        current = ours.read_sticky(http)
        return (current[0], False) if current else None

    def _place_our_routes(self, obj: dict[str, Any], managed: list[Route], ab: Any,
                          sticky: tuple[str, bool] | None) -> None:
        spec = obj["spec"]
        http = as_list(spec.get("http"))
        served = {id(r.body): r for r in managed}
        out: list[Any] = []
        for body in http:
            if ours.is_ours(body):
                continue
            r = served.get(id(body))
            if r is not None:
                stable = self._entry(body, "stable")
                assert stable is not None
                canary = self._canary_entry(body, stable)
                if ab is not None:
                    out.append(ours.ab_route(body, r.label, ab, canary))
                if sticky is not None:
                    value, active = sticky
                    cookie = self._sticky_name()
                    entry = canary if active else self._expiring_entry(stable, cookie, value)
                    out.append(ours.sticky_route(body, r.label, cookie, value, entry))
            out.append(body)
        if out or "http" in spec:
            spec["http"] = out

    def _canary_entry(self, route: dict[str, Any], stable: dict[str, Any]) -> dict[str, Any]:
        """The canary's route entry without our Set-Cookie (or one copied from stable's)."""
        entry = copy.deepcopy(self._entry(route, "canary") or stable)
        entry["destination"] = self._dest("canary", stable["destination"])
        add = as_dict(as_dict(as_dict(entry.get("headers")).get("response")).get("add"))
        if self.cfg.stickySessions and is_our_cookie(add.get("set-cookie"), self._sticky_name()):
            add.pop("set-cookie")
            if not add:
                entry["headers"]["response"].pop("add")
                if not entry["headers"]["response"]:
                    entry["headers"].pop("response")
                if not entry["headers"]:
                    entry.pop("headers")
        return entry

    def _expiring_entry(self, stable: dict[str, Any], cookie: str, value: str) -> dict[str, Any]:
        entry = {"destination": self._dest("stable", stable["destination"])}
        entry["headers"] = {"response": {"add": {"set-cookie": expire_cookie(cookie, value)}}}
        return entry

    # ------------------------------------------------------------------ reading

    def _route_weight(self, body: dict[str, Any]) -> int:
        entries = [as_dict(e) for e in as_list(body.get("route"))]
        total = sum(int(e.get("weight") or 0) for e in entries)
        if total == 0:  # Istio: a lone destination without weight takes everything
            lone = len(entries) == 1 and self._role(entries[0].get("destination")) == "canary"
            return 100 if lone else 0
        canary = sum(int(e.get("weight") or 0) for e in entries
                     if self._role(e.get("destination")) == "canary")
        return percent_of(canary, total)

    def _weight(self, managed: list[Route], where: ObjectRef) -> int:
        return agreed_weight(where, "routes",
                             {r.describe(): self._route_weight(r.body) for r in managed})

    def _split(self, obj: dict[str, Any]) -> TrafficSplit:
        where = self.ref.as_read(obj)
        self._read_destination_rule()
        managed = self._managed(obj)
        weight = self._weight(managed, where)
        http = as_list(as_dict(obj.get("spec")).get("http"))
        mirror = None
        first_http = next((r for r in managed if r.kind == "http"), None)
        if first_http is not None and self._role(first_http.body.get("mirror")) == "canary":
            pct = as_dict(first_http.body.get("mirrorPercentage")).get("value")
            if pct is None:
                pct = first_http.body.get("mirrorPercent", 100)
            mirror = float(pct)
        sticky = None
        found = ours.read_sticky(http)
        if found is not None and self._role(found[1]) == "canary":
            sticky = f"cookie {self._sticky_name() or '?'}={found[0]}"
        return TrafficSplit(canary_weight=weight, header_route=ours.read_ab(http),
                            mirror_percent=mirror, sticky=sticky)
