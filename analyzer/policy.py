"""The rollout policy: its pydantic model, defaults, and YAML loading with clear errors.

A policy file is YAML shaped like a Kubernetes object:

    apiVersion: canary-analyzer.io/v1alpha1
    kind: RolloutPolicy
    metadata: {name: checkout}
    spec: {target, router, strategy, analysis, metrics, checks, decision, gates, notifications}

`load_policy(path)` returns a `Policy` or raises `PolicyError` whose `.problems` each name the
file, the line, the field path (`spec.strategy.steps[2]`) and what is expected.
Defaults are the ones a careful SRE would pick; each is documented on its field.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

API_VERSION = "canary-analyzer.io/v1alpha1"
KIND = "RolloutPolicy"

# --------------------------------------------------------------------------- value types

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> timedelta:
    """Read `30s`, `5m`, `1h30m`, `250ms`, or a number of seconds."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m or 1h, got a boolean")
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("expected a duration like 30s, 5m or 1h, got an empty string")
        if text.startswith("-"):
            raise ValueError(f"duration must not be negative, got {value!r}")
        pos, seconds = 0, 0.0
        for m in _DURATION_PART.finditer(text):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
        if pos != len(text) or pos == 0:
            raise ValueError(
                f"expected a duration like 30s, 5m, 1h or 1h30m (units ms, s, m, h, d), "
                f"got {value!r}"
            )
    else:
        raise ValueError(f"expected a duration like 30s, 5m or 1h, got {type(value).__name__}")
    if not math.isfinite(seconds):
        raise ValueError(f"duration must be finite, got {value!r}")
    if seconds < 0:
        raise ValueError(f"duration must not be negative, got {value!r}")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    if seconds and seconds == int(seconds):
        s = int(seconds)
        for unit, size in (("h", 3600), ("m", 60)):
            if s % size == 0:
                return f"{s // size}{unit}"
        return f"{s}s"
    return f"{round(seconds * 1000)}ms"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d))+$",
            "description": "a duration: 30s, 5m, 1h, 1h30m, 250ms",
        }
    ),
]
Percent = Annotated[float, Field(ge=0, le=100)]
K8sName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="a Kubernetes object name (lower case, digits, '-' and '.')",
    ),
]
# Label values reach PromQL; anything is allowed here, the metric source escapes it.
LabelValue = Annotated[str, Field(min_length=1, max_length=256)]
HttpUrl = Annotated[str, Field(pattern=r"^https?://[^\s]+$", description="an http(s) URL")]


