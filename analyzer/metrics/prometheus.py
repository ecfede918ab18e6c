"""The Prometheus metric source: exact per-version counts for a window, on `prometheus-api-client`.

What it owns:
- PromQL building for the presets (`analyzer.metrics.presets`) and for custom templates, with
  every user value escaped (`promql_string`, `promql_regex`) and every label name validated;
- exact integer counts for a window (t0, t1] per version (see "Exact counts" below);
- bounded retries within a tick and `no-data` results naming the failed query;
- `QueryCoalescer`: rollouts that share a Prometheus and a preset share one query per metric
  per tick, grouped by (namespace, service, version), so a tick's cost does not grow with the
  number of rollouts.

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

import ast
import json
import math
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from analyzer.metrics.presets import LABEL_NAME, Matcher, Preset, get_preset
from analyzer.policy import (
    ClassicCheck,
    LatencyCheck,
    Policy,
    PrometheusSource,
    PromQueries,
    Target,
    ThresholdCheck,
)
from analyzer.redaction import mask_userinfo
from analyzer.types import Histogram, Samples, VersionSample

__all__ = [
    "SHARED_COALESCER",
    "PrometheusConfigError",
    "PrometheusMetricSource",
    "QueryCoalescer",
    "promql_regex",
    "promql_string",
    "render_template",
]

Kind = Literal["requests", "errors", "latency"]
LOOKBACK_MS = 5 * 60 * 1000  # Prometheus' default lookback delta: what an instant query sees
RAW_LOOKBACK_MS = 15 * 60 * 1000  # how far back the raw-sample path looks for a series' baseline
_PART = "canary_part"  # label marking the parts of the combined query


class PrometheusConfigError(ValueError):
    """The source's configuration cannot produce a safe query (bad label name, bad template)."""


# ---------------------------------------------------------------------- escaping


def promql_string(value: str) -> str:
    """Escape `value` for the inside of a double-quoted PromQL string literal.

    PromQL strings follow Go's escapes: backslash, double quote and control characters are
    escaped, so no value can close the string or the selector (`v1"} or vector(1) #`).
    """
    out: list[str] = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


_RE2_SPECIAL = set("\\.+*?()|[]{}^$")


def _re2_literal(value: str) -> str:
    # Only RE2 metacharacters are escaped: RE2 rejects escapes of letters, digits and spaces.
    return "".join("\\" + ch if ch in _RE2_SPECIAL else ch for ch in value)


def promql_regex(values: Iterable[str]) -> str:
    """An anchored RE2 alternation matching exactly `values`, escaped for a PromQL string."""
    return promql_string("|".join(_re2_literal(v) for v in sorted(set(values))))


def _check_label(name: str, what: str) -> str:
    if not LABEL_NAME.match(name):
        raise PrometheusConfigError(
            f"{what}: {name!r} is not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"
        )
    return name


def _matcher(label: str, op: str, value: str) -> str:
    return f'{label}{op}"{value}"'


def _in(label: str, values: Iterable[str]) -> str:
    vals = sorted(set(values))
    if len(vals) == 1:
        return _matcher(label, "=", promql_string(vals[0]))
    return _matcher(label, "=~", promql_regex(vals))


_PLACEHOLDER = re.compile(
    r"\{(namespace|service|stable|canary|version_label|versions|extra_matchers)\}"
)


def render_template(template: str, values: Mapping[str, str]) -> str:
    """Fill the documented `{placeholder}`s of a custom template; other braces stay PromQL."""
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


# ---------------------------------------------------------------------- client with retries


