"""The Router protocol every traffic provider implements, and its errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


class RouterError(Exception):
    """A traffic change could not be applied. The message names the object and the API's
    answer; nothing was half-applied (the previous weight stands)."""


@dataclass(frozen=True)
class TrafficSplit:
    """What a router reads back: the canary's percent of live traffic, and A/B and mirror state."""

    canary_weight: int
    # e.g. {"header": "x-canary", "value": "1"}, {"header": "x-user", "pattern": "test.*"},
    # {"cookie": "canary"}
    header_route: dict[str, str] | None = None
    mirror_percent: float | None = None
    # While sticky sessions hold canary users on the canary: how (e.g. "cookie
    # canary-analyzer=3f2a..."); None otherwise.
    sticky: str | None = None


@runtime_checkable
class Router(Protocol):
    """Moves traffic between stable and canary.

    Every operation is idempotent, reads the object before writing, retries a 409 Conflict
    with a fresh resourceVersion (bounded), touches only the routes and fields it owns, and
    raises RouterError with the object and the API's message when it cannot apply.
    With `dry_run=True` on construction it writes nothing and records what it would apply
    (`last_applied` holds the object).
    """

    def get_weight(self) -> TrafficSplit: ...

    def set_weight(self, canary_percent: int) -> None: ...

    def set_header_route(self, match: dict[str, str] | None) -> None:
        """match: {"header": name, "value": v}, {"header": name, "pattern": regex} or
        {"cookie": name}; None removes the route."""

    def set_mirror(self, percent: float | None) -> None:
        """Mirror `percent` of live traffic to the canary; None removes mirroring."""

    def reset(self) -> None:
        """All traffic to stable, no header route, no mirror."""

    @property
    def last_applied(self) -> list[dict[str, Any]]:
        """Objects written (or, in dry-run, that would be written) by the last operation."""
