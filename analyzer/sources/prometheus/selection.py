"""Which series belong to which rollout: a preset's selectors for the rollouts that share one
query, the labels the answer is grouped by, and the way back from a group of the answer to
one rollout's stable or canary version. Pure: no I/O; PromQL text through promql.py.

A policy becomes a `Layout` (the query's shape: metric names, matchers, group labels; equal for
every rollout that may share the query) and a `Member` (this rollout's values: namespace,
service, the two version values). `Condition`s are the same matchers for one rollout, in the
order the no-data explanation (diagnose.py) drops them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

from analyzer.policy import GatewayApiRouter, PrometheusSource, Target
from analyzer.sources.prometheus.presets import (
    ENVOY_GATEWAY_MERGED_VALUE,
    Alternatives,
    Matcher,
    Preset,
    get_preset,
)
from analyzer.sources.prometheus.promql import (
    PrometheusConfigError,
    check_label,
    re2_alternation,
    render_matcher,
    render_selector,
)

Kind = Literal["requests", "errors", "latency"]
Role = Literal["stable", "canary"]
VersionMode = Literal["value", "canary-flag", "pattern"]


@dataclass(frozen=True)
class Member:
    """One rollout's slice of a shared query: the label values its series carry."""

    namespace: str | None
    service: str | None
    stable: str
    canary: str
    service_aliases: tuple[str, ...] = ()

    @property
    def services(self) -> tuple[str, ...]:
        return () if self.service is None else (self.service, *self.service_aliases)

    def value(self, role: Role) -> str:
        return self.stable if role == "stable" else self.canary


@dataclass(frozen=True)
class Condition:
    """One thing a rollout's series must satisfy, as a user reads it (`text`). `matchers` are
    its part of the selector (none when it is checked on the answer instead: a namespace in
    either of two labels); `wanted` tests a value of `labels` (looked up when it is dropped)."""

    text: str
    labels: tuple[str, ...]
    matchers: tuple[Matcher, ...]
    wanted: Matcher