class Model(BaseModel):
    """Base for every policy block: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --------------------------------------------------------------------------- target


class Target(Model):
    """The service under rollout and how its versions are told apart in the metrics."""

    namespace: K8sName = "default"
    service: K8sName = Field(description="the service (or app) being rolled out")
    stable: LabelValue = Field(description="value of the version label for the stable version")
    canary: LabelValue = Field(description="value of the version label for the canary version")
    versionLabel: str | None = Field(
        default=None,
        pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$",
        description="metric label that carries the version; default: the preset's",
    )

    @model_validator(mode="after")
    def _distinct(self) -> Target:
        if self.stable == self.canary:
            raise ValueError(f"stable and canary must differ, both are {self.stable!r}")
        return self


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

# --------------------------------------------------------------------------- strategy


class PauseSpec(Model):
    duration: Duration | None = Field(
        default=None, description="wait this long; absent: wait for `canary resume`"
    )


class PauseStep(Model):
    pause: PauseSpec


Step = Annotated[int, Field(ge=0, le=100)] | PauseStep


class HeaderMatch(Model):
    name: str = Field(pattern=r"^[A-Za-z0-9-]+$", description="HTTP header name")
    value: str = Field(min_length=1, description="exact value that selects the canary")


class CookieMatch(Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="cookie name")


class Match(Model):
    header: HeaderMatch | None = None
    cookie: CookieMatch | None = None

    @model_validator(mode="after")
    def _one(self) -> Match:
        if (self.header is None) == (self.cookie is None):
            raise ValueError("give exactly one of header or cookie")
        return self


class Strategy(Model):
    """How traffic reaches the canary.

    - canary: weight `steps` (e.g. [5, 10, 25, 50, 100], `{pause: {}}` entries allowed) or
      `stepWeight` + `maxWeight`;
    - blue-green: the preview gets no live traffic (or `mirrorPercent` of it), then 0 -> 100;
    - ab: only requests matching `match` go to the canary; analysis, then promote to 100;
    - mirror: the canary gets a copy of `mirrorPercent` of live traffic; analysis only.
    """

    type: Literal["canary", "blue-green", "ab", "mirror"] = "canary"
    steps: list[Step] | None = None
    stepWeight: int | None = Field(default=None, ge=1, le=100)
    maxWeight: int | None = Field(default=None, ge=1, le=100)
    match: Match | None = None
    mirrorPercent: Percent | None = None

    @model_validator(mode="after")
    def _shape(self) -> Strategy:
        if self.type == "canary":
            if self.steps is None and self.stepWeight is None:
                raise ValueError("a canary strategy needs steps or stepWeight (with maxWeight)")
            if self.steps is not None and self.stepWeight is not None:
                raise ValueError("give steps or stepWeight/maxWeight, not both")
            if self.steps is not None:
                weights = [s for s in self.steps if isinstance(s, int)]
                if not weights:
                    raise ValueError("steps need at least one weight")
                for prev, cur in itertools.pairwise(weights):
                    if cur <= prev:
                        raise ValueError(
                            f"weights in steps must increase strictly: {cur} follows {prev}"
                        )
        else:
            if self.steps is not None or self.stepWeight is not None:
                raise ValueError(f"steps and stepWeight apply to type canary, not {self.type}")
        if self.stepWeight is not None and self.maxWeight is None:
            raise ValueError("stepWeight needs maxWeight")
        if self.maxWeight is not None and self.stepWeight is None:
            raise ValueError("maxWeight needs stepWeight")
        if self.type == "ab" and self.match is None:
            raise ValueError("an ab strategy needs match.header or match.cookie")
        if self.type != "ab" and self.match is not None:
            raise ValueError("match applies to type ab only")
        if self.type == "mirror" and self.mirrorPercent is None:
            raise ValueError("a mirror strategy needs mirrorPercent (e.g. 100)")
        if self.mirrorPercent is not None and self.type not in ("mirror", "blue-green"):
            raise ValueError("mirrorPercent applies to types mirror and blue-green")
        return self

    def weight_steps(self) -> list[int | PauseStep]:
        """The ordered steps the rollout walks, each a canary weight or a pause.

        canary: the configured steps (or stepWeight..maxWeight), always ending at 100: when
        the steps stop below 100, a final full promotion to 100 is appended (as Argo Rollouts
        does). blue-green and ab: analysis at weight 0 (preview / header route), then 100.
        mirror: analysis at weight 0 only; the rollout succeeds without moving live traffic.
        """
        if self.type == "canary":
            if self.steps is not None:
                steps: list[int | PauseStep] = list(self.steps)
            else:
                assert self.stepWeight is not None and self.maxWeight is not None
                steps = list(range(self.stepWeight, self.maxWeight + 1, self.stepWeight))
                if steps[-1] != self.maxWeight:
                    steps.append(self.maxWeight)
            weights = [s for s in steps if isinstance(s, int)]
            if weights[-1] != 100:
                steps.append(100)
            return steps
        if self.type == "mirror":
            return [0]
        return [0, 100]


# --------------------------------------------------------------------------- analysis timing


class Analysis(Model):
    """When ticks happen and how long a step may take."""

    interval: Duration = Field(default=timedelta(seconds=30), description="time between ticks")
    window: Duration | None = Field(
        default=None, description="data window of one tick; default: the interval"
    )
    minStepDuration: Duration = Field(
        default=timedelta(minutes=2), description="soak time at each step before promotion"
    )
    maxStepDuration: Duration = Field(
        default=timedelta(minutes=30),
        description="after this, an inconclusive step takes decision.onInconclusive",
    )
    baselineWindow: Duration = Field(
        default=timedelta(minutes=10),
        description="pre-rollout window of stable traffic used to pick latency bucket bounds",
    )

    @model_validator(mode="after")
    def _order(self) -> Analysis:
        if self.interval.total_seconds() < 1:
            raise ValueError("interval must be at least 1s")
        if self.maxStepDuration < self.minStepDuration:
            raise ValueError("maxStepDuration must be at least minStepDuration")
        return self

    @property
    def effective_window(self) -> timedelta:
        return self.window or self.interval


# --------------------------------------------------------------------------- metric sources

PRESETS = ("istio", "nginx-ingress", "knative", "seldon", "linkerd", "generic")


class PromQueries(Model):
    """Custom PromQL templates. Placeholders: {namespace}, {service}, {stable}, {canary} (escaped
    for a double-quoted PromQL string), {version_label}, {versions} (a regex alternation of the
    escaped version values), {extra_matchers} (`, name="value"...` or empty). Each must return
    counters summed `by ({version_label})` (latency: `by ({version_label}, le)`). See
    docs/prometheus.md."""

    requests: str
    errors: str
    latency: str | None = None
    latencyUnit: Literal["s", "ms"] = Field(
        default="s", description="unit of the latency histogram's le bounds"
    )


class PrometheusSource(Model):
    source: Literal["prometheus"]
    address: HttpUrl = "http://localhost:9090"
    preset: Literal[
        "istio", "nginx-ingress", "knative", "seldon", "linkerd", "generic", "custom"
    ] = "generic"
    queries: PromQueries | None = None
    labels: dict[str, str] = Field(
        default_factory=dict, description="extra label matchers added to every query"
    )
    timeout: Duration = Field(default=timedelta(seconds=10))
    retries: int = Field(default=2, ge=0, le=10)
    headers: dict[str, str] = Field(default_factory=dict, description="e.g. Authorization")
    namespaceLabel: str | None = Field(
        default=None, pattern=r"^([a-zA-Z_][a-zA-Z0-9_]*)?$",
        description="label carrying the namespace; default: the preset's; '' = no namespace filter",
    )

    @model_validator(mode="after")
    def _custom(self) -> PrometheusSource:
        if self.preset == "custom" and self.queries is None:
            raise ValueError("preset custom needs queries.requests and queries.errors")
        if self.preset != "custom" and self.queries is not None:
            raise ValueError("queries are only used with preset: custom")
        return self


class SimulatedVersion(Model):
    errorRate: float = Field(default=0.01, ge=0, le=1, description="errors per request")
    latencyMedian: Duration = Field(default=timedelta(milliseconds=50))
    latencyP99: Duration = Field(default=timedelta(milliseconds=250))


class SimulateSource(Model):
    """Seeded synthetic traffic: runs the engine with no Prometheus at all."""

    source: Literal["simulate"]
    rps: float = Field(default=50, gt=0, description="requests per second for both versions")
    seed: int | None = None
    stable: SimulatedVersion = SimulatedVersion()
    canary: SimulatedVersion = SimulatedVersion()
    regressionAboveWeight: Percent | None = Field(
        default=None, description="the canary's own figures apply only above this weight"
    )
    burstiness: float = Field(
        default=0, ge=0, description="overdispersion of errors (0 = Poisson)"
    )


MetricsSpec = Annotated[PrometheusSource | SimulateSource, Field(discriminator="source")]

# --------------------------------------------------------------------------- checks


class ErrorRateCheck(Model):
    """Sequential, anytime-valid test of the canary/stable error-rate ratio."""

    type: Literal["error-rate"]
    name: str = "error-rate"
    tolerance: float = Field(
        default=0.25, gt=0, le=10,
        description="allowed relative increase: rollback when ratio > 1 + tolerance is proven",
    )
    weight: float = Field(default=1, gt=0, description="share of alpha (weighted Bonferroni)")
    negligibleRate: float = Field(
        default=0.001, ge=0, le=1,
        description="canary error rate below which a canary counts as non-inferior even "
        "when errors are too rare to compare",
    )


class LatencyCheck(Model):
    """Tail-exceedance tests at bucket bounds chosen per quantile from the stable baseline."""

    type: Literal["latency"]
    name: str = "latency"
    quantiles: list[Annotated[float, Field(gt=0, lt=1)]] = Field(default_factory=lambda: [0.99])
    tolerance: float = Field(
        default=0.25, gt=0, le=10,
        description="allowed relative increase of the share of requests slower than the bound",
    )
    sloBound: Duration | None = Field(
        default=None, description="test exceedance of this bound instead of the baseline's quantile"
    )
    distribution: bool = Field(default=False, description="also run the whole-distribution test")
    weight: float = Field(default=1, gt=0)


class ThresholdCheck(Model):
    """Absolute SLO check on the canary alone (Flagger-style), with a failure limit."""

    type: Literal["threshold"]
    name: str | None = None
    metric: Literal["error-rate", "latency"]
    quantile: float | None = Field(default=None, gt=0, lt=1, description="for metric latency")
    max: float = Field(
        ge=0, description="error-rate: percent of requests; latency: seconds"
    )
    failureLimit: int = Field(default=3, ge=1, description="consecutive failures before rollback")

    @model_validator(mode="after")
    def _q(self) -> ThresholdCheck:
        if self.metric == "latency" and self.quantile is None:
            raise ValueError("a latency threshold needs quantile (e.g. 0.99)")
        if self.metric == "error-rate" and self.max > 100:
            raise ValueError("error-rate max is a percent: at most 100")
        return self

    @property
    def check_name(self) -> str:
        if self.name:
            return self.name
        if self.metric == "latency":
            return f"threshold-latency-p{_qname(self.quantile or 0)}"
        return "threshold-error-rate"


class ClassicCheck(Model):
    """Fixed-horizon test (Mann-Whitney as Kayenta, Welch's t, Fisher's exact). Advisory by
    default: repeated looks inflate false rollbacks."""

    type: Literal["classic"]
    name: str | None = None
    test: Literal["mann-whitney", "welch", "fisher"] = "mann-whitney"
    metric: Literal["error-rate", "latency"] = "error-rate"
    confidence: float = Field(default=0.98, gt=0.5, lt=1)
    tolerance: float = Field(default=0.25, ge=0)
    advisory: bool = Field(default=True, description="reported but never decides")

    @property
    def check_name(self) -> str:
        return self.name or f"classic-{self.test}-{self.metric}"


Check = Annotated[
    ErrorRateCheck | LatencyCheck | ThresholdCheck | ClassicCheck, Field(discriminator="type")
]


def _qname(q: float) -> str:
    return f"{q * 100:g}".replace(".", "_")


def check_name(check: ErrorRateCheck | LatencyCheck | ThresholdCheck | ClassicCheck) -> str:
    if isinstance(check, ThresholdCheck | ClassicCheck):
        return check.check_name
    return check.name


# --------------------------------------------------------------------------- decision, gates


class DecisionRules(Model):
    alpha: float = Field(
        default=0.01, gt=0, lt=0.5,
        description="bound on the probability of rolling back a healthy canary",
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
    timeout: Duration = Field(default=timedelta(seconds=10))
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
    metrics: MetricsSpec = Field(default_factory=lambda: SimulateSource(source="simulate"))
    checks: list[Check] = Field(
        default_factory=lambda: [ErrorRateCheck(type="error-rate")], min_length=1
    )
    decision: DecisionRules = DecisionRules()
    gates: Gates = Gates()
    notifications: list[Notification] = Field(default_factory=list)

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
        if self.strategy.type == "ab" and provider in ("kubernetes", "smi", "seldon"):
            raise ValueError(f"router {provider} cannot route by header or cookie (strategy ab)")
        if self.strategy.type == "ab" and self.strategy.match and self.strategy.match.cookie and (
            provider not in ("nginx-ingress", "istio", "dry-run")
        ):
            raise ValueError(f"router {provider} cannot route by cookie")
        if self.strategy.type in ("mirror",) and provider not in ("istio", "seldon", "dry-run"):
            raise ValueError(f"router {provider} cannot mirror traffic (strategy mirror)")
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
        data = self.model_dump(mode="json", exclude_none=True)
        data["spec"]["target"]["canary"] = version
        return Policy.model_validate(data)


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a policy file."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path or '(document)'}: {self.message}"


class PolicyError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (a silent overwrite hides a typo)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        try:
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"unhashable key {key!r}", key_node.start_mark
            ) from None
    return loader.construct_mapping(node, deep=deep)


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

# YAML 1.1 reads `on`, `off`, `yes`, `no` as booleans, which breaks `notifications[].on:` and
# header values like `on`. Policies follow YAML 1.2 here: only true/false are booleans.
_BOOL_TAG = "tag:yaml.org,2002:bool"
_LineLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_LineLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def read_yaml(text: str) -> Any:
    """Parse YAML as policies are parsed (YAML 1.2 booleans, duplicate keys refused)."""
    return yaml.load(text, Loader=_LineLoader)  # a SafeLoader subclass


def _line_index(node: yaml.Node | None) -> dict[tuple[Any, ...], int]:
    """Map each field path to its 1-based line in the YAML text."""
    lines: dict[tuple[Any, ...], int] = {}
    # An alias repeats a node object; walking it again would cost the expanded size ("billion
    # laughs"), and its fields already point at the anchor's lines.
    seen: set[int] = set()

    def walk(n: yaml.Node, path: tuple[Any, ...]) -> None:
        lines[path] = n.start_mark.line + 1
        if id(n) in seen:
            return
        seen.add(id(n))
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k.value)
                lines[(*path, key)] = k.start_mark.line + 1
                walk(v, (*path, key))
                lines[(*path, key)] = k.start_mark.line + 1
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, (*path, i))

    if node is not None:
        walk(node, ())
    return lines


_TAG_KEYS = ("provider", "source", "type")


def _is_branch_label(part: Any) -> bool:
    """pydantic names union members in `loc`: 'constrained-int', 'PauseStep', 'function-..'."""
    if not isinstance(part, str):
        return False
    return (
        part in _MODEL_NAMES
        or part.startswith(("constrained-", "function-", "lax-", "json-or-python"))
        or "[" in part
        or part in ("int", "float", "str", "bool", "list", "dict")
    )


def _real_path(
    raw: Any, loc: tuple[Any, ...]
) -> tuple[tuple[Any, ...], tuple[str, int] | None]:
    """Drop pydantic's union-branch names from `loc`, keeping the keys present in the YAML.

    Returns the path and the union branch the error came from with the depth at which the
    branch applies (None outside unions)."""
    out: list[Any] = []
    branch: tuple[str, int] | None = None
    node = raw
    for part in loc:
        if isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and any(
            node.get(k) == part for k in _TAG_KEYS
        ):
            continue  # discriminated-union branch name, not a key
        elif isinstance(node, list) and isinstance(part, int):
            out.append(part)
            node = node[part] if 0 <= part < len(node) else None
        elif _is_branch_label(part):
            branch = (str(part), len(out))
        else:
            out.append(part)
            node = None
    return tuple(out), branch


def _wrong_branch(raw: Any, path: tuple[Any, ...], branch: tuple[str, int] | None) -> bool:
    """An error from the union member that does not fit the value's shape (a mapping checked
    as an int, or a number checked as a mapping) is noise: the other member's error is the one."""
    if branch is None:
        return False
    label, depth = branch
    node = raw
    for part in path[:depth]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    is_model_branch = label in _MODEL_NAMES
    return is_model_branch != isinstance(node, dict)


