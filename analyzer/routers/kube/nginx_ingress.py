"""NGINX Ingress router: the canary Ingress and its `<prefix>/canary*` annotations.

`<prefix>` is the controller's `--annotations-prefix` (policy `annotationPrefix`, default
`nginx.ingress.kubernetes.io`). The stable Ingress is only read, never written. The canary
Ingress (default `<ingress>-canary`) is created when absent: the stable Ingress' class, TLS and
rules, with every backend that points at the rolled-out service (target.service; or all backends
when the stable Ingress routes to one service only) pointed at `canaryService`. On an existing
canary Ingress only these annotations are written; other annotations, labels and rules stay:

    <prefix>/canary: "true"
    <prefix>/canary-weight: "<w of total>"     (total: canary-weight-total when above 100, kept)
    <prefix>/canary-by-header + canary-by-header-value | canary-by-header-pattern  (A/B)
    <prefix>/canary-by-cookie                                                    (A/B)
    <prefix>/affinity-canary-behavior: sticky | legacy   (when the stable Ingress has affinity)

Weights: ingress-nginx routes to the canary when `random(total) <= canary-weight`, where total
is `canary-weight-total` if above 100, else 100 (balancer.lua); Argo Rollouts writes the total
(its maxTrafficWeight). The router reads and writes in that total and never changes it.

Sticky sessions use the controller's own session affinity: with `<prefix>/affinity: cookie` on
the stable Ingress, ingress-nginx gives the canary backend the same affinity unless the canary
Ingress says `affinity-canary-behavior: legacy`, and a user whose cookie names a backend stays on
it before any weight is drawn. So the router writes `sticky` while a policy with stickySessions
has weight > 0, and `legacy` otherwise (a rollback then reaches the users the canary served:
affinity would keep them there at weight 0). Without affinity on the stable Ingress the key is
not written, and stickySessions is refused.

NGINX Ingress cannot mirror to a canary; reset leaves the canary Ingress at weight 0 (it is not
deleted, so no delete permission is needed).
"""

from __future__ import annotations

import copy
from typing import Any

from analyzer.policy import NginxIngressRouter as NginxIngressConfig
from analyzer.policy import Policy
from analyzer.routers.arguments import KEEP, check_match, check_mirror, check_weight
from analyzer.routers.base import RouterError, TrafficSplit
from analyzer.routers.kube.objects import KubeObjects, KubeRouter, ObjectRef, shape_errors
from analyzer.routers.kube.routing import as_dict, as_list, percent_of, round_half_up

API_VERSION = "networking.k8s.io/v1"
DEFAULT_PREFIX = "nginx.ingress.kubernetes.io"
# The keys under the default prefix (a policy's annotationPrefix replaces it).
CANARY = f"{DEFAULT_PREFIX}/canary"
WEIGHT = f"{DEFAULT_PREFIX}/canary-weight"
BY_HEADER = f"{DEFAULT_PREFIX}/canary-by-header"
BY_HEADER_VALUE = f"{DEFAULT_PREFIX}/canary-by-header-value"
BY_COOKIE = f"{DEFAULT_PREFIX}/canary-by-cookie"
AB_KEYS = ("canary-by-header", "canary-by-header-value", "canary-by-header-pattern",
           "canary-by-cookie")
PERMISSIONS = (("networking.k8s.io", "ingresses", ("get", "patch", "create")),)


