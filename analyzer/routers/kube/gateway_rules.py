"""The rules and filters the Gateway API router adds to an HTTPRoute, and how it finds them again.

For a managed rule R, an A/B rule and a sticky-session rule are copies of R placed directly
before it: every match of R (or one match of everything) gets one more header condition, so the
rule serves exactly R's requests that carry it (Gateway API gives precedence to the match with
more header conditions); R's `filters` (URL rewrite, header modifiers, the user's mirrors) and
`timeouts` stay, `name` and `sessionPersistence` do not; the rule sends everything to one backend.

Rule names are pruned by servers older than Gateway API v1.4, so our rules carry no name: they
are recorded in the annotation `canary-analyzer.io/rules` and found again by equality after
dropping the values the server fills in by default (canonical()). Pure functions on plain dicts.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from analyzer.routers.base import RouterError
from analyzer.routers.kube.routing import OURS, as_dict, as_list, cookie_regex, value_in_regex

ANNOTATION = "canary-analyzer.io/rules"
LEGACY_AB = f"{OURS}-ab"  # the name earlier versions gave their single A/B rule
_NOT_COPIED = ("name", "sessionPersistence", "backendRefs", "matches")


def canonical(rule: Any) -> Any:
    """A rule without the defaults the API server fills in (weight 1, group "", kind Service,
    header/query type Exact, path PathPrefix "/", a match of everything) and its name."""
    rule = copy.deepcopy(as_dict(rule))
    rule.pop("name", None)
    matches = [_canonical_match(m) for m in as_list(rule.get("matches"))]
    if matches and matches != [{}]:
        rule["matches"] = matches
    else:
        rule.pop("matches", None)
    rule["backendRefs"] = [_canonical_ref(b) for b in as_list(rule.get("backendRefs"))]
    for f in as_list(rule.get("filters")):
        if isinstance(as_dict(f).get("requestMirror"), dict):
            f["requestMirror"]["backendRef"] = _canonical_ref(f["requestMirror"].get("backendRef"))
    return rule


def _canonical_ref(ref: Any) -> dict[str, Any]:
    ref = dict(as_dict(ref))
    for key, default in (("weight", 1), ("group", ""), ("kind", "Service")):
        if ref.get(key) == default:
            ref.pop(key)
    return ref


def _canonical_match(match: Any) -> dict[str, Any]:
    match = copy.deepcopy(as_dict(match))
    path = as_dict(match.get("path"))
    if path.get("type") == "PathPrefix":
        path.pop("type")
    if path in ({"value": "/"}, {}):
        match.pop("path", None)
    for key in ("headers", "queryParams"):
        for h in as_list(match.get(key)):
            if as_dict(h).get("type") == "Exact":
                h.pop("type")
    return match


def recorded(obj: dict[str, Any]) -> list[Any]:
    """The canonical rules our annotation lists ([] when absent or unreadable)."""
    text = as_dict(as_dict(obj.get("metadata")).get("annotations")).get(ANNOTATION)
    try:
        rules = json.loads(text) if isinstance(text, str) else []
    except ValueError:
        return []
    return rules if isinstance(rules, list) else []


def record(obj: dict[str, Any], rules: list[dict[str, Any]]) -> None:
    """Write (or, with no rules, remove) our annotation."""
    meta = obj.setdefault("metadata", {})
    annotations = meta.get("annotations")
    if rules:
        meta["annotations"] = {**as_dict(annotations),
                               ANNOTATION: json.dumps([canonical(r) for r in rules],
                                                      sort_keys=True, separators=(",", ":"))}
    elif isinstance(annotations, dict) and ANNOTATION in annotations:
        annotations.pop(ANNOTATION)
        if not annotations:
            meta.pop("annotations")


def is_ours(rule: Any, ours: list[Any]) -> bool:
    return as_dict(rule).get("name") == LEGACY_AB or canonical(rule) in ours


def with_header(rule: dict[str, Any], label: str, header: dict[str, str]) -> list[Any]:
    """Each of the rule's matches (or one match of everything) plus `header`."""
    out = []
    for m in as_list(rule.get("matches")) or [{}]:
        m = copy.deepcopy(as_dict(m))
        headers = as_list(m.get("headers"))
        if header["name"].lower() in {str(as_dict(h).get("name")).lower() for h in headers}:
            raise RouterError(
                f"rule {label} already matches on header {header['name']!r}; the analyzer's "
                "rule for it would need a second condition on that header: use another header "
                "in the policy")
        m["headers"] = [*headers, header]
        out.append(m)
    return out


