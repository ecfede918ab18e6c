"""Gateway API router: HTTPRoute backend weights, A/B rules, RequestMirror, sticky sessions.

Which rules: the policy's `rules` (indexes among the HTTPRoute's own rules); without it, the one
rule with a backendRef to stableService. With several such rules the router refuses and lists
them: a rule the policy does not name is never touched.

What it writes, in the managed rules only:
- the `weight` of the stableService and canaryService backendRefs (100-w, w; a canary
  backendRef is added after the stable one, copied from it, with `port` when the policy gives
  one); a rule that also sends traffic to another backend makes the router refuse;
- a `RequestMirror` filter to canaryService (with `percent`, or `fraction` for a non-integer
  percent; none for 100): only our filter (the one to canaryService) is ever replaced or
  removed, the user's mirrors stay; a server whose schema has no mirror percent (Gateway API
  older than v1.3 standard / v1.2 experimental) prunes it, which the router detects with a
  server-side dry run and refuses instead of mirroring 100%;
- sticky sessions: a Set-Cookie in the canary backendRef's ResponseHeaderModifier;
- the A/B and sticky rules of gateway_rules.py, each directly before its rule, recorded in the
  annotation `canary-analyzer.io/rules`.
Every other rule and field (matches, filters, timeouts, sessionPersistence, parentRefs,
hostnames) stays as it was. Backends are Services: kind Service, group "" (or "core", Linkerd's
spelling).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from analyzer.policy import GatewayApiRouter as GatewayConfig
from analyzer.policy import Policy
from analyzer.routers.arguments import KEEP
from analyzer.routers.base import RouterError, TrafficSplit
from analyzer.routers.kube import gateway_rules as rules_
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

API_VERSION = "gateway.networking.k8s.io/v1"
VERSIONS = ("v1", "v1beta1")
PERMISSIONS = (("gateway.networking.k8s.io", "httproutes", ("get", "patch")),)


def _is_service(ref: Any, name: str) -> bool:
    ref = as_dict(ref)
    return (ref.get("name") == name and ref.get("kind", "Service") == "Service"
            and ref.get("group", "") in ("", "core"))


@dataclass(frozen=True)
class Rule:
    index: int  # among the HTTPRoute's own rules
    body: dict[str, Any]

    def describe(self) -> str:
        matches = as_list(self.body.get("matches"))
        paths = [as_dict(as_dict(m).get("path")).get("value") for m in matches]
        text = f"rule {self.index}" + (f" name={self.body['name']}" if self.body.get("name")
                                       else "")
        text += f" (paths {', '.join(str(p) for p in paths if p)})" if any(paths) else ""
        return text + " -> " + ", ".join(
            str(as_dict(b).get("name")) for b in as_list(self.body.get("backendRefs")))


class GatewayApiRouter(SingleObjectRouter):
    provider = "gateway-api"

    def __init__(self, policy: Policy, objects: KubeObjects) -> None:
        super().__init__(objects)
        cfg = policy.spec.router
        assert isinstance(cfg, GatewayConfig)
        self.cfg = cfg
        ns = policy.spec.target.namespace
        self.ref = ObjectRef(API_VERSION, "HTTPRoute", "httproutes", ns, cfg.httpRoute,
                             versions=VERSIONS)
        self.cookie = sticky_value(ns, policy.name, policy.spec.target.canary)

    # ------------------------------------------------------------------ which rules

    def _user_rules(self, obj: dict[str, Any], where: ObjectRef) -> list[Rule]:
        rules = as_dict(obj.get("spec")).get("rules")
        if not isinstance(rules, list) or not rules:
            raise RouterError(f"{where} has no spec.rules")
        ours = rules_.recorded(obj)
        user = [r for r in rules if isinstance(r, dict) and not rules_.is_ours(r, ours)]
        return [Rule(i, r) for i, r in enumerate(user)]

    def _managed(self, obj: dict[str, Any]) -> list[Rule]:
        where = self.ref.as_read(obj)
        user = self._user_rules(obj, where)
        stable, canary = self.cfg.stableService, self.cfg.canaryService
        if self.cfg.rules is not None:
            bad = [i for i in self.cfg.rules if i >= len(user)]
            if bad:
                raise RouterError(f"{where}: rule index(es) {bad} not found (it has "
                                  f"{len(user)} rules of its own)")
            managed = [user[i] for i in self.cfg.rules]
        else:
            managed = [r for r in user if any(
                _is_service(b, stable) for b in as_list(r.body.get("backendRefs")))]
            if not managed:
                raise RouterError(f"{where}: no rule sends traffic to stableService {stable!r}")
            if len(managed) > 1:
                raise refuse_ambiguous(where, f"rules send traffic to {stable!r}",
                                       [r.describe() for r in managed], "rules",
                                       "indexes of the HTTPRoute's rules, from 0")
        for r in managed:
            refs = as_list(r.body.get("backendRefs"))
            others = [as_dict(b).get("name") for b in refs
                      if not (_is_service(b, stable) or _is_service(b, canary))]
            if others or not any(_is_service(b, stable) for b in refs):
                raise RouterError(
                    f"{where}: {r.describe()} must send traffic to {stable!r} (and only to "
                    f"stable/canary); its backends are {[as_dict(b).get('name') for b in refs]}")
        return managed

    def _ref(self, rule: dict[str, Any], service: str) -> dict[str, Any] | None:
        return next((b for b in as_list(rule.get("backendRefs")) if _is_service(b, service)),
                    None)

    def _canary_ref(self, stable: dict[str, Any]) -> dict[str, Any]:
        ref = copy.deepcopy(stable)
        ref["name"] = self.cfg.canaryService
        if self.cfg.port is not None:
            ref["port"] = self.cfg.port
        return ref

    def _is_our_mirror(self, f: Any) -> bool:
        f = as_dict(f)
        return f.get("type") == "RequestMirror" and _is_service(
            as_dict(f.get("requestMirror")).get("backendRef"), self.cfg.canaryService)

    def _is_our_cookie(self, value: Any) -> bool:
        sticky = self.cfg.stickySessions
        return sticky is not None and is_our_cookie(value, sticky.cookieName)

    # ------------------------------------------------------------------ the change

    def _apply(self, obj: dict[str, Any], weight: Any, match: Any, mirror: Any) -> None:
        if match not in (KEEP, None) and "cookie" in match:
            raise self._unsupported("route by cookie (HTTPRoute has no cookie match)")
        where = self.ref.as_read(obj)
        managed = self._managed(obj)
        rules = obj["spec"]["rules"]
        ab = self._read_ab(obj) if match is KEEP else match
        if weight is KEEP:
            weight = self._weight(managed, where)
        else:
            for r in managed:
                self._set_weight(r.body, weight)
        if mirror is not KEEP:
            for r in managed:
                self._set_mirror(r.body, mirror)
        sticky = self._sticky_plan(obj, weight)
        if self.cfg.stickySessions is not None:
            give = None
            if sticky is not None and sticky[1]:
                give = give_cookie(self.cfg.stickySessions.cookieName, sticky[0],
                                   int(self.cfg.stickySessions.maxAge.total_seconds()))
            for r in managed:
                canary = self._ref(r.body, self.cfg.canaryService)
                if canary is not None:
                    self._guarded(where, r, lambda c=canary: rules_.set_response_header(
                        c, "Set-Cookie", give, self._is_our_cookie))
        ours = rules_.recorded(obj)
        out, added = [], []
        served = {id(r.body): r for r in managed}
        for body in rules:
            if rules_.is_ours(body, ours):
                continue
            r = served.get(id(body))
            if r is not None:
                mine = self._our_rules(r, ab, sticky, where)
                added += mine
                out += mine
            out.append(body)
        rules[:] = out
        rules_.record(obj, added)

    def _guarded(self, where: ObjectRef, r: Rule, fn: Callable[[], None]) -> None:
        try:
            fn()
        except RouterError as e:
            raise RouterError(f"{where}: {r.describe()}: {e}") from None

    def _set_weight(self, rule: dict[str, Any], weight: int) -> None:
        refs = rule["backendRefs"]
        stable = self._ref(rule, self.cfg.stableService)
        assert stable is not None
        canary = self._ref(rule, self.cfg.canaryService)
        if canary is None:
            canary = self._canary_ref(stable)
            refs.insert(refs.index(stable) + 1, canary)
        stable["weight"] = 100 - weight
        canary["weight"] = weight

    def _set_mirror(self, rule: dict[str, Any], mirror: float | None) -> None:
        filters = [f for f in as_list(rule.get("filters")) if not self._is_our_mirror(f)]
        if mirror is not None:
            stable = self._ref(rule, self.cfg.stableService)
            assert stable is not None
            filters.append(rules_.mirror_filter(self._canary_ref(stable), mirror))
        if filters:
            rule["filters"] = filters
        else:
            rule.pop("filters", None)

    def _sticky_plan(self, obj: dict[str, Any], weight: int) -> tuple[str, bool] | None:
        """(cookie value, active) of the sticky rule to have; see istio.py."""
        if self.cfg.stickySessions is None:
            return None
        if weight > 0:
            return self.cookie, True
        ours = rules_.recorded(obj)
        for body in as_list(as_dict(obj.get("spec")).get("rules")):
            value = rules_.sticky_value_of(body) if rules_.is_ours(body, ours) else None
            if value:
                return value, False
        return None

    def _our_rules(self, r: Rule, ab: Any, sticky: tuple[str, bool] | None,
                   where: ObjectRef) -> list[dict[str, Any]]:
        stable = self._ref(r.body, self.cfg.stableService)
        assert stable is not None
        canary = copy.deepcopy(self._ref(r.body, self.cfg.canaryService)
                               or self._canary_ref(stable))
        if self.cfg.stickySessions is not None:  # our rules do not hand out the cookie
            rules_.set_response_header(canary, "Set-Cookie", None, self._is_our_cookie)
        out = []
        if ab is not None:
            matches = self._with(where, r, rules_.header_match(ab))
            out.append(rules_.copy_rule(r.body, matches, canary, self._is_our_mirror))
        if sticky is not None:
            value, active = sticky
            cookie = self.cfg.stickySessions.cookieName  # type: ignore[union-attr]
            matches = self._with(where, r, rules_.sticky_header(cookie, value))
            backend = canary
            if not active:
                backend = copy.deepcopy(stable)
                self._guarded(where, r, lambda: rules_.set_response_header(
                    backend, "Set-Cookie", expire_cookie(cookie, value), self._is_our_cookie))
            out.append(rules_.copy_rule(r.body, matches, backend, self._is_our_mirror))
        return out

    def _with(self, where: ObjectRef, r: Rule, header: dict[str, str]) -> list[Any]:
        try:
            return rules_.with_header(r.body, str(r.index), header)
        except RouterError as e:
            raise RouterError(f"{where}: {e}") from None

    def _server_check(self, weight: Any, match: Any, mirror: Any
                      ) -> Callable[[dict[str, Any]], str | None] | None:
        if mirror in (KEEP, None, 100):
            return None
        return self._mirror_kept

    def _mirror_kept(self, stored: dict[str, Any]) -> str | None:
        """The server kept our mirror's percent (an older schema prunes it: 100% mirrored)."""
        for r in self._managed(stored):
            for f in as_list(r.body.get("filters")):
                mirror = as_dict(as_dict(f).get("requestMirror"))
                if self._is_our_mirror(f) and "percent" not in mirror and (
                        "fraction" not in mirror):
                    return (f"the API server's HTTPRoute schema ({stored.get('apiVersion')}) has "
                            "no requestMirror percent (Gateway API older than v1.3 standard / "
                            "v1.2 experimental) and would mirror 100%; mirror 100% or upgrade "
                            "the Gateway API CRDs")
        return None

    # ------------------------------------------------------------------ reading

    def _rule_weight(self, rule: dict[str, Any]) -> int:
        refs = [as_dict(b) for b in as_list(rule.get("backendRefs"))]
        total = sum(int(b.get("weight", 1)) for b in refs)  # Gateway API: weight defaults to 1
        canary = sum(int(b.get("weight", 1)) for b in refs
                     if _is_service(b, self.cfg.canaryService))
        return percent_of(canary, total)

    def _weight(self, managed: list[Rule], where: ObjectRef) -> int:
        return agreed_weight(where, "rules",
                             {r.describe(): self._rule_weight(r.body) for r in managed})

    def _read_ab(self, obj: dict[str, Any]) -> dict[str, str] | None:
        ours = rules_.recorded(obj)
        for body in as_list(as_dict(obj.get("spec")).get("rules")):
            if rules_.is_ours(body, ours) and rules_.sticky_value_of(body) is None:
                return rules_.read_header(body)
        return None

    def _split(self, obj: dict[str, Any]) -> TrafficSplit:
        where = self.ref.as_read(obj)
        managed = self._managed(obj)
        mirror = next((rules_.mirror_percent(f) for f in as_list(managed[0].body.get("filters"))
                       if self._is_our_mirror(f)), None)
        sticky = None
        ours = rules_.recorded(obj)
        cookie = self.cfg.stickySessions.cookieName if self.cfg.stickySessions else "?"
        for body in as_list(as_dict(obj.get("spec")).get("rules")):
            value = rules_.sticky_value_of(body) if rules_.is_ours(body, ours) else None
            if value and any(_is_service(b, self.cfg.canaryService)
                             for b in as_list(body.get("backendRefs"))):
                sticky = f"cookie {cookie}={value}"
        return TrafficSplit(canary_weight=self._weight(managed, where),
                            header_route=self._read_ab(obj), mirror_percent=mirror, sticky=sticky)