class _QueryFailed(Exception):
    def __init__(self, reason: str, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class _Client:
    """prometheus-api-client with our own bounded retries (urllib3's are turned off)."""

    def __init__(
        self, address: str, headers: Mapping[str, str], timeout: float, retries: int,
        session: requests.Session | None = None, sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.address = address.rstrip("/")
        # reasons are recorded in the store and shown in reports: never with a password
        self.shown_address = mask_userinfo(self.address)
        self.timeout = timeout
        self.retries = retries
        self.sleep = sleep
        self.sent = 0
        self._prom = PrometheusConnect(
            url=self.address, headers=dict(headers) or None,
            retry=Retry(total=0, raise_on_status=False), session=session, timeout=timeout,
        )

    def query(self, promql: str, at: float) -> list[dict[str, Any]]:
        params = {"time": f"{at:.3f}", "timeout": f"{self.timeout:g}s"}
        return self._with_retries(lambda: self._prom.custom_query(promql, params=params))

    def query_range(self, promql: str, start: int, end: int) -> list[dict[str, Any]]:
        step = str(max(end - start, 1))
        return self._with_retries(lambda: self._prom.custom_query_range(
            promql, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC), step,
            params={"timeout": f"{self.timeout:g}s"},
        ))

    def _with_retries(self, call: Callable[[], Any]) -> list[dict[str, Any]]:
        last: _QueryFailed | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(min(0.2 * 2 ** (attempt - 1), 2.0))
            self.sent += 1
            try:
                result = call()
                if not isinstance(result, list):
                    raise _QueryFailed("unexpected answer (no result list)", True)
                return result
            except _QueryFailed as e:
                last = e
            except PrometheusApiClientException as e:
                last = _classify_http_error(str(e))
            except requests.Timeout:
                last = _QueryFailed(f"timed out after {self.timeout:g}s", True)
            except requests.ConnectionError as e:
                if "timed out" in str(e).lower():  # urllib3 wraps read timeouts this way
                    last = _QueryFailed(f"timed out after {self.timeout:g}s", True)
                else:
                    last = _QueryFailed(
                        f"cannot connect to {self.shown_address} ({_short(e)})", True)
            except (requests.RequestException, ValueError, KeyError) as e:
                last = _QueryFailed(
                    f"bad answer from {self.shown_address}: {_short(e)}", True)
            if not last.retryable:
                break
        assert last is not None
        tries = attempt + 1
        suffix = f" (after {tries} attempts)" if tries > 1 else ""
        raise _QueryFailed(last.reason + suffix, False)


def _short(e: BaseException) -> str:
    text = str(e)
    m = re.search(r"\[Errno -?\d+\] [^'\")\]]+|Connection refused|Read timed out", text)
    return m.group(0) if m else text[:200]


def _classify_http_error(text: str) -> _QueryFailed:
    m = re.match(r"HTTP Status Code (\d+) \((.*)\)\s*$", text, re.S)
    if not m:
        return _QueryFailed(text[:300], True)
    status = int(m.group(1))
    body = m.group(2)
    detail = body[:300]
    try:
        raw = ast.literal_eval(body)
        doc = json.loads(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw)
        detail = f"{doc.get('errorType', 'error')}: {doc.get('error', '')}".strip()
    except (ValueError, SyntaxError, AttributeError, TypeError):
        pass
    # 4xx other than 429 is the query's own fault (bad PromQL): retrying cannot help.
    retryable = status >= 500 or status in (408, 429)
    return _QueryFailed(f"HTTP {status}: {detail}", retryable)


# ---------------------------------------------------------------------- results


@dataclass(frozen=True)
class _MetricResult:
    """Exact counts of one metric per group key, or why there are none."""

    counts: Mapping[tuple[str, ...], int] | None
    queries: tuple[str, ...]
    error: str | None = None


@dataclass(frozen=True)
class _Member:
    """One rollout's slice of a shared query."""

    namespace: str | None
    service: str | None
    stable: str
    canary: str


@dataclass(frozen=True)
class _BatchKey:
    address: str
    headers: tuple[tuple[str, str], ...]
    timeout: float
    retries: int
    preset: str
    version_label: str
    version_mode: str
    namespace_label: str | None
    service_label: str | None
    extra: tuple[tuple[str, str], ...]


@dataclass
class _Entry:
    members: frozenset[_Member]
    created: float
    event: threading.Event = field(default_factory=threading.Event)
    result: _MetricResult | None = None
    served: set[_Member] = field(default_factory=set)
    earlier: frozenset[_Member] = frozenset()  # served by earlier answers for the same tick


class QueryCoalescer:
    """Shares one query per metric per tick among rollouts using the same Prometheus + preset.

    Every live `PrometheusMetricSource` registers its slice (namespace, service, versions). The
    first rollout to ask for a (Prometheus, preset, labels, metric, t0, t1) builds one query over
    the union of the registered slices likely to ask for the same window, grouped by
    (namespace, service, version); the others in the same second read their slice from that
    answer (concurrent callers wait for it); a rollout asking again for a tick it already had
    gets a new query. A source that is garbage-collected or `close()`d leaves the union.
    `queries` counts the queries this coalescer started (one per metric per tick and group,
    retries aside).

    "Likely to ask": a slice whose last window ended at this t0 (its ticks are in step with
    the asker's), one in the middle of this very window (its other metrics), or one that has
    not asked yet; minus those an earlier answer for the same tick already served. Rollouts
    ticking at other seconds, and one-off windows such as a rollout's pre-rollout baseline,
    are left out: with every slice in every query, each query would cost Prometheus (and the
    parsing) O(all rollouts) while serving only those ticking together.
    A slice left out that asks after all simply runs its own query.
    """

    def __init__(self, ttl: float = 120.0) -> None:
        self.ttl = ttl
        self.queries = 0
        self._lock = threading.Lock()
        self._groups: dict[_BatchKey, _Group] = {}
        self._cache: dict[tuple[Any, ...], _Entry] = {}
        self._created: deque[tuple[float, tuple[Any, ...], _Entry]] = deque()
        self._clients: dict[_BatchKey, _Client] = {}
        self._next = 0

    def register(self, key: _BatchKey, member: _Member) -> int:
        with self._lock:
            self._next += 1
            self._groups.setdefault(key, _Group()).add(self._next, member)
            return self._next

    def unregister(self, key: _BatchKey, token: int) -> None:
        with self._lock:
            group = self._groups.get(key)
            if group is not None:
                group.remove(token)
                if not group.tokens:
                    del self._groups[key]
                    self._clients.pop(key, None)

    def client(self, key: _BatchKey, make: Callable[[], _Client]) -> _Client:
        with self._lock:
            c = self._clients.get(key)
            if c is None:
                c = self._clients[key] = make()
            return c

    def get(
        self, key: _BatchKey, member: _Member, tick: tuple[Any, ...],
        execute: Callable[[frozenset[_Member]], _MetricResult],
    ) -> _MetricResult:
        """`tick` is (metric, t0, t1); `execute(members)` runs the shared query."""
        cache_key = (key, *tick)
        window = (tick[1], tick[2])
        now = time.monotonic()
        with self._lock:
            self._evict(now)
            group = self._groups.get(key) or _Group()
            entry = self._cache.get(cache_key)
            # A rollout asking twice for the same tick wants fresh data (a retry, a recovery),
            # not the answer it already had.
            if entry is None or member not in entry.members or member in entry.served:
                # those earlier answers for this very tick served will not ask again
                done = entry.earlier | entry.served if entry is not None else frozenset()
                entry = _Entry(members=(group.may_ask(window) - done) | {member}, created=now,
                               earlier=done)
                self._cache[cache_key] = entry
                self._created.append((now, cache_key, entry))
                leader = True
                self.queries += 1
            else:
                leader = False
            entry.served.add(member)
            group.asked(member, window)
        if not leader:
            entry.event.wait()
            assert entry.result is not None
            return entry.result
        try:
            entry.result = execute(entry.members)
        except Exception as e:  # never leave waiters hanging; the caller turns this into no-data
            entry.result = _MetricResult(None, (), f"internal error: {type(e).__name__}: {e}")
        finally:
            entry.event.set()
        return entry.result

    def _evict(self, now: float) -> None:
        # oldest first, so each get costs only what expired (not a scan of the whole cache)
        while self._created and now - self._created[0][0] > self.ttl:
            _, cache_key, entry = self._created[0]
            if not entry.event.is_set():
                break  # a query still running past the ttl: keep it (and what follows) for now
            self._created.popleft()
            if self._cache.get(cache_key) is entry:
                del self._cache[cache_key]


@dataclass
class _Group:
    """The registered slices of one batch key, indexed by the window each asked for last, so
    building a query's union costs the size of the union, not of the whole group."""

    tokens: dict[int, _Member] = field(default_factory=dict)
    count: dict[_Member, int] = field(default_factory=dict)  # tokens per slice
    fresh: set[_Member] = field(default_factory=set)  # registered, not asked yet
    last: dict[_Member, tuple[Any, Any]] = field(default_factory=dict)
    by_end: dict[Any, set[_Member]] = field(default_factory=dict)
    by_window: dict[tuple[Any, Any], set[_Member]] = field(default_factory=dict)

    def add(self, token: int, member: _Member) -> None:
        self.tokens[token] = member
        self.count[member] = self.count.get(member, 0) + 1
        if member not in self.last:
            self.fresh.add(member)

    def remove(self, token: int) -> None:
        member = self.tokens.pop(token, None)
        if member is None:
            return
        self.count[member] -= 1
        if self.count[member] > 0:
            return
        del self.count[member]
        self.fresh.discard(member)
        self._unindex(member)

    def may_ask(self, window: tuple[Any, Any]) -> frozenset[_Member]:
        """Slices likely to ask for `window`: in step (their last window ended at its start),
        in the middle of it (their other metrics), or not asked yet."""
        return frozenset(self.fresh).union(self.by_end.get(window[0], ()),
                                           self.by_window.get(window, ()))

    def asked(self, member: _Member, window: tuple[Any, Any]) -> None:
        if member not in self.count:
            return  # not registered (or already gone): nothing to index
        self.fresh.discard(member)
        if self.last.get(member) == window:
            return
        self._unindex(member)
        self.last[member] = window
        self.by_end.setdefault(window[1], set()).add(member)
        self.by_window.setdefault(window, set()).add(member)

    def _unindex(self, member: _Member) -> None:
        old = self.last.pop(member, None)
        if old is None:
            return
        for index, k in ((self.by_end, old[1]), (self.by_window, old)):
            bucket = index.get(k)
            if bucket is not None:
                bucket.discard(member)
                if not bucket:
                    del index[k]


SHARED_COALESCER = QueryCoalescer()
"""The process-wide coalescer a source built from a whole policy uses by default."""


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
            _check_label(k, "spec.metrics.labels")
        if self.custom is not None:
            self.preset: Preset | None = None
            self.version_label = _check_label(target.versionLabel or "version", "versionLabel")
            self.version_mode = "value"
            self.latency = latency and self.custom.latency is not None
            self._coalescer = QueryCoalescer()
            self._client = _Client(spec.address, spec.headers, spec.timeout.total_seconds(),
                                   spec.retries, session, sleep)
            return
        preset = get_preset(spec.preset)
        self.preset = preset
        self.version_label = _check_label(
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
        self.member = _Member(
            namespace=target.namespace if ns_label else None,
            service=_service_value(target, preset, router) if preset.service_label else None,
            stable=target.stable,
            canary=target.canary,
        )
        self.batch_key = _BatchKey(
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
            lambda: _Client(spec.address, spec.headers, spec.timeout.total_seconds(),
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
        results: dict[Kind, _MetricResult] = {}
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

    def _per_version(self, result: _MetricResult) -> dict[str, int]:
        out: dict[str, int] = {}
        for key, n in (result.counts or {}).items():
            role = self._mine(key)
            if role is not None:
                out[role] = out.get(role, 0) + n
        return out

    def _histograms(self, result: _MetricResult) -> tuple[dict[str, Histogram], str | None]:
        scale = self.preset.latency_scale if self.preset else (
            0.001 if self.custom and self.custom.latencyUnit == "ms" else 1.0
        )
        buckets: dict[str, dict[float, int]] = {}
        for key, n in (result.counts or {}).items():
            role = self._mine(key[:-1])
            if role is None:
                continue
            le = _parse_le(key[-1])
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
        results: Mapping[Kind, _MetricResult], queries: tuple[str, ...],
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
    def _selector(self, kind: Kind, members: frozenset[_Member]) -> tuple[str, tuple[str, ...]]:
        preset = self.preset
        assert preset is not None
        parts = [_matcher(m.label, m.op, m.value) for m in preset.fixed]
        parts += [_matcher(k, "=", promql_string(v)) for k, v in self.batch_key.extra]
        group: list[str] = []
        if self.namespace_label:
            parts.append(_in(self.namespace_label, (m.namespace or "" for m in members)))
            group.append(self.namespace_label)
        if preset.service_label:
            parts.append(_in(preset.service_label, (m.service or "" for m in members)))
            group.append(preset.service_label)
        if self.version_mode == "value":
            versions = (v for m in members for v in (m.stable, m.canary))
            parts.append(_in(self.version_label, versions))
        group.append(self.version_label)
        if kind == "errors":
            em: Matcher = preset.error_matcher
            parts.append(_matcher(em.label, em.op, em.value))
        metric = preset.latency_metric if kind == "latency" else preset.requests_metric
        assert metric is not None
        if kind == "latency":
            group.append("le")
        return f"{metric}{{{', '.join(parts)}}}", tuple(group)

    def _run_preset(
        self, kind: Kind, members: frozenset[_Member], t0s: int, t1s: int
    ) -> _MetricResult:
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
        except _QueryFailed as e:
            return _MetricResult(None, (fast,), f"{e.reason}; query: {fast}")
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
                    return _MetricResult(
                        None, (fast,), f"value {v} for {_lab(group, key)}; query: {fast}"
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
                n = _as_int(delta)
                if n is None:
                    return _MetricResult(None, (fast,), f"counter delta {delta} is not an integer "
                                         f"(is this a counter of requests?); query: {fast}")
                counts[key] = n
        if not churn:
            return _MetricResult(counts, (fast,))
        raw = f"{sel}[{w + RAW_LOOKBACK_MS}ms]"
        try:
            series = self._client.query(raw, t1s)
        except _QueryFailed as e:
            return _MetricResult(None, (fast, raw), f"{e.reason}; query: {raw}")
        counts, why = _exact_from_raw(series, group, t0s, t1s)
        if why:
            return _MetricResult(None, (fast, raw), f"{why}; query: {raw}")
        return _MetricResult(counts, (fast, raw))

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

    def _run_custom(self, kind: Kind, t0s: int, t1s: int) -> _MetricResult:
        assert self.custom is not None
        template = {"requests": self.custom.requests, "errors": self.custom.errors,
                    "latency": self.custom.latency}[kind]
        assert template is not None
        q = render_template(template, self._template_values())
        self._coalescer.queries += 1
        try:
            rows = self._client.query_range(q, t0s, t1s)
        except _QueryFailed as e:
            return _MetricResult(None, (q,), f"{e.reason}; query: {q}")
        group = [self.version_label] + (["le"] if kind == "latency" else [])
        counts: dict[tuple[str, ...], int] = {}
        for row in rows:
            labels = row.get("metric", {})
            key = tuple(labels.get(g, "") for g in group)
            vals = {int(float(ts)): float(v) for ts, v in row.get("values", [])}
            if any(math.isnan(v) or math.isinf(v) for v in vals.values()):
                return _MetricResult(None, (q,), f"NaN/Inf for {_lab(group, key)}; query: {q}")
            if t1s not in vals:
                return _MetricResult(None, (q,), f"series {_lab(group, key)} has no value "
                                     f"at the window's end; query: {q}")
            delta = vals[t1s] - vals.get(t0s, 0.0)
            if delta < 0:
                return _MetricResult(None, (q,), (
                    f"counter decreased in the window for {_lab(group, key)} "
                    "(a reset or a vanished series); custom templates cannot correct for "
                    f"resets, use a preset; query: {q}"))
            n = _as_int(delta)
            if n is None:
                why = f"counter delta {delta} is not an integer"
                return _MetricResult(None, (q,), f"{why}; query: {q}")
            counts[key] = counts.get(key, 0) + n
        return _MetricResult(counts, (q,))


# ---------------------------------------------------------------------- helpers


def _lab(group: Sequence[str], key: tuple[str, ...]) -> str:
    return "{" + ", ".join(f'{g}="{v}"' for g, v in zip(group, key, strict=True)) + "}"


def _as_int(x: float) -> int | None:
    n = round(x)
    return n if abs(x - n) <= 1e-6 * max(1.0, abs(x)) else None


def _parse_le(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return None if math.isnan(v) else v


def _exact_from_raw(
    series: Sequence[Mapping[str, Any]], group: Sequence[str], t0s: int, t1s: int
) -> tuple[dict[tuple[str, ...], int], str | None]:
    """Per-series increments in (t0, t1]: deltas, post-reset values after a reset."""
    counts: dict[tuple[str, ...], int] = {}
    lookback_start = t0s - LOOKBACK_MS / 1000
    for s in series:
        labels = s.get("metric", {})
        key = tuple(labels.get(g, "") for g in group)
        pts = sorted((float(ts), float(v)) for ts, v in s.get("values", []))
        if any(math.isnan(v) or math.isinf(v) for _, v in pts):
            return {}, f"NaN/Inf sample in series {dict(labels)}"
        before = [v for ts, v in pts if ts <= t0s]
        inside = [v for ts, v in pts if t0s < ts <= t1s]
        recent = any(ts > lookback_start for ts, _ in pts)
        if not recent:
            continue  # the series had stopped before the window: not part of it
        prev: float | None = before[-1] if before else None
        total = 0.0
        for v in inside:
            if prev is None or v < prev:
                total += v  # new series, or a reset: the counter restarted from 0
            else:
                total += v - prev
            prev = v
        n = _as_int(total)
        if n is None:
            return {}, f"counter increments {total} are not integers in series {dict(labels)}"
        counts[key] = counts.get(key, 0) + n
    return counts, None
