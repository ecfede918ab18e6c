"""Seldon Core 2 router: an `Experiment`'s candidate weights and mirror (mlops.seldon.io).

An Experiment splits the traffic of its `spec.default` model (or pipeline) between its
`candidates` by weight (each gets weight / sum of weights) and copies `mirror.percent`% of it
to the mirror, whose answers are discarded. Without `default` it serves a new endpoint
(`<experiment>.experiment`) and leaves the model's own traffic alone, so the router requires
`default` to be the stable model.

Owns, in the Experiment named in the policy (which the user creates; the router never creates or
deletes one):
- the `weight` of the stable and the canary candidate: 100-w and w; the canary candidate is
  added when w > 0 and removed at 0 (so the canary can be the mirror, Seldon refusing a name that
  is both); the stable one stays at weight 0 when w is 100 (`default` must be a candidate);
- `mirror` when it names the canary: {name: canary, percent} (whole percents: Seldon's Envoy
  mirror takes an integer percent); a mirror to another model is the user's and makes
  set_mirror refuse.
Another candidate carrying weight makes the router refuse; `default`, `resourceType` and the
Models/Pipelines are never changed. No header routing: a client can call the canary model
directly with the header `seldon-model: <canary>`. Sticky sessions are native: Seldon answers
with `x-seldon-route`, and a client that sends it back keeps its route.

Read back, a condition ExperimentReady or CandidatesReady `False` means Seldon does not run the
split (e.g. a candidate model is not ready, or another experiment already uses the default):
the canary's weight reads 0.
"""

from __future__ import annotations

from typing import Any

from analyzer.policy import Policy
from analyzer.policy import SeldonV2Router as SeldonV2Config
from analyzer.routers.arguments import KEEP
from analyzer.routers.base import RouterError, TrafficSplit
from analyzer.routers.kube.objects import KubeObjects, ObjectRef, SingleObjectRouter
from analyzer.routers.kube.routing import as_dict, as_list, percent_of

API_VERSION = "mlops.seldon.io/v1alpha1"
VERSIONS = ("v1alpha1",)
PERMISSIONS = (("mlops.seldon.io", "experiments", ("get", "patch")),)


class SeldonV2Router(SingleObjectRouter):
    provider = "seldon-v2"

    def __init__(self, policy: Policy, objects: KubeObjects) -> None:
        super().__init__(objects)
        cfg = policy.spec.router
        assert isinstance(cfg, SeldonV2Config)
        self.cfg = cfg
        self.stable = cfg.stableModel or policy.spec.target.stable
        self.canary = cfg.canaryModel or policy.spec.target.canary
        self.ref = ObjectRef(API_VERSION, "Experiment", "experiments",
                             policy.spec.target.namespace, cfg.experiment, versions=VERSIONS)

    def _spec(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The spec, checked: default is the stable model, the resource type is the policy's,
        no other candidate carries weight."""
        where = self.ref.as_read(obj)
        spec = obj.get("spec")
        if not isinstance(spec, dict) or not isinstance(spec.get("candidates", []), list):
            raise RouterError(f"{where}: spec.candidates is not a list")
        default = spec.get("default")
        if default != self.stable:
            what = "has no spec.default" if default is None else f"has default {default!r}"
            raise RouterError(
                f"{where} {what}: it does not split the live traffic of {self.stable!r} (an "
                f"Experiment without default serves a new endpoint {where.name}.experiment). "
                f"Set spec.default: {self.stable} (and a candidate {self.stable}), or point "
                "stableModel at the default")
        kind = spec.get("resourceType") or "model"
        if kind != self.cfg.resourceType:
            raise RouterError(f"{where} splits a {kind}, the policy's resourceType is "
                              f"{self.cfg.resourceType!r}; make them agree")
        for c in as_list(spec.get("candidates")):
            c = as_dict(c)
            if c.get("name") not in (self.stable, self.canary) and c.get("weight"):
                raise RouterError(
                    f"{where}: candidate {c.get('name')} carries weight {c['weight']} the "
                    "policy does not own; set it to 0 or remove it first")
        return spec

    def _candidate(self, spec: dict[str, Any], name: str) -> dict[str, Any] | None:
        return next((c for c in spec["candidates"]
                     if isinstance(c, dict) and c.get("name") == name), None)

    def _apply(self, obj: dict[str, Any], weight: Any, match: Any, mirror: Any) -> None:
        where = self.ref.as_read(obj)
        if match not in (KEEP, None):
            raise self._unsupported("route by header or cookie (a client can call the canary "
                                    "model directly with the header seldon-model: <canary>)")
        spec = self._spec(obj)
        candidates = spec.setdefault("candidates", [])
        current = as_dict(spec.get("mirror"))
        ours = current.get("name") == self.canary
        if mirror is not KEEP:
            if mirror is not None and mirror != int(mirror):
                raise RouterError(f"{where}: Seldon Core 2 mirrors whole percents, not "
                                  f"{mirror:g}")
            if current and not ours and mirror is not None:
                raise RouterError(f"{where} already mirrors to {current.get('name')!r}; an "
                                  "Experiment has one mirror: remove it first")
            if mirror is None and ours:
                spec.pop("mirror")
            elif mirror is not None:
                spec["mirror"] = {"name": self.canary, "percent": int(mirror)}
        mirrored = as_dict(spec.get("mirror")).get("name") == self.canary
        if weight is KEEP:  # the current share, as a percent of the two
            shares = [int(as_dict(self._candidate(spec, n)).get("weight") or 0)
                      for n in (self.stable, self.canary)]
            weight = percent_of(shares[1], sum(shares))
        if mirrored and weight:
            raise RouterError(f"{where}: {self.canary!r} is the mirror; remove the mirror before "
                              "giving it live traffic")
        stable = self._candidate(spec, self.stable)
        if stable is None:
            stable = {"name": self.stable, "weight": 0}
            candidates.insert(0, stable)
        stable["weight"] = 100 - weight
        canary = self._candidate(spec, self.canary)
        if weight == 0:
            if canary is not None:
                candidates.remove(canary)
        elif canary is None:
            candidates.append({"name": self.canary, "weight": weight})
        else:
            canary["weight"] = weight

    def _split(self, obj: dict[str, Any]) -> TrafficSplit:
        spec = self._spec(obj)
        weights = {as_dict(c).get("name"): int(as_dict(c).get("weight") or 0)
                   for c in as_list(spec.get("candidates"))}
        mirror = as_dict(spec.get("mirror"))
        conditions = {as_dict(c).get("type"): as_dict(c).get("status")
                      for c in as_list(as_dict(obj.get("status")).get("conditions"))}
        inactive = "False" in (conditions.get("ExperimentReady"), conditions.get("CandidatesReady"))
        weight = 0 if inactive else percent_of(weights.get(self.canary, 0),
                                               sum(weights.values()))
        mirrored = mirror.get("name") == self.canary and conditions.get("MirrorReady") != "False"
        return TrafficSplit(canary_weight=weight,
                            mirror_percent=float(mirror.get("percent", 0)) if mirrored else None)
