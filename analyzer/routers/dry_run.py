"""The `dry-run` router: moves no traffic, keeps the split it was given in memory.

Together with the `simulate` metric source it is the embedded default: the engine runs with
nothing installed. The engine records every weight change in the store, so the decision log
holds the full history even though this router forgets everything when the process exits
(on restart the engine re-applies the stored weight; see analyzer/daemon/engine.py).
"""

from __future__ import annotations

import threading
from typing import Any

from analyzer.policy import Policy
from analyzer.routers.base import RouterError, TrafficSplit


class DryRunRouter:
    """Router protocol implementation that only records.

    `history` lists every operation in order (what a test or `canary route --dry-run` shows);
    `fail_next` makes the next write raise RouterError (tests of the engine's error paths).
    """

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy
        self._lock = threading.Lock()
        self._weight = 0
        self._header: dict[str, str] | None = None
        self._mirror: float | None = None
        self._last: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self.fail_next: str | None = None

    def _record(self, op: dict[str, Any]) -> None:
        if self.fail_next is not None:
            message, self.fail_next = self.fail_next, None
            raise RouterError(f"dry-run router ({self._name()}): {message}")
        obj = {
            "kind": "DryRunSplit",
            "rollout": self._name(),
            "canaryWeight": self._weight,
            "headerRoute": dict(self._header) if self._header else None,
            "mirrorPercent": self._mirror,
        }
        self._last = [obj]
        self.history.append({**op, "split": obj})

    def _name(self) -> str:
        return self.policy.name if self.policy is not None else "<no policy>"

    def get_weight(self) -> TrafficSplit:
        with self._lock:
            return TrafficSplit(
                canary_weight=self._weight,
                header_route=dict(self._header) if self._header else None,
                mirror_percent=self._mirror,
            )

    def set_weight(self, canary_percent: int) -> None:
        if not 0 <= int(canary_percent) <= 100:
            raise RouterError(f"dry-run router: weight {canary_percent} is outside 0..100")
        with self._lock:
            old = self._weight
            self._weight = int(canary_percent)
            try:
                self._record({"op": "set_weight", "weight": int(canary_percent)})
            except RouterError:
                self._weight = old
                raise

    def set_header_route(self, match: dict[str, str] | None) -> None:
        with self._lock:
            old = self._header
            self._header = dict(match) if match else None
            try:
                self._record({"op": "set_header_route", "match": self._header})
            except RouterError:
                self._header = old
                raise

    def set_mirror(self, percent: float | None) -> None:
        with self._lock:
            old = self._mirror
            self._mirror = percent
            try:
                self._record({"op": "set_mirror", "percent": percent})
            except RouterError:
                self._mirror = old
                raise

    def reset(self) -> None:
        with self._lock:
            old = (self._weight, self._header, self._mirror)
            self._weight, self._header, self._mirror = 0, None, None
            try:
                self._record({"op": "reset"})
            except RouterError:
                self._weight, self._header, self._mirror = old
                raise

    @property
    def last_applied(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._last)