def format_path(path: tuple[Any, ...]) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _friendly(err: dict[str, Any]) -> str:
    kind, msg = err["type"], err["msg"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; `canary schema` lists the fields)"
    if kind == "missing":
        return "required field is missing"
    if kind == "union_tag_invalid":
        expected = ctx.get("expected_tags", "")
        what = str(ctx.get("discriminator", "kind")).strip("'")
        return f"unknown {what} {ctx.get('tag')!r}; expected one of {expected}"
    if kind == "string_pattern_mismatch":
        return _PATTERN_HELP.get(ctx.get("pattern", ""), msg) + f", got {err.get('input')!r}"
    if kind == "union_tag_not_found":
        return f"missing {str(ctx.get('discriminator', 'discriminator')).strip(chr(39))} field"
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}, got {err.get('input')!r}"
    if msg.startswith("Value error, "):
        return msg[len("Value error, "):]
    if msg.startswith("Assertion failed, "):
        return msg[len("Assertion failed, "):]
    got = err.get("input")
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"{msg[0].lower()}{msg[1:]}, got {got!r}"
    return f"{msg[0].lower()}{msg[1:]}"


_PATTERN_HELP = {
    r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$": "expected a Kubernetes name (lower-case letters, digits, "
    "'-' and '.', starting and ending with a letter or digit)",
    r"^https?://[^\s]+$": "expected an http(s) URL such as http://prometheus:9090",
    r"^[a-zA-Z_][a-zA-Z0-9_]*$": "expected a Prometheus label name (letters, digits, '_')",
}


def parse_policy(text: str, file: str = "<string>") -> Policy:
    """Validate policy YAML text; raise PolicyError naming file, line, field and expectation."""
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        raw = yaml.load(text, Loader=_LineLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(x for x in (e.context, e.problem) if x) or "YAML syntax error"
        raise PolicyError([Problem(file, line, "", f"invalid YAML: {problem}")]) from None
    except yaml.YAMLError as e:
        raise PolicyError([Problem(file, None, "", f"invalid YAML: {e}")]) from None
    except RecursionError:
        raise PolicyError([Problem(file, None, "", "invalid YAML: nested too deeply")]) from None
    if raw is None:
        raise PolicyError([Problem(file, 1, "", "the file is empty; expected a RolloutPolicy")])
    if not isinstance(raw, dict):
        raise PolicyError(
            [Problem(file, 1, "", f"expected a mapping (a RolloutPolicy), got a "
                     f"{type(raw).__name__}")]
        )
    lines = _line_index(node)
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        problems = []
        seen: set[tuple[str, str]] = set()
        for err in exc.errors(include_url=False):
            path, branch = _real_path(raw, tuple(err["loc"]))
            if _wrong_branch(raw, path, branch):
                continue
            if err["type"] == "union_tag_invalid":
                path = (*path, str((err.get("ctx") or {}).get("discriminator", "")).strip("'"))
            line = None
            for cut in range(len(path), -1, -1):
                if path[:cut] in lines:
                    line = lines[path[:cut]]
                    break
            p = Problem(file, line, format_path(path), _friendly(err))
            key = (p.path, p.message)
            if key not in seen:
                seen.add(key)
                problems.append(p)
        raise PolicyError(problems) from None


def load_policy(path: str | Path) -> Policy:
    """Read and validate one policy file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError([Problem(str(p), None, "", "file not found")]) from None
    except IsADirectoryError:
        raise PolicyError(
            [Problem(str(p), None, "", "is a directory, expected a YAML file")]
        ) from None
    except UnicodeDecodeError as e:
        raise PolicyError([Problem(str(p), None, "", f"not UTF-8 text: {e.reason}")]) from None
    except OSError as e:
        raise PolicyError([Problem(str(p), None, "", f"cannot read: {e.strerror}")]) from None
    return parse_policy(text, str(p))


def load_policies(directory: str | Path) -> list[Policy]:
    """Every `*.yaml`/`*.yml` policy in a directory; all problems of all files at once."""
    problems: list[Problem] = []
    policies: list[Policy] = []
    for f in sorted([*Path(directory).glob("*.yaml"), *Path(directory).glob("*.yml")]):
        try:
            policies.append(load_policy(f))
        except PolicyError as e:
            problems.extend(e.problems)
    if problems:
        raise PolicyError(problems)
    names = [p.name for p in policies]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PolicyError([Problem(str(directory), None, "metadata.name",
                                   f"policy names must be unique, repeated: {', '.join(dupes)}")])
    return policies


_MODEL_NAMES: frozenset[str] = frozenset()


def _collect_model_names() -> frozenset[str]:
    names: set[str] = set()
    todo: list[type] = [Model]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return frozenset(names)


def json_schema() -> dict[str, Any]:
    schema = Policy.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Canary Analyzer RolloutPolicy"
    return schema


_MODEL_NAMES = _collect_model_names()
