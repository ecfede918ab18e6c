"""The routes the Istio router adds to a VirtualService, built from the route they serve.

For a managed http route R, an A/B route and a sticky-session route are copies of R placed
directly before it (so every user route above R keeps precedence), named `canary-analyzer-ab-<R>`
and `canary-analyzer-sticky-<R>`:

- each of R's matches (or one empty match) gets one more header condition (the A/B header, or
  the sticky cookie), so the route serves exactly R's requests that carry it: URI, authority,
  method and other header conditions stay;
- every other field of R stays too (rewrite, retries, timeout, corsPolicy, headers, fault), except
  `name`, the weighted `route` and mirroring; the route sends everything to one destination.

Pure functions on plain dicts; the router (istio.py) decides where they go.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from analyzer.routers.base import RouterError
from analyzer.routers.kube.routing import OURS, as_dict, as_list, cookie_regex, value_in_regex

AB = f"{OURS}-ab"
STICKY = f"{OURS}-sticky"
_NOT_COPIED = ("name", "route", "mirror", "mirrorPercentage", "mirrorPercent", "mirror_percent",
               "mirrors")
_AB_COOKIE = re.compile(r"^\^\(\.\*\?;\\s\*\)\?(.+)=always\(;\.\*\)\?\$$")


def is_ours(route: Any) -> bool:
    name = as_dict(route).get("name")
    return isinstance(name, str) and (name.startswith(f"{AB}-") or name.startswith(f"{STICKY}-")
                                      or name == AB)


def fqdn(host: str, namespace: str) -> str:
    """A destination host in full, for comparison: `reviews` and `reviews.shop` are
    `reviews.shop.svc.cluster.local` (Istio reads short names in the rule's namespace)."""
    if "*" in host:
        return host
    parts = host.split(".")
    if len(parts) == 1:
        return f"{host}.{namespace}.svc.cluster.local"
    if len(parts) == 2:
        return f"{host}.svc.cluster.local"
    if len(parts) == 3 and parts[2] == "svc":
        return f"{host}.cluster.local"
    return host


def header_condition(match: dict[str, str]) -> tuple[str, dict[str, str]]:
    """(header name, StringMatch) for an A/B match: header exact or regex, or the cookie
    `NAME=always` (nginx-ingress semantics)."""
    if "cookie" in match:
        name = re.escape(match["cookie"])
        return "cookie", {"regex": f"^(.*?;\\s*)?{name}=always(;.*)?$"}
    if "pattern" in match:
        return match["header"].lower(), {"regex": match["pattern"]}
    return match["header"].lower(), {"exact": match["value"]}


def read_condition(name: str, cond: Any) -> dict[str, str] | None:
    """The A/B match a header condition written by header_condition() stands for."""
    cond = as_dict(cond)
    if name == "cookie" and isinstance(cond.get("regex"), str):
        found = _AB_COOKIE.match(cond["regex"])
        if found:
            return {"cookie": re.sub(r"\\(.)", r"\1", found.group(1))}
    if isinstance(cond.get("exact"), str):
        return {"header": name, "value": cond["exact"]}
    if isinstance(cond.get("regex"), str):
        return {"header": name, "pattern": cond["regex"]}
    return None


def merged_matches(route: dict[str, Any], label: str, header: str,
                   cond: dict[str, str]) -> list[dict[str, Any]]:
    """Each of the route's matches (or one empty match) plus `header: cond`."""
    out = []
    for m in as_list(route.get("match")) or [{}]:
        m = copy.deepcopy(as_dict(m))
        headers = as_dict(m.get("headers"))
        if header in {str(h).lower() for h in headers}:
            raise RouterError(
                f"http route {label} already matches on header {header!r}; the analyzer's "
                f"route for it would need a second condition on that header: use another "
                "header (or cookie name) in the policy")
        m["headers"] = {**headers, header: cond}
        out.append(m)
    return out


def copy_route(route: dict[str, Any], name: str, match: list[dict[str, Any]],
               entry: dict[str, Any]) -> dict[str, Any]:
    """R without its name, weighted route and mirroring, with `match` and one destination."""
    out = {k: copy.deepcopy(v) for k, v in route.items() if k not in _NOT_COPIED}
    entry = copy.deepcopy(entry)
    entry.pop("weight", None)
    return {"name": name, **out, "match": match, "route": [entry]}


def ab_route(route: dict[str, Any], label: str, ab: dict[str, str],
             canary_entry: dict[str, Any]) -> dict[str, Any]:
    header, cond = header_condition(ab)
    return copy_route(route, f"{AB}-{label}", merged_matches(route, label, header, cond),
                      canary_entry)


def sticky_route(route: dict[str, Any], label: str, cookie: str, value: str,
                 entry: dict[str, Any]) -> dict[str, Any]:
    cond = {"regex": cookie_regex(cookie, value)}
    return copy_route(route, f"{STICKY}-{label}", merged_matches(route, label, "cookie", cond),
                      entry)


def read_ab(http: list[Any]) -> dict[str, str] | None:
    """The A/B match of the first A/B route: its condition that the next user route (the one
    it serves) does not have."""
    for i, r in enumerate(http):
        name = as_dict(r).get("name")
        if not (isinstance(name, str) and (name == AB or name.startswith(f"{AB}-"))):
            continue
        served = next((u for u in http[i + 1:] if not is_ours(u)), {})
        ours = as_dict((as_list(r.get("match")) or [{}])[0]).get("headers")
        theirs = as_dict((as_list(as_dict(served).get("match")) or [{}])[0]).get("headers")
        for h, cond in as_dict(ours).items():
            if h not in as_dict(theirs):
                return read_condition(str(h), cond)
    return None


def read_sticky(http: list[Any]) -> tuple[str, Any] | None:
    """(cookie value, destination) of the first sticky route: an active one sends to the
    canary, an expiring one (after a rollback) to stable, deleting the cookie."""
    for r in http:
        name = as_dict(r).get("name")
        if not (isinstance(name, str) and name.startswith(f"{STICKY}-")):
            continue
        for m in as_list(r.get("match")):
            cookie = as_dict(as_dict(as_dict(m).get("headers")).get("cookie"))
            value = value_in_regex(cookie.get("regex"))
            if value:
                entry = as_dict((as_list(r.get("route")) or [{}])[0])
                return value, entry.get("destination")
    return None
