"""`spec.router`: one configuration block per traffic provider.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from analyzer.policy.base import (
    Duration,
    K8sName,
    Model,
)

# --------------------------------------------------------------------------- shared blocks

# `http[2]`, `tls[0]`, `tcp[1]`: a route by position (the user's routes only, 0-based).
ROUTE_INDEX = re.compile(r"^(http|tls|tcp)\[(\d+)\]$")


class StickySessions(Model):
    """Sticky sessions during a weighted canary (Istio, Gateway API): a user the canary served
    once gets a cookie and keeps reaching the canary until it expires or the rollout ends; at
    rollback the cookie is expired and its holders go back to stable. See docs/routers.md."""

    cookieName: str = Field(
        default="canary-analyzer", pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$",
        description="name of the cookie that keeps a user on the canary",
    )
    maxAge: Duration = Field(
        default=timedelta(hours=24), description="lifetime of the cookie (Max-Age)"
    )

    @field_validator("maxAge")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v.total_seconds() < 1:
            raise ValueError("maxAge must be at least 1s")
        return v


class IstioDestination(Model):
    host: str = Field(min_length=1)
    subset: str | None = None


# --------------------------------------------------------------------------- routers


class IstioRouter(Model):
    """Istio VirtualService weights over DestinationRule subsets (or two hosts)."""

    provider: Literal["istio"]
    virtualService: K8sName
    routes: list[str] | None = Field(
        default=None, min_length=1,
        description="the routes to manage: http route names, or `http[N]`, `tls[N]`, "
        "`tcp[N]` (N counts the VirtualService's own routes from 0, not the ones the analyzer "
        "adds); default: the one route that sends traffic to the stable destination (with "
        "more than one such route, the router refuses and lists them)",
    )
    keepDestinations: list[IstioDestination] = Field(
        default_factory=list,
        description="other weighted destinations of the managed routes whose weight is kept "
        "(stable gets 100 - canary - theirs)",
    )
    stickySessions: StickySessions | None = Field(
        default=None, description="keep users the canary served on the canary (canary strategy)"
    )
    destinationRule: K8sName | None = Field(
        default=None, description="DestinationRule holding the subsets (subset mode)"
    )
    host: str | None = Field(
        default=None,
        description="destination host of both subsets (subset mode); default: the service",
    )
    stableSubset: str | None = Field(default=None, description="subset mode: stable subset name")
    canarySubset: str | None = Field(default=None, description="subset mode: canary subset name")
    stableHost: str | None = Field(default=None, description="two-host mode: stable host")
    canaryHost: str | None = Field(default=None, description="two-host mode: canary host")

    @model_validator(mode="after")
    def _mode(self) -> IstioRouter:
        subsets = self.stableSubset is not None or self.canarySubset is not None
        hosts = self.stableHost is not None or self.canaryHost is not None
        if subsets and hosts:
            raise ValueError(
                "give either stableSubset/canarySubset or stableHost/canaryHost, not both"
            )
        if not subsets and not hosts:
            raise ValueError(
                "missing destinations: give stableSubset and canarySubset (with a "
                "destinationRule), or stableHost and canaryHost"
            )
        if subsets and (self.stableSubset is None or self.canarySubset is None):
            raise ValueError("subset mode needs both stableSubset and canarySubset")
        if hosts and (self.stableHost is None or self.canaryHost is None):
            raise ValueError("two-host mode needs both stableHost and canaryHost")
        if hosts and self.host is not None:
            raise ValueError("host applies to subset mode; two-host mode uses stableHost and "
                             "canaryHost")
        return self

    @field_validator("routes")
    @classmethod
    def _route_names(cls, routes: list[str] | None) -> list[str] | None:
        for r in routes or []:
            if not r or (("[" in r or "]" in r) and not ROUTE_INDEX.match(r)):
                raise ValueError(f"route {r!r}: give an http route name or http[N], tls[N], "
                                 "tcp[N]")
        if routes is not None and len(set(routes)) != len(routes):
            raise ValueError("routes are listed twice")
        return routes


class NginxIngressRouter(Model):
    """NGINX Ingress: a second Ingress with `nginx.ingress.kubernetes.io/canary*` annotations."""

    provider: Literal["nginx-ingress"]
    ingress: K8sName = Field(description="the stable Ingress")
    canaryIngress: K8sName | None = Field(
        default=None,
        description="the canary Ingress; default: '<ingress>-canary', created when absent",
    )
    canaryService: K8sName = Field(description="the Service the canary Ingress sends traffic to")
    annotationPrefix: str = Field(
        default="nginx.ingress.kubernetes.io",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        description="the controller's --annotations-prefix",
    )
    stickySessions: bool = Field(
        default=False,
        description="users the canary served stay on it (ingress-nginx session affinity: the "
        "stable Ingress must set `<prefix>/affinity: cookie`); canary strategy",
    )


class KnativeRouter(Model):
    """Knative Serving Service `spec.traffic` percents by revision name."""

    provider: Literal["knative"]
    knativeService: K8sName
    stableRevision: K8sName | None = Field(default=None, description="default: target.stable")
    canaryRevision: K8sName | None = Field(default=None, description="default: target.canary")
    stableTag: str = "stable"
    canaryTag: str = "canary"


class SeldonRouter(Model):
    """Seldon Core SeldonDeployment `spec.predictors[].traffic` (and `shadow` for mirroring)."""

    provider: Literal["seldon"]
    seldonDeployment: K8sName
    stablePredictor: K8sName | None = Field(default=None, description="default: target.stable")
    canaryPredictor: K8sName | None = Field(default=None, description="default: target.canary")


class SeldonV2Router(Model):
    """Seldon Core 2 `Experiment` (mlops.seldon.io): candidate weights and the mirror."""

    provider: Literal["seldon-v2"]
    experiment: K8sName = Field(
        description="the Experiment; its `default` must be the stable model (or pipeline)"
    )
    stableModel: K8sName | None = Field(default=None, description="default: target.stable")
    canaryModel: K8sName | None = Field(default=None, description="default: target.canary")
    resourceType: Literal["model", "pipeline"] = Field(
        default="model", description="what the Experiment splits (its spec.resourceType)"
    )


class KubernetesRouter(Model):
    """Replica ratio of two Deployments behind one Service (ratio = weight, total kept)."""

    provider: Literal["kubernetes"]
    stableDeployment: K8sName
    canaryDeployment: K8sName
    totalReplicas: int | None = Field(
        default=None, ge=1, description="replicas in all; default: what the two have now"
    )


class GatewayApiRouter(Model):
    """Gateway API HTTPRoute `rules[].backendRefs[].weight`."""

    provider: Literal["gateway-api"]
    httpRoute: K8sName
    stableService: K8sName
    canaryService: K8sName
    port: int | None = Field(default=None, ge=1, le=65535)
    rules: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None, min_length=1,
        description="indexes of the rules to manage (the HTTPRoute's own rules, from 0, not the "
        "ones the analyzer adds); default: the one rule with a backendRef to stableService "
        "(with more than one, the router refuses and lists them)",
    )
    stickySessions: StickySessions | None = Field(
        default=None, description="keep users the canary served on the canary (canary strategy)"
    )


class SmiRouter(Model):
    """SMI TrafficSplit `spec.backends[].weight`."""

    provider: Literal["smi"]
    trafficSplit: K8sName
    rootService: K8sName | None = Field(default=None, description="default: target.service")
    stableService: K8sName
    canaryService: K8sName


class NginxLocalRouter(Model):
    """Plain nginx without Kubernetes: a weighted `upstream` include, then `nginx -s reload`."""

    provider: Literal["nginx"]
    upstreamFile: str = Field(description="path of the upstream include file the router owns")
    upstreamName: str = Field(default="canary_backend", pattern=r"^[A-Za-z0-9_]+$")
    stableServer: str = Field(description="host:port of the stable version", pattern=r"^[^\s;{}]+$")
    canaryServer: str = Field(description="host:port of the canary version", pattern=r"^[^\s;{}]+$")
    nginxConfig: str | None = Field(
        default=None, description="main nginx.conf (for nginx -t / -s reload)"
    )
    nginxBinary: str = "nginx"


class DryRunRouter(Model):
    """Moves no traffic: records the weights it is given (the embedded default)."""

    provider: Literal["dry-run"]


RouterSpec = Annotated[
    IstioRouter
    | NginxIngressRouter
    | KnativeRouter
    | SeldonRouter
    | SeldonV2Router
    | KubernetesRouter
    | GatewayApiRouter
    | SmiRouter
    | NginxLocalRouter
    | DryRunRouter,
    Field(discriminator="provider"),
]
PROVIDERS = (
    "istio", "nginx-ingress", "knative", "seldon", "seldon-v2", "kubernetes", "gateway-api",
    "smi", "nginx", "dry-run",
)