@dataclass(frozen=True)
class Layout:
    """The shape of a preset's queries; part of the coalescer's batch key.

    `namespace_labels`: () no namespace filter; one label; or (`exported_<label>`, `<label>`),
    where the first non-empty one holds the namespace (an exporter's own label renamed by a
    scrape whose target labels collide), so the namespace is checked on the answer.
    `version_mode` "pattern": the version label holds `<version name><version_suffix>`.
    """

    preset: str
    requests_metrics: tuple[str, ...]
    latency_metric: str | None
    latency_scale: float
    errors: Alternatives
    fixed: tuple[Matcher, ...]
    extra: tuple[Matcher, ...]
    namespace_labels: tuple[str, ...]
    service_label: str | None
    version_label: str
    version_mode: VersionMode
    version_suffix: str = ""

    @property
    def group(self) -> tuple[str, ...]:
        service = (self.service_label,) if self.service_label else ()
        return (*self.namespace_labels, *service, self.version_label)

    def metrics(self, kind: Kind) -> tuple[str, ...]:
        if kind == "latency":
            assert self.latency_metric is not None
            return (self.latency_metric,)
        return self.requests_metrics

    # ------------------------------------------------------------------ the shared query
    def selectors(self, kind: Kind, members: Iterable[Member]) -> tuple[str, ...]:
        """The selectors of one metric for `members`: one per error alternative (their union
        is the metric), one otherwise."""
        ms = list(members)
        base = [*self.fixed, *self.extra]
        if len(self.namespace_labels) == 1:
            base.append(_one_of(self.namespace_labels[0], (m.namespace or "" for m in ms)))
        if self.service_label:
            base.append(_one_of(self.service_label, (s for m in ms for s in m.services)))
        version = self.version_matcher(v for m in ms for v in (m.stable, m.canary))
        if version is not None:
            base.append(version)
        alternatives = self.errors if kind == "errors" else ((),)
        return tuple(render_selector(self.metrics(kind), [*base, *alt]) for alt in alternatives)

    def version_matcher(self, values: Iterable[str]) -> Matcher | None:
        """The matcher picking the versions named `values` (None: every value is a version)."""
        if self.version_mode == "canary-flag":
            return None
        vals = sorted(set(values))
        if self.version_mode == "pattern":
            alt = re2_alternation(vals)
            body = alt if len(vals) == 1 else f"(?:{alt})"
            return Matcher(self.version_label, "=~", body + self.version_suffix)
        return _one_of(self.version_label, vals)

    # ------------------------------------------------------------------ the way back
    def owner(self, key: tuple[str, ...]) -> tuple[str | None, str | None]:
        """(namespace, service) of a group key as `role` reads them (None where this layout
        has no such label): the rollouts that key can belong to, to index a shared answer."""
        i = len(self.namespace_labels)
        namespace = next((v for v in key[:i] if v), "") if i else None
        return namespace, key[i] if self.service_label else None

    def owners(self, member: Member) -> list[tuple[str | None, str | None]]:
        """The `owner` values of every group key `member` may have (see `role`)."""
        namespace = member.namespace if self.namespace_labels else None
        services = member.services if self.service_label else (None,)
        return [(namespace, s) for s in services]

    def role(self, key: tuple[str, ...], member: Member) -> Role | None:
        """'stable' / 'canary' when a group key (values of `group`) is this member's."""
        i = len(self.namespace_labels)
        if i and next((v for v in key[:i] if v), "") != member.namespace:
            return None
        if self.service_label:
            if key[i] not in member.services:
                return None
            i += 1
        value = key[i]
        if self.version_mode == "canary-flag":
            return "canary" if value else "stable"
        if self.version_mode == "value":  # the matcher is an equality: no matcher built
            return "stable" if value == member.stable else (
                "canary" if value == member.canary else None)
        for role in ("stable", "canary"):
            wanted = self.version_matcher([member.value(role)])
            if wanted is not None and wanted.matches(value):
                return role
        return None

    def shown(self, member: Member, role: Role) -> str:
        """How a version is told apart, for messages: `destination_version="v2"`."""
        if self.version_mode == "canary-flag":
            return (f'{self.version_label}="" (the stable backend)' if role == "stable"
                    else f'{self.version_label}!="" (the canary backend)')
        wanted = self.version_matcher([member.value(role)])
        assert wanted is not None
        return render_matcher(wanted)

    # ------------------------------------------------------------------ for explanations
    def conditions(self, member: Member, role: Role | None) -> list[Condition]:
        """This member's conditions (for `role`, or for either version when None), in the order
        an explanation drops them: version, service, namespace, the policy's labels, the
        preset's fixed matchers."""
        out: list[Condition] = []
        version: Matcher | None
        if self.version_mode == "canary-flag":
            version = None if role is None else Matcher(
                self.version_label, "=" if role == "stable" else "!=", "")
        else:
            roles: tuple[Role, ...] = ("stable", "canary") if role is None else (role,)
            version = self.version_matcher(member.value(r) for r in roles)
        if version is not None:
            out.append(_plain(version))
        if self.service_label and member.services:
            out.append(_plain(_one_of(self.service_label, member.services)))
        ns = member.namespace or ""
        if len(self.namespace_labels) == 1:
            out.append(_plain(Matcher(self.namespace_labels[0], "=", ns)))
        elif self.namespace_labels:
            exported, own = self.namespace_labels
            out.append(Condition(
                f'{exported}="{ns}" (or {own}="{ns}" on series without {exported})',
                self.namespace_labels, (), Matcher(own, "=", ns)))
        out += [_plain(m) for m in (*self.extra, *self.fixed)]
        return out


def _one_of(label: str, values: Iterable[str]) -> Matcher:
    vals = sorted(set(values))
    return Matcher(label, "=", vals[0]) if len(vals) == 1 else Matcher(
        label, "=~", re2_alternation(vals))


def _plain(m: Matcher) -> Condition:
    return Condition(render_matcher(m), (m.label,), (m,), m)


# ---------------------------------------------------------------------- from a policy


