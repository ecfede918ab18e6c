"""The Prometheus metric source: exact per-version counts for a window, on `prometheus-api-client`.

What it owns: the queries of a preset (presets.py) or a custom template for one window, run
through the coalescer (coalescer.py, one query per metric per tick for every rollout in step)
and the client (client.py, bounded retries), and their answers turned into `Samples` with
exact integer counts per version (see "Exact counts" below; exact.py), or `no-data` naming the
failed query. PromQL text is built from escaped values only (promql.py).

Exact counts. `increase()` extrapolates to the window edges and returns fractions, so it is not
used. For each metric, one instant query at t1 returns, per group (namespace, service, version
[, le]): the sum at t1, the sum at t0 (`offset`), the number of counter resets around the
window, and how many series vanished or appeared in it. With no reset and no series churn the
count is sum(t1) - sum(t0), exact. Otherwise a second query fetches the raw samples of that
metric (`metric{...}[window + 15m]`) and the count is computed per series: increments between
consecutive samples, and after a reset the post-reset value (the counter restarted from 0);
a series with no sample in the 5 minutes before t0 counts from 0 (a new pod, a first error
code). Limits: requests between a series' last scrape and its disappearance are invisible to
any Prometheus reader; a counter that resets and climbs past its old value between two scrapes
hides the reset. Evaluation times are truncated to the whole second (so consecutive windows
still tile and ticks in the same second can share queries).
"""


from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

import requests

from analyzer.core.types import Histogram, Samples, VersionSample
from analyzer.policy import (
    ClassicCheck,
    LatencyCheck,
    Policy,
    PrometheusSource,
    PromQueries,
    Target,
    ThresholdCheck,
)
from analyzer.sources.prometheus.client import PrometheusClient, QueryFailed
from analyzer.sources.prometheus.coalescer import (
    SHARED_COALESCER,
    BatchKey,
    Member,
    MetricResult,
    QueryCoalescer,
)
from analyzer.sources.prometheus.exact import (
    LOOKBACK_MS,
    as_int,
    exact_from_raw,
    label_text,
    parse_le,
)
from analyzer.sources.prometheus.presets import Matcher, Preset, get_preset
from analyzer.sources.prometheus.promql import (
    PrometheusConfigError,
    check_label,
    matcher,
    matcher_in,
    promql_regex,
    promql_string,
    render_template,
)

Kind = Literal["requests", "errors", "latency"]
RAW_LOOKBACK_MS = 15 * 60 * 1000  # how far back the raw-sample path looks for a series' baseline
_PART = "canary_part"  # label marking the parts of the combined query


# ---------------------------------------------------------------------- the source


def _needs_latency(policy: Policy) -> bool:
    for c in policy.spec.checks:
        if isinstance(c, LatencyCheck):
            return True
        if isinstance(c, ThresholdCheck | ClassicCheck) and c.metric == "latency":
            return True
    return False


def _service_value(target: Target, preset: Preset, router: Any) -> str:
    provider = getattr(router, "provider", None)
    if preset.name == "nginx-ingress" and provider == "nginx-ingress":
        return str(router.ingress)
    if preset.name == "knative" and provider == "knative":
        return str(router.knativeService)
    if preset.name == "seldon" and provider == "seldon":
        return str(router.seldonDeployment)
    return target.service


