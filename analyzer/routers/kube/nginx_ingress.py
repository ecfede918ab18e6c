"""NGINX Ingress router: the canary Ingress and its `nginx.ingress.kubernetes.io/canary*`
annotations.

The stable Ingress is only read, never written. The canary Ingress (default `<ingress>-canary`)
is created when absent: the stable Ingress' class, TLS and rules, with every backend that
points at the rolled-out service (target.service; or all backends when the stable Ingress
routes to one service only) pointed at `canaryService`. On an existing canary Ingress only the
annotations below are written; other annotations, labels and rules stay as they were:

    nginx.ingress.kubernetes.io/canary: "true"
    nginx.ingress.kubernetes.io/canary-weight: "<w>"
    nginx.ingress.kubernetes.io/canary-by-header / canary-by-header-value  (A/B by header)
    nginx.ingress.kubernetes.io/canary-by-cookie                            (A/B by cookie)

NGINX Ingress cannot mirror to a canary; reset leaves the canary Ingress at weight 0 (it is
not deleted, so no delete permission is needed).
"""

from __future__ import annotations

import copy
from typing import Any

from analyzer.policy import NginxIngressRouter as NginxIngressConfig
from analyzer.policy import Policy
from analyzer.routers.base import RouterError, TrafficSplit
from analyzer.routers.kube.objects import (
    KEEP,
    KubeObjects,
    KubeRouter,
    ObjectRef,
    check_match,
    check_mirror,
    check_weight,
)

API_VERSION = "networking.k8s.io/v1"
PREFIX = "nginx.ingress.kubernetes.io/"
CANARY = PREFIX + "canary"
WEIGHT = PREFIX + "canary-weight"
BY_HEADER = PREFIX + "canary-by-header"
BY_HEADER_VALUE = PREFIX + "canary-by-header-value"
BY_COOKIE = PREFIX + "canary-by-cookie"
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

    # ------------------------------------------------------------------ building the canary

    def _new_canary(self) -> dict[str, Any]:
        stable = self.objects.read(self.stable_ref)
        assert stable is not None
        spec = stable.get("spec") or {}
        rules = copy.deepcopy(spec.get("rules") or [])
        backends = [p.get("backend", {}).get("service", {})
                    for r in rules for p in ((r.get("http") or {}).get("paths") or [])]
        names = {b.get("name") for b in backends if b.get("name")}
        if not backends:
            raise RouterError(f"{self.stable_ref} has no rules with http paths to copy")
        if self.service in names:
            chosen = self.service
        elif len(names) == 1:
            chosen = next(iter(names))
        else:
            raise RouterError(
                f"{self.stable_ref} routes to services {sorted(names)} and none is the target "
                f"service {self.service!r}; create the canary Ingress {self.ref.name} yourself"
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
                                "annotations": {CANARY: "true", WEIGHT: "0"}}
        if (stable.get("metadata") or {}).get("labels"):
            meta["labels"] = copy.deepcopy(stable["metadata"]["labels"])
        # The ingress class may also be given the old way, as an annotation.
        old_class = ((stable.get("metadata") or {}).get("annotations") or {}).get(
            "kubernetes.io/ingress.class")
        if old_class:
            meta["annotations"]["kubernetes.io/ingress.class"] = old_class
        return {"apiVersion": API_VERSION, "kind": "Ingress", "metadata": meta, "spec": new_spec}

    def _check_canary(self, obj: dict[str, Any]) -> None:
        services = {
            (p.get("backend") or {}).get("service", {}).get("name")
            for r in (obj.get("spec") or {}).get("rules") or []
            for p in ((r.get("http") or {}).get("paths") or [])
        }
        if self.cfg.canaryService not in services:
            raise RouterError(
                f"{self.ref} exists but sends no path to canaryService "
                f"{self.cfg.canaryService!r} (it names {sorted(s for s in services if s)}); "
                "fix spec.router.canaryService or that Ingress"
            )

    # ------------------------------------------------------------------ the change

    def _apply(self, obj: dict[str, Any], weight: Any, match: Any) -> None:
        self._check_canary(obj)
        ann = obj.setdefault("metadata", {}).setdefault("annotations", {})
        ann[CANARY] = "true"
        if weight is not KEEP:
            ann[WEIGHT] = str(weight)
        elif WEIGHT not in ann:
            ann[WEIGHT] = "0"
        if match is not KEEP:
            for key in (BY_HEADER, BY_HEADER_VALUE, BY_COOKIE):
                ann.pop(key, None)
            if match is not None and "cookie" in match:
                ann[BY_COOKIE] = match["cookie"]
            elif match is not None:
                ann[BY_HEADER] = match["header"]
                ann[BY_HEADER_VALUE] = match["value"]

    def _update(self, weight: Any = KEEP, match: Any = KEEP) -> None:
        self._begin()
        # At most two rounds: a concurrent creator makes our create answer AlreadyExists,
        # and then we update what they created.
        for _ in range(2):
            if self.objects.read(self.ref, missing_ok=True) is None:
                if weight in (KEEP, 0) and match in (KEEP, None):
                    return  # nothing to route to the canary: no need to create it
                body = self._new_canary()
                self._apply(body, weight, match)
                if self.objects.create(self.ref, body) is not None:
                    return
                continue
            self.objects.update(self.ref, lambda obj: self._apply(obj, weight, match))
            return
        raise RouterError(f"{self.ref} appeared and vanished while we wrote it; try again")

    # ------------------------------------------------------------------ protocol

    def get_weight(self) -> TrafficSplit:
        obj = self.objects.read(self.ref, missing_ok=True)
        if obj is None:
            self.objects.read(self.stable_ref)  # a missing stable Ingress is an error
            return TrafficSplit(canary_weight=0)
        ann = (obj.get("metadata") or {}).get("annotations") or {}
        if ann.get(CANARY) != "true":
            return TrafficSplit(canary_weight=0)
        try:
            weight = int(ann.get(WEIGHT, "0"))
        except ValueError:
            raise RouterError(
                f"{self.ref}: {WEIGHT} is {ann.get(WEIGHT)!r}, not a number") from None
        header = None
        if ann.get(BY_COOKIE):
            header = {"cookie": ann[BY_COOKIE]}
        elif ann.get(BY_HEADER):
            header = {"header": ann[BY_HEADER], "value": ann.get(BY_HEADER_VALUE, "always")}
        return TrafficSplit(canary_weight=weight, header_route=header)

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