def plan(
    spec: PrometheusSource, target: Target, router: Any = None, strategy: str | None = None
) -> tuple[Layout, Member]:
    """The layout and this rollout's member for a preset policy (PrometheusConfigError when the
    configuration cannot give a safe, meaningful query)."""
    preset = get_preset(spec.preset)
    backend_value = preset.backend_value
    if preset.name == "gateway-envoy":
        if spec.envoyGatewayClusters is None:
            raise PrometheusConfigError(
                "preset gateway-envoy needs envoyGatewayClusters (per-backend or merged): "
                "Envoy Gateway's default per-rule clusters hold both versions")
        if spec.envoyGatewayClusters == "merged":
            backend_value = ENVOY_GATEWAY_MERGED_VALUE
    version_label = check_label(target.versionLabel or preset.version_label, "versionLabel")
    own = version_label == preset.version_label
    mode: VersionMode = "value"
    if own and preset.version_mode == "canary-flag":
        mode = "canary-flag"
    elif own and preset.version_suffix:
        mode = "pattern"
    if spec.namespaceLabel is not None:
        ns_labels: tuple[str, ...] = (
            (check_label(spec.namespaceLabel, "namespaceLabel"),) if spec.namespaceLabel else ())
    elif preset.namespace_label is None:
        ns_labels = ()
    elif preset.namespace_exported:
        ns_labels = (f"exported_{preset.namespace_label}", preset.namespace_label)
    else:
        ns_labels = (preset.namespace_label,)
    if version_label in ns_labels:
        raise PrometheusConfigError(
            f"versionLabel {version_label!r} is the namespace label of preset {preset.name}")
    # A version label equal to the service label (Services as versions) replaces it: two
    # matchers on one label would contradict each other.
    service_label = None if preset.service_label == version_label else preset.service_label
    errors = preset.error_matchers
    if spec.grpcErrors == "non-ok" and preset.error_matchers_non_ok is not None:
        errors = preset.error_matchers_non_ok
    layout = Layout(
        preset=preset.name,
        requests_metrics=preset.requests_metrics,
        latency_metric=preset.latency_metric,
        latency_scale=preset.latency_scale,
        errors=errors,
        fixed=preset.fixed,
        extra=tuple(Matcher(check_label(k, "spec.metrics.labels"), "=", v)
                    for k, v in sorted(spec.labels.items())),
        namespace_labels=ns_labels,
        service_label=service_label,
        version_label=version_label,
        version_mode=mode,
        version_suffix=preset.version_suffix if mode == "pattern" else "",
    )
    stable, canary = _version_values(replace(preset, backend_value=backend_value), target,
                                     router)
    service = _service_value(target, preset, router) if service_label else None
    aliases: tuple[str, ...] = ()
    if service is not None and preset.mirror_suffix and strategy == "mirror":
        aliases = (service + preset.mirror_suffix,)
    member = Member(namespace=target.namespace if ns_labels else None, service=service,
                    stable=stable, canary=canary, service_aliases=aliases)
    return layout, member


def _service_value(target: Target, preset: Preset, router: Any) -> str:
    provider = getattr(router, "provider", None)
    if preset.name == "nginx-ingress" and provider == "nginx-ingress":
        return str(router.ingress)
    if preset.name == "knative" and provider == "knative":
        return str(router.knativeService)
    if preset.name == "seldon" and provider == "seldon":
        return str(router.seldonDeployment)
    return target.service


def _version_values(preset: Preset, target: Target, router: Any) -> tuple[str, str]:
    """target.stable/canary, or with a Gateway API router the values its two backend Services
    have in the preset's metrics."""
    if preset.backend_value is None or not isinstance(router, GatewayApiRouter):
        return target.stable, target.canary
    if "{port}" in preset.backend_value and router.port is None:
        raise PrometheusConfigError(
            f"preset {preset.name} names Envoy clusters after the backendRef's port: set "
            "router.port")
    values = [preset.backend_value.format(namespace=target.namespace, service=svc,
                                          port=router.port)
              for svc in (router.stableService, router.canaryService)]
    return values[0], values[1]

