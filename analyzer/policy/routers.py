"""`spec.router`: one configuration block per traffic provider.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
    model_validator,
)

from analyzer.policy.base import (
    K8sName,
    Model,
)

# --------------------------------------------------------------------------- routers


class IstioRouter(Model):
    """Istio VirtualService weights over DestinationRule subsets (or two hosts)."""

    provider: Literal["istio"]
    virtualService: K8sName
    routes: list[str] | None = Field(
        default=None,
        description="names of the http routes to manage; default: every route that sends "
        "traffic to the stable destination",
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
        return self


class NginxIngressRouter(Model):
    """NGINX Ingress: a second Ingress with `nginx.ingress.kubernetes.io/canary*` annotations."""

    provider: Literal["nginx-ingress"]
    ingress: K8sName = Field(description="the stable Ingress")
    canaryIngress: K8sName | None = Field(
        default=None,
        description="the canary Ingress; default: '<ingress>-canary', created when absent",
    )
    canaryService: K8sName = Field(description="the Service the canary Ingress sends traffic to")


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
    rules: list[int] | None = Field(
        default=None,
        description="indexes of the rules to manage; default: every rule naming stableService",
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
    | KubernetesRouter
    | GatewayApiRouter
    | SmiRouter
    | NginxLocalRouter
    | DryRunRouter,
    Field(discriminator="provider"),
]
PROVIDERS = (
    "istio", "nginx-ingress", "knative", "seldon", "kubernetes", "gateway-api", "smi", "nginx",
    "dry-run",
)
