"""The arguments every router takes, checked the same way: a weight, a mirror percent, an A/B
match, and KEEP (an aspect an operation leaves as it is).
"""

from __future__ import annotations

from typing import Any

from analyzer.routers.base import RouterError


class _Keep:
    """Marks an aspect (weight, header route, mirror) an operation leaves as it is."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()


def check_weight(weight: Any) -> int:
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
        raise RouterError(f"weight must be an integer from 0 to 100, got {weight!r}")
    return weight


def check_mirror(percent: Any) -> float | None:
    if percent is None:
        return None
    if isinstance(percent, bool) or not isinstance(percent, int | float) or not (
        0 < percent <= 100
    ):
        raise RouterError(f"mirror percent must be in (0, 100], got {percent!r}")
    return float(percent)


def check_match(match: Any) -> dict[str, str] | None:
    """{"header": NAME, "value": V}, {"header": NAME, "pattern": REGEX} or {"cookie": NAME}."""
    if match is None:
        return None
    if not isinstance(match, dict):
        raise RouterError(f"header route must be a mapping, got {match!r}")
    for key in ("value", "pattern"):
        if set(match) == {"header", key} and match["header"] and match[key]:
            return {"header": str(match["header"]), key: str(match[key])}
    if set(match) == {"cookie"} and match["cookie"]:
        return {"cookie": str(match["cookie"])}
    raise RouterError(
        f"header route must be {{'header': NAME, 'value': VALUE}}, {{'header': NAME, "
        f"'pattern': REGEX}} or {{'cookie': NAME}}, got {match!r}"
    )
