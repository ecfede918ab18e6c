"""What the Istio and Gateway API routers share about routes: tolerant access to a user's object,
the refusal when a policy does not say which of several routes to manage, and the sticky-session
cookie (its value, the regex that matches it in a Cookie header, the Set-Cookie that gives and
expires it). Pure functions on plain dicts; no I/O.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from typing import Any

from analyzer.routers.base import RouterError

OURS = "canary-analyzer"  # prefix of every route, rule and annotation the analyzer adds
COOKIE_VALUE = re.compile(r"=([0-9a-f]{16})\(")  # the value inside cookie_regex()


def as_dict(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def as_list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def percent_of(part: float, total: float) -> int:
    """`part` of `total` as a whole percent (0 when total is 0)."""
    return round_half_up(100 * part / total) if total else 0


def agreed_weight(where: object, what: str, weights: dict[str, int]) -> int:
    """The canary weight all managed routes give (described -> weight); RouterError when they
    disagree (someone edited one by hand), since no single weight would be true."""
    if len(set(weights.values())) > 1:
        raise RouterError(
            f"{where}: the managed {what} give the canary different weights ("
            + "; ".join(f"{k}: {v}%" for k, v in weights.items())
            + "); set a weight to align them")
    return next(iter(weights.values()))


def refuse_ambiguous(where: object, what: str, candidates: Sequence[str], field: str,
                     forms: str) -> RouterError:
    """More than one route could be the managed one and the policy names none."""
    listed = "; ".join(candidates)
    return RouterError(
        f"{where}: {len(candidates)} {what}: {listed}. Name the one(s) to manage in "
        f"spec.router.{field} ({forms}); routes the policy does not name are never changed")


# ---------------------------------------------------------------------------- sticky sessions


def sticky_value(namespace: str, policy: str, canary: str) -> str:
    """The cookie value of one rollout: the same for every process running it (nothing to store)
    and different for the next canary version, so an old cookie never pins a new canary."""
    return hashlib.sha256(f"{namespace}/{policy}/{canary}".encode()).hexdigest()[:16]


def cookie_regex(name: str, value: str) -> str:
    """RE2 regex matching a Cookie header that carries `name=value` (full match, as Envoy
    matches): stricter than `.*name.*value.*`, which also matches `xname=1; a=value`."""
    return f"^(.*;\\s*)?{re.escape(name)}={value}(;.*)?$"


def value_in_regex(regex: Any) -> str | None:
    """The cookie value in a regex written by cookie_regex(), else None."""
    found = COOKIE_VALUE.search(regex) if isinstance(regex, str) else None
    return found.group(1) if found else None


def give_cookie(name: str, value: str, max_age_s: int) -> str:
    """The Set-Cookie value the canary adds to its responses."""
    return f"{name}={value}; Max-Age={max_age_s}; Path=/; HttpOnly"


def expire_cookie(name: str, value: str) -> str:
    """The Set-Cookie value that deletes the cookie (RFC 6265: Max-Age <= 0)."""
    return f"{name}={value}; Max-Age=0; Path=/; HttpOnly"


def is_our_cookie(set_cookie: Any, name: str) -> bool:
    return isinstance(set_cookie, str) and set_cookie.startswith(f"{name}=")
