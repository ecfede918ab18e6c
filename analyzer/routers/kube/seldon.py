"""Seldon Core (v1) router: SeldonDeployment `spec.predictors[].traffic` and `shadow`.

Owns the `traffic` and `shadow` fields of the stable and the canary predictor (both must
exist: the router never invents a model graph). Traffic always sums to 100; another predictor
carrying traffic makes the router refuse. Mirroring sets `shadow: true` on the canary
predictor, which then receives a copy of every request: Seldon mirrors all or nothing, so
only 100% mirroring is accepted. Seldon cannot route by header.
"""

from __future__ import annotations

from typing import Any

from analyzer.policy import Policy
from analyzer.policy import SeldonRouter as SeldonConfig
from analyzer.routers.arguments import KEEP
from analyzer.routers.base import RouterError, TrafficSplit
from analyzer.routers.kube.objects import KubeObjects, ObjectRef, SingleObjectRouter
from analyzer.routers.kube.routing import as_dict, as_list

API_VERSION = "machinelearning.seldon.io/v1"
VERSIONS = ("v1", "v1alpha3", "v1alpha2")
PERMISSIONS = (("machinelearning.seldon.io", "seldondeployments", ("get", "patch")),)


class SeldonRouter(SingleObjectRouter):
    provider = "seldon"

    def __init__(self, policy: Policy, objects: KubeObjects) -> None:
        super().__init__(objects)
        cfg = policy.spec.router
        assert isinstance(cfg, SeldonConfig)
        self.stable = cfg.stablePredictor or policy.spec.target.stable
        self.canary = cfg.canaryPredictor or policy.spec.target.canary
        self.ref = ObjectRef(API_VERSION, "SeldonDeployment", "seldondeployments",
                             policy.spec.target.namespace, cfg.seldonDeployment,
                             versions=VERSIONS)

    def _predictors(self, obj: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        where = self.ref.as_read(obj)
        preds = [p for p in as_list(as_dict(obj.get("spec")).get("predictors"))
                 if isinstance(p, dict)]
        by_name = {p.get("name"): p for p in preds}
        missing = [n for n in (self.stable, self.canary) if n not in by_name]
        if missing:
            raise RouterError(
                f"{where}: predictor(s) {', '.join(map(str, missing))} not found (it has "
                f"{', '.join(str(n) for n in by_name) or 'none'}); add the canary predictor "
                "or set stablePredictor/canaryPredictor"
            )
        for p in preds:
            if p.get("name") not in (self.stable, self.canary) and (p.get("traffic") or 0) and (
                not p.get("shadow")
            ):
                raise RouterError(
                    f"{where}: predictor {p.get('name')} carries {p['traffic']}% the policy "
                    "does not own; traffic must sum to 100, move it to 0 first"
                )
        return by_name[self.stable], by_name[self.canary]

    def _apply(self, obj: dict[str, Any], weight: Any, match: Any, mirror: Any) -> None:
        if match not in (KEEP, None):
            raise self._unsupported("route by header or cookie")
        where = self.ref.as_read(obj)
        stable, canary = self._predictors(obj)
        if mirror not in (KEEP, None) and mirror != 100:
            raise RouterError(
                f"{where}: Seldon shadows copy every request; mirror percent must be 100, "
                f"got {mirror:g}"
            )
        shadow = bool(canary.get("shadow")) if mirror is KEEP else mirror is not None
        if weight is KEEP:
            weight = 0 if shadow else int(canary.get("traffic") or 0)
        if shadow and weight:
            raise RouterError(
                f"{where}: predictor {self.canary} is a shadow (mirroring); remove the "
                "mirror before giving it live traffic"
            )
        stable["traffic"] = 100 - weight
        canary["traffic"] = weight
        if shadow:
            canary["shadow"] = True
        else:
            canary.pop("shadow", None)

    def _split(self, obj: dict[str, Any]) -> TrafficSplit:
        _, canary = self._predictors(obj)
        shadow = bool(canary.get("shadow"))
        weight = 0 if shadow else int(canary.get("traffic") or 0)
        return TrafficSplit(canary_weight=weight, mirror_percent=100.0 if shadow else None)
