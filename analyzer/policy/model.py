"""The rollout policy model: target, decision rules, gates, notifications, and the `Policy`
that holds every block (routers.py, strategy.py, metrics.py, checks.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from analyzer.policy.base import (
    API_VERSION,
    KIND,
    Duration,
    HttpUrl,
    K8sName,
    LabelValue,
    Model,
    at_most,
)
from analyzer.policy.canary_ref import CanaryRef
from analyzer.policy.checks import Check, ErrorRateCheck, LatencyCheck, check_name
from analyzer.policy.metrics import MetricsSpec, SimulateSource, metrics_fit_problems
from analyzer.policy.routers import RouterSpec
from analyzer.policy.strategy import Analysis, Strategy

# --------------------------------------------------------------------------- target


class Target(Model):
    """The service under rollout and how its versions are told apart in the metrics."""

    namespace: K8sName = "default"
    service: K8sName = Field(description="the service (or app) being rolled out")
    stable: LabelValue | None = Field(
        default=None, description="value of the version label for the stable version "
        "(with canaryRef: optional, default the version the workload runs when first seen)")
    canary: LabelValue | None = Field(
        default=None, description="value of the version label for the canary version "
        "(with canaryRef: optional, default each new version of the workload)")
    versionLabel: str | None = Field(
        default=None,
        pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$",
        description="metric label that carries the version; default: the preset's",
    )

    canaryRef: CanaryRef | None = Field(
        default=None, description="the workload carrying the canary: a new version of it "
        "starts a rollout (canary run --kubernetes)")

    @model_validator(mode="after")
    def _distinct(self) -> Target:
        if self.canaryRef is None:
            missing = [f for f in ("stable", "canary") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"{' and '.join(missing)} required (or give canaryRef, whose "
                                 "new versions are the canaries)")
        if self.stable is not None and self.stable == self.canary:
            raise ValueError(f"stable and canary must differ, both are {self.stable!r}")
        return self


# --------------------------------------------------------------------------- decision, gates


class DecisionRules(Model):
    alpha: float = Field(
        default=0.01, gt=0, lt=0.5,
        description="bound on the probability of rolling back a healthy canary",
    )
    beta: float = Field(
        default=0.05, gt=0, lt=0.5,
        description="bound on the probability of promoting a canary whose ratio is at or "
        "beyond a check's tolerance (per check and for the decision)",
    )
    promotionEvidence: Literal["rollout", "step"] = Field(
        default="rollout",
        description="rollout: non-inferiority evidence accumulates over the whole rollout; "
        "step: it restarts at each step (no promotion on earlier steps' evidence when a "
        "regression appears only at a higher weight; promotion about twice as slow)",
    )
    onInconclusive: Literal["pause", "rollback"] = Field(
        default="pause", description="at maxStepDuration without a verdict"
    )
    onDataFailure: Literal["pause", "rollback"] = Field(
        default="pause", description="after dataFailureLimit consecutive ticks without data"
    )
    dataFailureLimit: int = Field(default=5, ge=1)
    minSamples: int = Field(
        default=200, ge=0, description="canary requests needed in a step before it may promote"
    )
    checkSampleRatio: bool = Field(
        default=True, description="hold when the canary's traffic share differs from its weight"
    )


class Webhook(Model):
    name: str
    url: HttpUrl
    timeout: Annotated[Duration, at_most("5m")] = Field(default=timedelta(seconds=10))
    headers: dict[str, str] = Field(default_factory=dict)


class Gates(Model):
    beforeStep: list[Webhook] = Field(
        default_factory=list, description="called before each step; a non-2xx answer holds"
    )


class Notification(Model):
    type: Literal["webhook", "slack"] = "webhook"
    url: HttpUrl
    on: list[Literal["promote", "rollback", "pause", "succeeded", "failed", "step"]] = Field(
        default_factory=lambda: ["promote", "rollback", "pause", "succeeded", "failed"]
    )


# --------------------------------------------------------------------------- the policy


class Spec(Model):
    target: Target
    router: RouterSpec
    strategy: Strategy
    analysis: Analysis = Analysis()
    metrics: MetricsSpec = Field(
        description="where each tick's data comes from (required: a policy never falls back "
        "to invented traffic)"
    )
    checks: list[Check] = Field(
        default_factory=lambda: [ErrorRateCheck(type="error-rate")], min_length=1,
        max_length=32,
    )
    decision: DecisionRules = DecisionRules()
    gates: Gates = Gates()
    notifications: list[Notification] = Field(default_factory=list)

    @field_validator("metrics")
    @classmethod
    def _no_fake_data_on_real_traffic(cls, metrics: Any, info: ValidationInfo) -> Any:
        router = info.data.get("router")
        provider = getattr(router, "provider", None)
        if (isinstance(metrics, SimulateSource) and provider not in (None, "dry-run")
                and not metrics.allowSimulatedMetrics):
            raise ValueError(
                f"source simulate invents its traffic, and router {provider} would move real "
                "traffic on it: use source: prometheus, or router provider: dry-run; for a test "
                "or a demo, set spec.metrics.allowSimulatedMetrics: true"
            )
        return metrics

    @field_validator("checks")
    @classmethod
    def _unique_names(cls, checks: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for c in checks:
            name = check_name(c)
            if name in seen:
                raise ValueError(f"two checks are named {name!r}; give each a distinct name")
            seen.add(name)
        return checks

    @model_validator(mode="after")
    def _strategy_fits_router(self) -> Spec:
        provider = self.router.provider
        strategy = self.strategy
        match = strategy.match
        if strategy.type == "ab" and provider in ("kubernetes", "smi", "seldon", "seldon-v2"):
            hint = (" (a client can call the canary model directly with the header "
                    "seldon-model: <canary>)" if provider == "seldon-v2" else "")
            raise ValueError(f"router {provider} cannot route by header or cookie (strategy "
                             f"ab){hint}")
        if strategy.type == "ab" and match and match.cookie and (
            provider not in ("nginx-ingress", "istio", "dry-run")
        ):
            raise ValueError(f"router {provider} cannot route by cookie")
        if strategy.type == "ab" and match and match.header and match.header.regex and (
            provider not in ("nginx-ingress", "istio", "gateway-api", "dry-run")
        ):
            raise ValueError(f"router {provider} cannot match a header by regex")
        mirrors = ("istio", "seldon", "seldon-v2", "gateway-api", "dry-run")
        if strategy.type == "mirror" and provider not in mirrors:
            raise ValueError(f"router {provider} cannot mirror traffic (strategy mirror)")
        if strategy.mirrorPercent is not None and provider not in mirrors:
            raise ValueError(f"router {provider} cannot mirror traffic (mirrorPercent)")
        pct = strategy.mirrorPercent
        if pct is not None and provider == "seldon-v2" and pct != int(pct):
            raise ValueError("Seldon Core 2 mirrors whole percents: make mirrorPercent an integer")
        if getattr(self.router, "stickySessions", None) and strategy.type != "canary":
            raise ValueError(f"router.stickySessions applies to strategy type canary, not "
                             f"{strategy.type}")
        return self

    @model_validator(mode="after")
    def _severe_ratio_above_tolerances(self) -> Spec:
        if self.strategy.ramp == "strict":
            return self
        for c in self.checks:
            if isinstance(c, ErrorRateCheck | LatencyCheck) and \
                    self.strategy.severeRatio <= 1 + c.tolerance:
                raise ValueError(
                    f"strategy.severeRatio ({self.strategy.severeRatio:g}) must exceed 1 + "
                    f"tolerance of check {c.name!r} ({1 + c.tolerance:g}): the risk-budgeted "
                    "ramp lets a canary advance once a ratio of severeRatio is excluded, which "
                    "must be a worse canary than the tolerance allows")
        return self

    @model_validator(mode="after")
    def _metrics_fit(self) -> Spec:
        problems = metrics_fit_problems(
            self.metrics, version_label=self.target.versionLabel,
            versions=tuple(v for v in (self.target.stable, self.target.canary) if v),
            router=self.router,
            strategy=self.strategy.type, checks=self.checks)
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Metadata(Model):
    name: K8sName
    labels: dict[str, str] = Field(default_factory=dict)


class Policy(Model):
    apiVersion: Literal["canary-analyzer.io/v1alpha1"] = API_VERSION
    kind: Literal["RolloutPolicy"] = KIND
    metadata: Metadata
    spec: Spec

    @property
    def name(self) -> str:
        return self.metadata.name

    def with_canary_version(self, version: str) -> Policy:
        """The same policy for another canary version (`canary start --canary-version`)."""
        return self.with_versions(canary=version)

    def with_versions(self, *, stable: str | None = None, canary: str | None = None,
                      labels: dict[str, str] | None = None) -> Policy:
        """The same policy with other stable/canary versions (and extra metadata labels): what
        a rollout run stores when a canaryRef or a promotion decided the versions."""
        data = self.model_dump(mode="json", exclude_none=True)
        if stable is not None:
            data["spec"]["target"]["stable"] = stable
        if canary is not None:
            data["spec"]["target"]["canary"] = canary
        if labels:
            data["metadata"]["labels"] = {**data["metadata"].get("labels", {}), **labels}
        return Policy.model_validate(data)

    @property
    def versions_known(self) -> bool:
        """Both versions are set: a rollout of this policy can run (a canaryRef policy gets
        them from the controller)."""
        return self.spec.target.stable is not None and self.spec.target.canary is not None
