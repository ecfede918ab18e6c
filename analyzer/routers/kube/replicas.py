"""Kubernetes replicas router: the canary's share of pods behind one Service is its weight.

Owns `spec.replicas` of the stable and the canary Deployment (nothing else in them). For a
weight w and a total T (the policy's totalReplicas, else the two Deployments' current sum):

    canary = floor(T * w / 100 + 1/2)          (round half up)
    1-replica floor: 0 < w < 100  =>  1 <= canary <= T - 1
    stable = T - canary

so a weight above 0 always gets a pod and a weight below 100 always keeps a stable pod; the
effective weight (what `get_weight` reads back) is 100 * canary / T, e.g. T=10, w=5 -> 10%.
T must be at least 2 for a weight strictly between 0 and 100.

Two objects cannot change atomically. The router writes the Deployment that grows first (so
capacity never dips), then the one that shrinks; if the second write fails it puts the first
back, so a failure leaves the previous replica counts (the error says if even that failed).
No header routing or mirroring: a Service balances by pod.
"""

from __future__ import annotations

import math
from typing import Any

from analyzer.policy import KubernetesRouter as KubernetesConfig
from analyzer.policy import Policy
from analyzer.routers.arguments import check_match, check_mirror, check_weight
from analyzer.routers.base import RouterError, TrafficSplit
from analyzer.routers.fence import Fenced
from analyzer.routers.kube.objects import KubeObjects, KubeRouter, ObjectRef

PERMISSIONS = (("apps", "deployments", ("get", "patch")),)


def split_replicas(total: int, weight: int) -> tuple[int, int]:
    """(stable, canary) replicas for `weight` percent of `total` (see the module docstring)."""
    if total < 1:
        raise RouterError(f"total replicas must be at least 1, got {total}")
    canary = math.floor(total * weight / 100 + 0.5)
    if 0 < weight < 100:
        if total < 2:
            raise RouterError(
                f"weight {weight} needs at least 2 replicas in all (1 stable + 1 canary), "
                f"have {total}; set spec.router.totalReplicas"
            )
        canary = min(max(canary, 1), total - 1)
    return total - canary, canary


class KubernetesRouter(KubeRouter):
    provider = "kubernetes"

    def __init__(self, policy: Policy, objects: KubeObjects) -> None:
        super().__init__(objects)
        cfg = policy.spec.router
        assert isinstance(cfg, KubernetesConfig)
        self.cfg = cfg
        ns = policy.spec.target.namespace
        self.stable_ref = ObjectRef("apps/v1", "Deployment", "deployments", ns,
                                    cfg.stableDeployment)
        self.canary_ref = ObjectRef("apps/v1", "Deployment", "deployments", ns,
                                    cfg.canaryDeployment)

    def _replicas(self, ref: ObjectRef) -> int:
        obj = self.objects.read(ref)
        assert obj is not None
        value = (obj.get("spec") or {}).get("replicas", 1)  # the API's default is 1
        if not isinstance(value, int) or value < 0:
            raise RouterError(f"{ref}: spec.replicas is {value!r}, expected a count")
        return value

    def get_weight(self) -> TrafficSplit:
        stable, canary = self._replicas(self.stable_ref), self._replicas(self.canary_ref)
        total = stable + canary
        return TrafficSplit(canary_weight=round(100 * canary / total) if total else 0)

    def _scale(self, ref: ObjectRef, replicas: int) -> None:
        def mutate(obj: dict[str, Any]) -> None:
            obj.setdefault("spec", {})["replicas"] = replicas

        self.objects.update(ref, mutate)

    def set_weight(self, canary_percent: int) -> None:
        weight = check_weight(canary_percent)
        self._begin()
        old_stable, old_canary = self._replicas(self.stable_ref), self._replicas(self.canary_ref)
        total = self.cfg.totalReplicas or old_stable + old_canary
        if total == 0:
            raise RouterError(
                f"{self.stable_ref} and {self.canary_ref} have 0 replicas; set "
                "spec.router.totalReplicas"
            )
        new_stable, new_canary = split_replicas(total, weight)
        plan = [(self.canary_ref, old_canary, new_canary),
                (self.stable_ref, old_stable, new_stable)]
        if new_canary < old_canary:
            plan.reverse()  # grow first, shrink second: capacity never dips
        done: list[tuple[ObjectRef, int]] = []
        for ref, old, new in plan:
            try:
                self._scale(ref, new)
            except Fenced:
                raise  # a later owner writes both: no undo (it would be refused as well)
            except RouterError as e:
                undo_errors = []
                for done_ref, done_old in done:
                    try:
                        self._scale(done_ref, done_old)
                    except RouterError as undo:
                        undo_errors.append(str(undo))
                if undo_errors:
                    raise RouterError(
                        f"{e}; and putting {done[0][0]} back to {done[0][1]} replicas failed "
                        f"too: {'; '.join(undo_errors)}. Check both Deployments by hand"
                    ) from None
                raise RouterError(
                    f"{e} (the other Deployment was put back; replicas are as before)"
                ) from None
            done.append((ref, old))

    def set_header_route(self, match: dict[str, str] | None) -> None:
        if check_match(match) is not None:
            raise self._unsupported("route by header or cookie (a Service balances by pod)")
        self._begin()

    def set_mirror(self, percent: float | None) -> None:
        if check_mirror(percent) is not None:
            raise self._unsupported("mirror traffic")
        self._begin()

    def reset(self) -> None:
        self.set_weight(0)
