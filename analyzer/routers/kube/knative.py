"""Knative Serving router: Service `spec.traffic[]` percents pinned by `revisionName`.

Owns the `percent` and `latestRevision: false` of two traffic targets, the stable and the canary
revision's (each added when absent); percents always sum to 100. Tags are the user's: a target
keeps the tag it has (Knative's tags are stable per-target URLs, `<tag>-<service>.<domain>`);
`stableTag`/`canaryTag` are only given to a target without a tag, when no other target uses the
name. A second target of the same revision (another tag, another URL) stays, at percent 0.

A `latestRevision: true` target that carries traffic (Knative's default,
`[{latestRevision: true, percent: 100}]`, or Flagger's canary) is taken over: its share moves to
the pinned targets (it stays, at percent 0, when it has a tag). Read back, its share counts for
the revision it routes to (`status.latestReadyRevisionName`; without a status, for neither). Any
other target that carries traffic makes the router refuse; targets without traffic stay.

A/B: Knative routes by header only through the tag header (feature flag
`tag-header-based-routing`): the match must be `Knative-Serving-Tag: <the canary's tag>`.
Knative cannot mirror.
"""

from __future__ import annotations

from typing import Any

from analyzer.policy import KnativeRouter as KnativeConfig
from analyzer.policy import Policy
from analyzer.routers.arguments import KEEP
from analyzer.routers.base import RouterError, TrafficSplit
from analyzer.routers.kube.objects import KubeObjects, ObjectRef, SingleObjectRouter
from analyzer.routers.kube.routing import as_dict, as_list

API_VERSION = "serving.knative.dev/v1"
VERSIONS = ("v1",)
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
                             cfg.knativeService, versions=VERSIONS)

    def _ours(self, t: Any) -> str | None:
        t = as_dict(t)
        if t.get("latestRevision") is True:
            return None
        if t.get("revisionName") == self.stable:
            return "stable"
        if t.get("revisionName") == self.canary:
            return "canary"
        return None

    def _free(self, traffic: list[Any], tag: str) -> bool:
        return all(as_dict(t).get("tag") != tag for t in traffic)

    def _canary_tag(self, traffic: list[Any]) -> str | None:
        """The tag the canary's target has, or will get; None when it will have none."""
        mine = [as_dict(t) for t in traffic if self._ours(t) == "canary"]
        tagged = [t["tag"] for t in mine if t.get("tag")]
        if tagged:
            return str(tagged[0])
        return self.cfg.canaryTag if self._free(traffic, self.cfg.canaryTag) else None

    def _apply(self, obj: dict[str, Any], weight: Any, match: Any, mirror: Any) -> None:
        where = self.ref.as_read(obj)
        if mirror not in (KEEP, None):
            raise self._unsupported("mirror traffic")
        spec = obj.setdefault("spec", {})
        traffic: list[Any] = spec.setdefault("traffic", [])
        if not isinstance(traffic, list) or not all(isinstance(t, dict) for t in traffic):
            raise RouterError(f"{where}: spec.traffic is not a list of traffic targets")
        tag = self._canary_tag(traffic)
        if match not in (KEEP, None) and (
            match.get("header", "").lower() != TAG_HEADER or match.get("value") != tag
        ):
            want = (f"'Knative-Serving-Tag: {tag}'" if tag else
                    f"a tag on the canary's target (the name {self.cfg.canaryTag!r} is taken: "
                    "set canaryTag)")
            raise RouterError(
                f"{where}: Knative routes by header only via {want} (feature flag "
                f"tag-header-based-routing), not {match}")
        for t in traffic:
            if self._ours(t) is None and t.get("latestRevision") is not True and (
                    t.get("percent") or 0):
                raise RouterError(
                    f"{where}: traffic target {t} carries {t['percent']}% the policy does "
                    "not own; percents must sum to 100, move it to 0 first"
                )
        if weight is KEEP and match in (KEEP, None):
            return  # removing the tag-header route changes nothing: the tag stays
        w = weight if weight is not KEEP else (self._weight(obj) or 0)
        # Take over the latest-revision default: its share moves to the pinned targets.
        kept: list[dict[str, Any]] = []
        for t in traffic:
            if t.get("latestRevision") is True and (t.get("percent") or 0):
                if not t.get("tag"):
                    continue
                t["percent"] = 0
            kept.append(t)
        for which, rev, default_tag, pct in (
                ("stable", self.stable, self.cfg.stableTag, 100 - w),
                ("canary", self.canary, self.cfg.canaryTag, w)):
            mine = [t for t in kept if self._ours(t) == which]
            if not mine:
                mine = [{"revisionName": rev, "percent": pct, "latestRevision": False}]
                kept.append(mine[0])
            mine[0].update(percent=pct, latestRevision=False)
            if not mine[0].get("tag") and self._free(kept, default_tag):
                mine[0]["tag"] = default_tag
            for extra in mine[1:]:  # another tag of the same revision: its URL stays, no share
                extra["percent"] = 0
        traffic[:] = kept

    def _latest(self, obj: dict[str, Any]) -> Any:
        """The revision `latestRevision: true` routes to: the latest READY one, which only the
        status knows (the template's revision may not be ready yet)."""
        return as_dict(obj.get("status")).get("latestReadyRevisionName")

    def _weight(self, obj: dict[str, Any]) -> int | None:
        """The canary's percent; None when neither revision has traffic or a target yet."""
        traffic = [as_dict(t) for t in as_list(as_dict(obj.get("spec")).get("traffic"))]
        latest = self._latest(obj)
        canary = sum(int(t.get("percent") or 0) for t in traffic if self._ours(t) == "canary")
        if latest == self.canary:
            canary += sum(int(t.get("percent") or 0) for t in traffic
                          if t.get("latestRevision") is True)
        if not any(self._ours(t) for t in traffic) and latest not in (self.stable, self.canary):
            return None
        return canary

    def _split(self, obj: dict[str, Any]) -> TrafficSplit:
        # Not pinned yet, and the latest revision is neither: the canary has no traffic.
        return TrafficSplit(canary_weight=self._weight(obj) or 0)
