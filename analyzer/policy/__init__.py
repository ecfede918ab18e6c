"""The rollout policy: a YAML document shaped like a Kubernetes object.

    apiVersion: canary-analyzer.io/v1alpha1
    kind: RolloutPolicy
    metadata: {name: checkout}
    spec: {target, router, strategy, analysis, metrics, checks, decision, gates, notifications}

`load_policy(path)` returns a `Policy` or raises `PolicyError` whose `.problems` each name the
file, the line, the field path (`spec.strategy.steps[2]`) and what is expected. Defaults are
the ones a careful SRE would pick; each is documented on its field.

The blocks live in one module each (routers, strategy, metrics, checks, model); loader.py reads
files, schema.py prints the JSON Schema. This package re-exports what other layers use.
"""

from analyzer.policy.base import API_VERSION, KIND, Duration, Model
from analyzer.policy.canary_ref import CANARY_REF_API_VERSIONS, CanaryRef
from analyzer.policy.checks import (
    Check,
    ClassicCheck,
    ErrorRateCheck,
    LatencyCheck,
    ThresholdCheck,
    check_name,
)
from analyzer.policy.loader import (
    PolicyError,
    Problem,
    load_policies,
    load_policy,
    parse_policy,
    read_yaml,
    validate_policy,
)
from analyzer.policy.metrics import (
    PRESETS,
    MetricsSpec,
    PrometheusSource,
    PromQueries,
    SimulatedVersion,
    SimulateSource,
)
from analyzer.policy.model import (
    DecisionRules,
    Gates,
    Metadata,
    Notification,
    Policy,
    Spec,
    Target,
    Webhook,
)
from analyzer.policy.routers import (
    PROVIDERS,
    DryRunRouter,
    GatewayApiRouter,
    IstioRouter,
    KnativeRouter,
    KubernetesRouter,
    NginxIngressRouter,
    NginxLocalRouter,
    RouterSpec,
    SeldonRouter,
    SeldonV2Router,
    SmiRouter,
    StickySessions,
)
from analyzer.policy.schema import json_schema
from analyzer.policy.strategy import (
    Analysis,
    CookieMatch,
    HeaderMatch,
    Match,
    PauseSpec,
    PauseStep,
    Strategy,
)

__all__ = [
    "API_VERSION",
    "CANARY_REF_API_VERSIONS",
    "KIND",
    "PRESETS",
    "PROVIDERS",
    "Analysis",
    "CanaryRef",
    "Check",
    "ClassicCheck",
    "CookieMatch",
    "DecisionRules",
    "DryRunRouter",
    "Duration",
    "ErrorRateCheck",
    "Gates",
    "GatewayApiRouter",
    "HeaderMatch",
    "IstioRouter",
    "KnativeRouter",
    "KubernetesRouter",
    "LatencyCheck",
    "Match",
    "Metadata",
    "MetricsSpec",
    "Model",
    "NginxIngressRouter",
    "NginxLocalRouter",
    "Notification",
    "PauseSpec",
    "PauseStep",
    "Policy",
    "PolicyError",
    "Problem",
    "PromQueries",
    "PrometheusSource",
    "RouterSpec",
    "SeldonRouter",
    "SeldonV2Router",
    "SimulateSource",
    "SimulatedVersion",
    "SmiRouter",
    "Spec",
    "StickySessions",
    "Strategy",
    "Target",
    "ThresholdCheck",
    "Webhook",
    "check_name",
    "json_schema",
    "load_policies",
    "load_policy",
    "parse_policy",
    "read_yaml",
    "validate_policy",
]
