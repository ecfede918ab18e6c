"""Knative Serving router: Service `spec.traffic[]` percents pinned by `revisionName`.

Owns two traffic targets: `{revisionName: <stable>, tag: <stableTag>, percent: 100-w,
latestRevision: false}` and the same for the canary (the tags give each revision its own URL,
`<tag>-<service>.<domain>`, so the canary can be checked before it takes live traffic).
Percents always sum to 100. A `latestRevision: true` target that carries traffic (Knative's
default, `[{latestRevision: true, percent: 100}]`) is taken over: its share moves to the pinned
targets (it stays, at percent 0, when it has a tag). Any other target that carries traffic makes
the router refuse (the sum could not stay 100); targets without traffic stay as they are.

A/B: Knative routes by header only through the tag header (feature flag
`tag-header-based-routing`): the match must be `Knative-Serving-Tag: <canaryTag>`.
Knative cannot mirror.
"""

from __future__ import annotations

from typing import Any

from analyzer.policy import KnativeRouter as KnativeConfig
from analyzer.policy import Policy
from analyzer.routers.base import RouterError, TrafficSplit
from analyzer.routers.kube.objects import KEEP, KubeObjects, ObjectRef, SingleObjectRouter

API_VERSION = "serving.knative.dev/v1"
TAG_HEADER = "knative-serving-tag"
PERMISSIONS = (("serving.knative.dev", "services", ("get", "patch")),)


class KnativeRouter(SingleObjectRouter):
    provider = "knative"

    def __init__(self, policy: Policy, objects: KubeObjects) -> None:
        super().__init__(objects)
        cfg = policy.spec.router
        assert isinstance(cfg, KnativeConfig)
        self.cfg = cfg
        self.stable = cfg.stableRevision or policy.spec.target.stable
        self.canary = cfg.canaryRevision or policy.spec.target.canary
        self.ref = ObjectRef(API_VERSION, "Service", "services", policy.spec.target.namespace,
                             cfg.knativeService)

    def _ours(self, t: dict[str, Any]) -> str | None:
        if t.get("latestRevision") is True:
            return None
        if t.get("revisionName") == self.stable:
            return "stable"
        if t.get("revisionName") == self.canary:
            return "canary"
        return None

    def _apply(self, obj: dict[str, Any], weight: Any, match: Any, mirror: Any) -> None:
        if mirror not in (KEEP, None):
            raise self._unsupported("mirror traffic")
        if match not in (KEEP, None) and (
            match.get("header", "").lower() != TAG_HEADER
            or match.get("value") != self.cfg.canaryTag
        ):
            raise RouterError(
                f"{self.ref}: Knative routes by header only via 'Knative-Serving-Tag: "
                f"{self.cfg.canaryTag}' (feature flag tag-header-based-routing), not {match}"
            )
        spec = obj.setdefault("spec", {})
        traffic: list[dict[str, Any]] = spec.setdefault("traffic", [])
        if not isinstance(traffic, list):
            raise RouterError(f"{self.ref}: spec.traffic is not a list")
        for t in traffic:
            owner = self._ours(t)
            tag = t.get("tag")
            if owner is None and tag in (self.cfg.stableTag, self.cfg.canaryTag):
                raise RouterError(
                    f"{self.ref}: traffic target {t} already uses the tag {tag!r}; tags must "
                    "be unique, change stableTag/canaryTag in the policy"
                )
            if owner is None and t.get("latestRevision") is not True and (t.get("percent") or 0):
                raise RouterError(
                    f"{self.ref}: traffic target {t} carries {t['percent']}% the policy does "
                    "not own; percents must sum to 100, move it to 0 first"
                )
        if weight is KEEP and match in (KEEP, None):
            return  # removing the tag-header route changes nothing: the tag stays
        current = self._weights(traffic)
        w = current if weight is KEEP else weight
        if weight is KEEP and current is None:
            w = 0
        # Take over the latest-revision default: its share moves to the pinned targets.
        kept: list[dict[str, Any]] = []
        for t in traffic:
            if t.get("latestRevision") is True and (t.get("percent") or 0):
                if not t.get("tag"):
                    continue
                t["percent"] = 0
            kept.append(t)
        for which, rev, tag, pct in (("stable", self.stable, self.cfg.stableTag, 100 - w),
                                     ("canary", self.canary, self.cfg.canaryTag, w)):
            mine = [t for t in kept if self._ours(t) == which]
            if not mine:
                kept.append({"revisionName": rev, "tag": tag, "percent": pct,
                             "latestRevision": False})
                continue
            mine[0].update(percent=pct, tag=tag, latestRevision=False)
            for extra in mine[1:]:  # duplicate entries for one revision would double count
                kept.remove(extra)
        traffic[:] = kept

    def _weights(self, traffic: list[dict[str, Any]]) -> int | None:
        ours = [t for t in traffic if self._ours(t)]
        if not ours:
            return None
        return sum(int(t.get("percent") or 0) for t in ours if self._ours(t) == "canary")

    def _split(self, obj: dict[str, Any]) -> TrafficSplit:
        traffic = (obj.get("spec") or {}).get("traffic") or []
        weight = self._weights(traffic)
        if weight is None:
            # Not pinned yet: the canary has traffic only if it is the latest revision target.
            weight = 0
        return TrafficSplit(canary_weight=weight)