def copy_rule(rule: dict[str, Any], matches: list[Any], backend: dict[str, Any],
              drop_filter: Any) -> dict[str, Any]:
    """The rule with `matches`, one backend and its filters except those `drop_filter` says."""
    out = {k: copy.deepcopy(v) for k, v in rule.items() if k not in _NOT_COPIED}
    if "filters" in out:
        out["filters"] = [f for f in out["filters"] if not drop_filter(f)]
        if not out["filters"]:
            out.pop("filters")
    backend = copy.deepcopy(backend)
    backend.pop("weight", None)
    return {"matches": matches, **out, "backendRefs": [backend]}


def header_match(match: dict[str, str]) -> dict[str, str]:
    if "pattern" in match:
        return {"type": "RegularExpression", "name": match["header"], "value": match["pattern"]}
    return {"type": "Exact", "name": match["header"], "value": match["value"]}


def read_header(rule: Any) -> dict[str, str] | None:
    """The A/B match of an A/B rule: the last header condition of its first match."""
    headers = as_list(as_dict((as_list(as_dict(rule).get("matches")) or [{}])[0]).get("headers"))
    if not headers or not isinstance(headers[-1], dict):
        return None
    h = headers[-1]
    if h.get("type") == "RegularExpression":
        return {"header": str(h.get("name")), "pattern": str(h.get("value"))}
    return {"header": str(h.get("name")), "value": str(h.get("value"))}


def sticky_header(cookie: str, value: str) -> dict[str, str]:
    return {"type": "RegularExpression", "name": "Cookie", "value": cookie_regex(cookie, value)}


def sticky_value_of(rule: Any) -> str | None:
    """The cookie value of a sticky rule, None for other rules."""
    for m in as_list(as_dict(rule).get("matches")):
        for h in as_list(as_dict(m).get("headers")):
            h = as_dict(h)
            if str(h.get("name")).lower() == "cookie" and h.get("type") == "RegularExpression":
                value = value_in_regex(h.get("value"))
                if value:
                    return value
    return None


def mirror_filter(backend: dict[str, Any], percent: float) -> dict[str, Any]:
    """A RequestMirror filter: all traffic (no field), a whole percent, or a fraction."""
    ref = {k: copy.deepcopy(v) for k, v in backend.items()
           if k in ("group", "kind", "name", "namespace", "port")}
    mirror: dict[str, Any] = {"backendRef": ref}
    if percent != 100:
        if percent == int(percent):
            mirror["percent"] = int(percent)
        else:
            mirror["fraction"] = {"numerator": round(percent * 100), "denominator": 10000}
    return {"type": "RequestMirror", "requestMirror": mirror}


def mirror_percent(f: dict[str, Any]) -> float:
    mirror = as_dict(f.get("requestMirror"))
    if "percent" in mirror:
        return float(mirror["percent"])
    fraction = as_dict(mirror.get("fraction"))
    if fraction:
        return 100 * float(fraction["numerator"]) / float(fraction.get("denominator", 100))
    return 100.0


def set_response_header(ref: dict[str, Any], name: str, value: str | None,
                        mine: Any) -> None:
    """Add (value) or remove (None) our header in the backendRef's ResponseHeaderModifier, a
    filter that may not be repeated: merged into the user's when there is one. `mine(v)` tells
    our value from a user's (a user's header of that name makes it refuse)."""
    filters = ref.setdefault("filters", [])
    modifier = next((f for f in filters if as_dict(f).get("type") == "ResponseHeaderModifier"),
                    None)
    if modifier is None:
        if value is None:
            if not filters:
                ref.pop("filters")
            return
        modifier = {"type": "ResponseHeaderModifier", "responseHeaderModifier": {}}
        filters.append(modifier)
    body = modifier.setdefault("responseHeaderModifier", {})
    add = [h for h in as_list(body.get("add")) if not (
        str(as_dict(h).get("name")).lower() == name.lower() and mine(as_dict(h).get("value")))]
    if value is not None and any(str(as_dict(h).get("name")).lower() == name.lower()
                                 for h in add):
        raise RouterError(f"backend {ref.get('name')} already gets a {name} response header; "
                          "sticky sessions would clash with it")
    if value is not None:
        add.append({"name": name, "value": value})
    if add:
        body["add"] = add
    else:
        body.pop("add", None)
    if not body:
        filters.remove(modifier)
    if not filters:
        ref.pop("filters")