class PrometheusMetricSource:
    """`MetricSource` reading a real Prometheus (see the module docstring for the count method).

    `fetch(t0, t1)` runs one query per metric (requests, errors, and latency when `latency`)
    for both versions and returns exact integer counts for (t0, t1]. It never raises for data
    problems: Prometheus down, timeouts, 5xx, PromQL errors, NaN or a version without series give
    `Samples` with `no_data_reason` naming the query; the other version's data is kept.
    """

    def __init__(
        self,
        policy_or_spec: Policy | PrometheusSource,
        target: Target | None = None,
        *,
        router: Any = None,
        latency: bool | None = None,
        coalescer: QueryCoalescer | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """From a whole policy (`PrometheusMetricSource(policy)`: latency only when a check needs
        it, the process-wide `SHARED_COALESCER`), or from `spec.metrics` + `spec.target` (+ the
        router, whose Ingress / Knative Service / SeldonDeployment name selects the service)."""
        if isinstance(policy_or_spec, Policy):
            policy = policy_or_spec
            spec = policy.spec.metrics
            if not isinstance(spec, PrometheusSource):
                raise PrometheusConfigError(
                    f"policy {policy.name}: spec.metrics.source is {spec.source}, not prometheus"
                )
            target = policy.spec.target if target is None else target
            router = policy.spec.router if router is None else router
            latency = _needs_latency(policy) if latency is None else latency
            coalescer = SHARED_COALESCER if coalescer is None else coalescer
        else:
            spec = policy_or_spec
            if target is None:
                raise PrometheusConfigError("a PrometheusSource needs the policy's target")
            latency = True if latency is None else latency
        self.spec = spec
        self.target = target
        self.latency = latency
        self._sleep = sleep
        self._session = session
        self.custom: PromQueries | None = spec.queries if spec.preset == "custom" else None
        for k in spec.labels:
            check_label(k, "spec.metrics.labels")
        if self.custom is not None:
            self.preset: Preset | None = None
            self.version_label = check_label(target.versionLabel or "version", "versionLabel")
            self.version_mode = "value"
            self.latency = latency and self.custom.latency is not None
            self._coalescer = QueryCoalescer()
            self._client = PrometheusClient(spec.address, spec.headers,
                                            spec.timeout.total_seconds(), spec.retries, session,
                                            sleep)
            return
        preset = get_preset(spec.preset)
        self.preset = preset
        self.version_label = check_label(
            target.versionLabel or preset.version_label, "versionLabel"
        )
        self.version_mode = (
            preset.version_mode if self.version_label == preset.version_label else "value"
        )
        ns_label = preset.namespace_label
        if spec.namespaceLabel is not None:
            ns_label = spec.namespaceLabel or None
        self.namespace_label = ns_label
        self.latency = latency and preset.latency_metric is not None
        self.member = Member(
            namespace=target.namespace if ns_label else None,
            service=_service_value(target, preset, router) if preset.service_label else None,
            stable=target.stable,
            canary=target.canary,
        )
        self.batch_key = BatchKey(
            address=spec.address.rstrip("/"),
            headers=tuple(sorted(spec.headers.items())),
            timeout=spec.timeout.total_seconds(),
            retries=spec.retries,
            preset=preset.name,
            version_label=self.version_label,
            version_mode=self.version_mode,
            namespace_label=ns_label,
            service_label=preset.service_label,
            extra=tuple(sorted(spec.labels.items())),
        )
        self._coalescer = coalescer if coalescer is not None else QueryCoalescer()
        token = self._coalescer.register(self.batch_key, self.member)
        self._finalizer = weakref.finalize(
            self, self._coalescer.unregister, self.batch_key, token
        )
        self._client = self._coalescer.client(
            self.batch_key,
            lambda: PrometheusClient(spec.address, spec.headers, spec.timeout.total_seconds(),
                                     spec.retries, session, sleep),
        )

    def close(self) -> None:
        """Leave the coalescer's union (also happens when the source is garbage-collected)."""
        fin = getattr(self, "_finalizer", None)
        if fin is not None:
            fin()

    @property
    def queries_sent(self) -> int:
        """HTTP queries sent by this source's client (shared with coalesced sources)."""
        return self._client.sent

    # ------------------------------------------------------------------ fetch
    def fetch(self, t0: datetime, t1: datetime, canary_weight: float | None = None) -> Samples:
        t0s, t1s = math.floor(t0.timestamp()), math.floor(t1.timestamp())
        if t1s <= t0s:
            why = f"empty window: t1 ({t1.isoformat()}) is not after t0 ({t0.isoformat()})"
            return Samples(t0, t1, None, None, canary_weight, why)
        kinds: list[Kind] = ["requests", "errors"] + (["latency"] if self.latency else [])
        results: dict[Kind, MetricResult] = {}
        for kind in kinds:
            if self.custom is not None:
                res = self._run_custom(kind, t0s, t1s)
            else:
                res = self._coalescer.get(
                    self.batch_key, self.member, (kind, t0s, t1s),
                    lambda members, k=kind: self._run_preset(k, members, t0s, t1s),
                )
            results[kind] = res
            if res.error is not None:
                # The tick is lost anyway: stop here so a dead Prometheus costs one metric's
                # bounded retries, not three.
                queries = tuple(q for r in results.values() for q in r.queries)
                return Samples(t0, t1, None, None, canary_weight,
                               f"{kind} query failed: {res.error}", queries)
        queries = tuple(q for k in kinds for q in results[k].queries)
        return self._assemble(t0, t1, canary_weight, results, queries)

    # ------------------------------------------------------------------ assembling
    def _version_of(self, value: str) -> str | None:
        if self.version_mode == "canary-flag":
            return "canary" if value else "stable"
        if value == self.target.stable:
            return "stable"
        if value == self.target.canary:
            return "canary"
        return None

    def _mine(self, key: tuple[str, ...]) -> str | None:
        """'stable' / 'canary' when a group key belongs to this rollout, else None."""
        i = 0
        if self.custom is None:
            if self.namespace_label:
                if key[i] != self.member.namespace:
                    return None
                i += 1
            if self.preset is not None and self.preset.service_label:
                if key[i] != self.member.service:
                    return None
                i += 1
        return self._version_of(key[i])

    def _per_version(self, result: MetricResult) -> dict[str, int]:
        out: dict[str, int] = {}
        for key, n in (result.counts or {}).items():
            role = self._mine(key)
            if role is not None:
                out[role] = out.get(role, 0) + n
        return out

    def _histograms(self, result: MetricResult) -> tuple[dict[str, Histogram], str | None]:
        scale = self.preset.latency_scale if self.preset else (
            0.001 if self.custom and self.custom.latencyUnit == "ms" else 1.0
        )
        buckets: dict[str, dict[float, int]] = {}
        for key, n in (result.counts or {}).items():
            role = self._mine(key[:-1])
            if role is None:
                continue
            le = parse_le(key[-1])
            if le is None:
                return {}, f"latency bucket with a bad le label {key[-1]!r}"
            bound = le if math.isinf(le) else le * scale
            b = buckets.setdefault(role, {})
            b[bound] = b.get(bound, 0) + n
        out: dict[str, Histogram] = {}
        for role, b in buckets.items():
            les = sorted(b)
            if not les or not math.isinf(les[-1]):
                return {}, f"{role} latency histogram has no le=\"+Inf\" bucket"
            try:
                out[role] = Histogram(tuple(les), tuple(b[x] for x in les))
            except ValueError as e:
                return {}, f"{role} latency histogram is inconsistent: {e}"
        return out, None

    def _assemble(
        self, t0: datetime, t1: datetime, weight: float | None,
        results: Mapping[Kind, MetricResult], queries: tuple[str, ...],
    ) -> Samples:
        req = self._per_version(results["requests"])
        err = self._per_version(results["errors"])
        hists: dict[str, Histogram] = {}
        problems: list[str] = []
        if "latency" in results:
            hists, why = self._histograms(results["latency"])
            if why:
                problems.append(why)
        versions: dict[str, VersionSample | None] = {}
        for role in ("stable", "canary"):
            name = self._display(role)
            if role not in req:
                versions[role] = None
                problems.append(f"no series for the {role} version ({name}) in query: "
                                f"{results['requests'].queries[0]}")
                continue
            # No error series while request series exist means no error was ever counted.
            e = err.get(role, 0)
            if e > req[role]:
                versions[role] = None
                problems.append(f"{role} version ({name}) has {e} errors but {req[role]} requests")
                continue
            lat = hists.get(role)
            if "latency" in results and lat is None:
                problems.append(
                    f"no latency series for the {role} version ({name}) in query: "
                    f"{results['latency'].queries[0]}"
                )
            versions[role] = VersionSample(req[role], e, lat)
        return Samples(
            t0, t1, versions["stable"], versions["canary"], weight,
            "; ".join(problems) or None, queries,
        )

    def _display(self, role: str) -> str:
        if self.version_mode == "canary-flag":
            return f'{self.version_label}="" (stable backend)' if role == "stable" else (
                f'{self.version_label}!="" (canary backend)')
        value = self.target.stable if role == "stable" else self.target.canary
        return f"{self.version_label}={value!r}"

    # ------------------------------------------------------------------ preset queries
    def _selector(self, kind: Kind, members: frozenset[Member]) -> tuple[str, tuple[str, ...]]:
        preset = self.preset
        assert preset is not None
        parts = [matcher(m.label, m.op, m.value) for m in preset.fixed]
        parts += [matcher(k, "=", promql_string(v)) for k, v in self.batch_key.extra]
        group: list[str] = []
        if self.namespace_label:
            parts.append(matcher_in(self.namespace_label, (m.namespace or "" for m in members)))
            group.append(self.namespace_label)
        if preset.service_label:
            parts.append(matcher_in(preset.service_label, (m.service or "" for m in members)))
            group.append(preset.service_label)
        if self.version_mode == "value":
            versions = (v for m in members for v in (m.stable, m.canary))
            parts.append(matcher_in(self.version_label, versions))
        group.append(self.version_label)
        if kind == "errors":
            em: Matcher = preset.error_matcher
            parts.append(matcher(em.label, em.op, em.value))
        metric = preset.latency_metric if kind == "latency" else preset.requests_metric
        assert metric is not None
        if kind == "latency":
            group.append("le")
        return f"{metric}{{{', '.join(parts)}}}", tuple(group)

    def _run_preset(
        self, kind: Kind, members: frozenset[Member], t0s: int, t1s: int
    ) -> MetricResult:
        sel, group = self._selector(kind, members)
        w = (t1s - t0s) * 1000
        by = f"by ({', '.join(group)})"

        def part(name: str, expr: str) -> str:
            return f'label_replace({expr}, "{_PART}", "{name}", "", "")'

        fast = " or ".join([
            part("t1", f"sum {by} ({sel})"),
            part("t0", f"sum {by} ({sel} offset {w}ms)"),
            part("resets", f"sum {by} (resets({sel}[{w + LOOKBACK_MS}ms]))"),
            part("gone", f"count {by} ((({sel} offset {w}ms) or last_over_time({sel}[{w}ms])) "
                         f"unless {sel})"),
            part("new", f"count {by} ({sel} unless ({sel} offset {w}ms))"),
        ])
        try:
            rows = self._client.query(fast, t1s)
        except QueryFailed as e:
            return MetricResult(None, (fast,), f"{e.reason}; query: {fast}")
        parts: dict[str, dict[tuple[str, ...], float]] = {}
        for row in rows:
            labels = dict(row.get("metric", {}))
            name = labels.pop(_PART, "")
            key = tuple(labels.get(g, "") for g in group)
            parts.setdefault(name, {})[key] = float(row["value"][1])
        at0, at1 = parts.get("t0", {}), parts.get("t1", {})
        for side in (at0, at1):
            for key, v in side.items():
                if math.isnan(v) or math.isinf(v):
                    return MetricResult(
                        None, (fast,), f"value {v} for {label_text(group, key)}; query: {fast}"
                    )
        churn = any(v > 0 for p in ("resets", "gone", "new") for v in parts.get(p, {}).values())
        counts: dict[tuple[str, ...], int] = {}
        if not churn:
            for key in set(at0) | set(at1):
                if key not in at1:
                    churn = True  # vanished group: only the raw samples can say what it did
                    break
                delta = at1[key] - at0.get(key, 0.0)
                if delta < 0:
                    churn = True
                    break
                n = as_int(delta)
                if n is None:
                    return MetricResult(None, (fast,), f"counter delta {delta} is not an integer "
                                         f"(is this a counter of requests?); query: {fast}")
                counts[key] = n
        if not churn:
            return MetricResult(counts, (fast,))
        raw = f"{sel}[{w + RAW_LOOKBACK_MS}ms]"
        try:
            series = self._client.query(raw, t1s)
        except QueryFailed as e:
            return MetricResult(None, (fast, raw), f"{e.reason}; query: {raw}")
        counts, why = exact_from_raw(series, group, t0s, t1s)
        if why:
            return MetricResult(None, (fast, raw), f"{why}; query: {raw}")
        return MetricResult(counts, (fast, raw))

    # ------------------------------------------------------------------ custom templates
    def _template_values(self) -> dict[str, str]:
        extra = "".join(f', {k}="{promql_string(v)}"' for k, v in sorted(self.spec.labels.items()))
        return {
            "namespace": promql_string(self.target.namespace),
            "service": promql_string(self.target.service),
            "stable": promql_string(self.target.stable),
            "canary": promql_string(self.target.canary),
            "version_label": self.version_label,
            "versions": promql_regex([self.target.stable, self.target.canary]),
            "extra_matchers": extra,
        }

    def _run_custom(self, kind: Kind, t0s: int, t1s: int) -> MetricResult:
        assert self.custom is not None
        template = {"requests": self.custom.requests, "errors": self.custom.errors,
                    "latency": self.custom.latency}[kind]
        assert template is not None
        q = render_template(template, self._template_values())
        self._coalescer.queries += 1
        try:
            rows = self._client.query_range(q, t0s, t1s)
        except QueryFailed as e:
            return MetricResult(None, (q,), f"{e.reason}; query: {q}")
        group = [self.version_label] + (["le"] if kind == "latency" else [])
        counts: dict[tuple[str, ...], int] = {}
        for row in rows:
            labels = row.get("metric", {})
            key = tuple(labels.get(g, "") for g in group)
            vals = {int(float(ts)): float(v) for ts, v in row.get("values", [])}
            if any(math.isnan(v) or math.isinf(v) for v in vals.values()):
                return MetricResult(None, (q,), f"NaN/Inf for {label_text(group, key)}; query: {q}")
            if t1s not in vals:
                return MetricResult(None, (q,), f"series {label_text(group, key)} has no value "
                                     f"at the window's end; query: {q}")
            delta = vals[t1s] - vals.get(t0s, 0.0)
            if delta < 0:
                return MetricResult(None, (q,), (
                    f"counter decreased in the window for {label_text(group, key)} "
                    "(a reset or a vanished series); custom templates cannot correct for "
                    f"resets, use a preset; query: {q}"))
            n = as_int(delta)
            if n is None:
                why = f"counter delta {delta} is not an integer"
                return MetricResult(None, (q,), f"{why}; query: {q}")
            counts[key] = counts.get(key, 0) + n
        return MetricResult(counts, (q,))