class NginxIngressRouter(KubeRouter):
    provider = "nginx-ingress"

    def __init__(self, policy: Policy, objects: KubeObjects) -> None:
        super().__init__(objects)
        cfg = policy.spec.router
        assert isinstance(cfg, NginxIngressConfig)
        self.cfg = cfg
        self.service = policy.spec.target.service
        ns = policy.spec.target.namespace
        self.stable_ref = ObjectRef(API_VERSION, "Ingress", "ingresses", ns, cfg.ingress)
        self.ref = ObjectRef(API_VERSION, "Ingress", "ingresses", ns,
                             cfg.canaryIngress or f"{cfg.ingress}-canary")

    def key(self, name: str) -> str:
        return f"{self.cfg.annotationPrefix}/{name}"

    # ------------------------------------------------------------------ building the canary

    def _new_canary(self, stable: dict[str, Any]) -> dict[str, Any]:
        spec = as_dict(stable.get("spec"))
        rules = copy.deepcopy(as_list(spec.get("rules")))
        backends = [as_dict(as_dict(p).get("backend")).get("service") for r in rules
                    for p in as_list(as_dict(as_dict(r).get("http")).get("paths"))]
        backends = [b for b in backends if isinstance(b, dict)]
        names = {b.get("name") for b in backends if b.get("name")}
        if not backends:
            raise RouterError(f"{self.stable_ref} has no rules with http paths to copy")
        if self.service in names:
            chosen = self.service
        elif len(names) == 1:
            chosen = next(iter(names))
        else:
            raise RouterError(
                f"{self.stable_ref} routes to services {sorted(map(str, names))} and none is "
                f"the target service {self.service!r}; create the canary Ingress "
                f"{self.ref.name} yourself"
            )
        for b in backends:
            if b.get("name") == chosen:
                b["name"] = self.cfg.canaryService
        new_spec: dict[str, Any] = {}
        for key in ("ingressClassName", "tls"):
            if key in spec:
                new_spec[key] = copy.deepcopy(spec[key])
        new_spec["rules"] = rules
        meta: dict[str, Any] = {"name": self.ref.name, "namespace": self.ref.namespace,
                                "annotations": {self.key("canary"): "true",
                                                self.key("canary-weight"): "0"}}
        stable_meta = as_dict(stable.get("metadata"))
        if stable_meta.get("labels"):
            meta["labels"] = copy.deepcopy(stable_meta["labels"])
        # The ingress class may also be given the old way, as an annotation.
        old_class = as_dict(stable_meta.get("annotations")).get("kubernetes.io/ingress.class")
        if old_class:
            meta["annotations"]["kubernetes.io/ingress.class"] = old_class
        return {"apiVersion": API_VERSION, "kind": "Ingress", "metadata": meta, "spec": new_spec}

    def _check_canary(self, obj: dict[str, Any]) -> None:
        services = {
            as_dict(as_dict(as_dict(p).get("backend")).get("service")).get("name")
            for r in as_list(as_dict(obj.get("spec")).get("rules"))
            for p in as_list(as_dict(as_dict(r).get("http")).get("paths"))
        }
        if self.cfg.canaryService not in services:
            raise RouterError(
                f"{self.ref} exists but sends no path to canaryService "
                f"{self.cfg.canaryService!r} (it names {sorted(str(s) for s in services if s)}); "
                "fix spec.router.canaryService or that Ingress"
            )

    def _check_prefix(self, ann: dict[str, Any]) -> None:
        """Canary annotations under another prefix: the controller reads those, not ours."""
        others = sorted({k.rpartition("/")[0] for k in ann if k.endswith("/canary")
                         and k.rpartition("/")[0] != self.cfg.annotationPrefix})
        if others and self.key("canary") not in ann:
            raise RouterError(
                f"{self.ref} carries canary annotations under the prefix {others[0]!r}, not "
                f"{self.cfg.annotationPrefix!r}; set spec.router.annotationPrefix to the "
                "controller's --annotations-prefix")

    def _total(self, ann: dict[str, Any]) -> int:
        """ingress-nginx's weight total: canary-weight-total when above 100, else 100."""
        raw = ann.get(self.key("canary-weight-total"))
        if raw is None:
            return 100
        try:
            total = int(str(raw))
        except ValueError:
            raise RouterError(f"{self.ref}: {self.key('canary-weight-total')} is {raw!r}, not "
                              "an integer") from None
        return total if total > 100 else 100

    def _affinity(self, stable: dict[str, Any] | None) -> bool:
        ann = as_dict(as_dict(as_dict(stable).get("metadata")).get("annotations"))
        return ann.get(self.key("affinity")) == "cookie"

    # ------------------------------------------------------------------ the change

    def _apply(self, obj: dict[str, Any], weight: Any, match: Any, affinity: bool) -> None:
        self._check_canary(obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta.get("annotations"), dict):
            meta["annotations"] = {}
        ann = meta["annotations"]
        self._check_prefix(ann)
        ann[self.key("canary")] = "true"
        total = self._total(ann)
        if weight is not KEEP:
            ann[self.key("canary-weight")] = str(round_half_up(weight * total / 100))
        elif self.key("canary-weight") not in ann:
            ann[self.key("canary-weight")] = "0"
        if match is not KEEP:
            for k in AB_KEYS:
                ann.pop(self.key(k), None)
            if match is not None and "cookie" in match:
                ann[self.key("canary-by-cookie")] = match["cookie"]
            elif match is not None:
                ann[self.key("canary-by-header")] = match["header"]
                if "pattern" in match:  # ignored by the controller when -value is set
                    ann[self.key("canary-by-header-pattern")] = match["pattern"]
                else:
                    ann[self.key("canary-by-header-value")] = match["value"]
        if affinity:
            live = self._read_weight(ann) > 0
            behaviour = "sticky" if self.cfg.stickySessions and live else "legacy"
            ann[self.key("affinity-canary-behavior")] = behaviour

    def _update(self, weight: Any = KEEP, match: Any = KEEP) -> None:
        self._begin()
        # Read for its affinity; a missing stable Ingress only matters when creating the canary.
        stable = self.objects.read(self.stable_ref, missing_ok=True)
        affinity = self._affinity(stable)
        if self.cfg.stickySessions and not affinity and weight not in (KEEP, 0):
            raise RouterError(
                f"{self.stable_ref}: sticky sessions use ingress-nginx session affinity, and "
                f"this Ingress has none: add the annotations {self.key('affinity')}: cookie "
                f"(and {self.key('session-cookie-max-age')}) to it, or drop stickySessions")
        # At most two rounds: a concurrent creator makes our create answer AlreadyExists,
        # and then we update what they created.
        for _ in range(2):
            if self.objects.read(self.ref, missing_ok=True) is None:
                if weight in (KEEP, 0) and match in (KEEP, None):
                    return  # nothing to route to the canary: no need to create it
                if stable is None:
                    self.objects.read(self.stable_ref)  # raises: it does not exist
                assert stable is not None
                body = self._new_canary(stable)
                with shape_errors(self.ref, "nothing was applied"):
                    self._apply(body, weight, match, affinity)
                if self.objects.create(self.ref, body) is not None:
                    return
                continue
            self.objects.update(self.ref, lambda obj: self._apply(obj, weight, match, affinity))
            return
        raise RouterError(f"{self.ref} appeared and vanished while we wrote it; try again")

    # ------------------------------------------------------------------ protocol

    def _read_weight(self, ann: dict[str, Any]) -> int:
        raw = ann.get(self.key("canary-weight"), "0")
        try:
            weight = int(str(raw))
        except ValueError:
            raise RouterError(
                f"{self.ref}: {self.key('canary-weight')} is {raw!r}, not a number") from None
        total = self._total(ann)
        return min(100, max(0, percent_of(weight, total)))

    def get_weight(self) -> TrafficSplit:
        obj = self.objects.read(self.ref, missing_ok=True)
        if obj is None:
            self.objects.read(self.stable_ref)  # a missing stable Ingress is an error
            return TrafficSplit(canary_weight=0)
        ann = as_dict(as_dict(obj.get("metadata")).get("annotations"))
        self._check_prefix(ann)
        if ann.get(self.key("canary")) != "true":
            return TrafficSplit(canary_weight=0)
        header = None
        if ann.get(self.key("canary-by-cookie")):
            header = {"cookie": str(ann[self.key("canary-by-cookie")])}
        elif ann.get(self.key("canary-by-header")):
            name = str(ann[self.key("canary-by-header")])
            if ann.get(self.key("canary-by-header-value")):
                header = {"header": name, "value": str(ann[self.key("canary-by-header-value")])}
            elif ann.get(self.key("canary-by-header-pattern")):
                header = {"header": name,
                          "pattern": str(ann[self.key("canary-by-header-pattern")])}
            else:  # the header alone: its values "always" / "never" decide
                header = {"header": name, "value": "always"}
        behaviour = ann.get(self.key("affinity-canary-behavior"))
        sticky = "ingress-nginx session affinity" if behaviour == "sticky" else None
        return TrafficSplit(canary_weight=self._read_weight(ann), header_route=header,
                            sticky=sticky)

    def set_weight(self, canary_percent: int) -> None:
        self._update(weight=check_weight(canary_percent))

    def set_header_route(self, match: dict[str, str] | None) -> None:
        self._update(match=check_match(match))

    def set_mirror(self, percent: float | None) -> None:
        if check_mirror(percent) is not None:
            raise self._unsupported("mirror traffic (NGINX Ingress canaries take live traffic)")
        self._begin()

    def reset(self) -> None:
        self._update(weight=0, match=None)
