"""Writing exporter-shaped series with exact bookkeeping: pod lifecycles, counters, classic
histograms, OpenMetrics text, the exporters' histogram buckets.

Every increment a counter gets is recorded per timestamp (`Series.contrib`), so the dataset
can say exactly what any window (t0, t1] holds. Ported from the phase-A data module of issue 23
(SHAPES.md); the bucket sources are cited on each constant.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

STEP = 30  # seconds between scrapes (kube-prometheus' default interval)
# 16 minutes of data: 5 min before the window (t0 = base + 300), the 10 min window, 1 min after
STEPS = 32

# Envoy's default histogram bounds (ms), used by istio_request_duration_milliseconds and
# envoy_cluster_upstream_rq_time: envoyproxy/envoy source/common/stats/histogram_impl.cc,
# HistogramStatisticsImpl::supportedBuckets().
ENVOY_MS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
            300000, 600000, 1800000, 3600000)
# prometheus.DefBuckets, the ingress-nginx default for --time-buckets:
# kubernetes/ingress-nginx pkg/flags/flags.go (controller-v1.15.0).
PROM_DEF_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# Knative queue-proxy OpenCensus distribution (ms): knative/serving pkg/queue/request_metric.go
# defaultLatencyDistribution (knative-v1.18.0).
KNATIVE_OC_MS = (5, 10, 20, 40, 60, 80, 100, 150, 200, 250, 300, 350, 400, 450, 500, 600, 700,
                 800, 900, 1000, 2000, 5000, 10000, 20000, 50000, 100000)
# Knative queue-proxy OpenTelemetry histogram (s): knative/serving pkg/queue/request_metric.go
# latencyBounds (knative-v1.19.0 .. knative-v1.22.x).
KNATIVE_OTEL_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
# Seldon Core v1 executor and Core 2 agent (s): SeldonIO/seldon-core
# executor/api/metric/constants.go DefBuckets (v1.18.0); scheduler/pkg/metrics/agent.go
# DefaultHistogramBuckets (v2.10.0).
SELDON_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
# linkerd2-proxy response_latency_ms bounds (ms); le="1000" appears in linkerd2-proxy's
# telemetry tests (not re-read from the proxy source).
LINKERD_MS = (1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000,
              4000, 5000, 10000, 20000, 30000, 40000, 50000)


def ms(bounds_ms: Iterable[float]) -> tuple[float, ...]:
    return tuple(b / 1000.0 for b in bounds_ms)


def le_text(bound: float) -> str:
    """`le` as Go's strconv.FormatFloat(b, 'g', -1, 64) and Envoy's {:.32g} print it."""
    if math.isinf(bound):
        return "+Inf"
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


@dataclass(frozen=True)
class Pod:
    """The process owning a set of series: the application pod (sidecar, queue-proxy, executor)
    or a shared proxy pod (controller, Envoy, gateway, model server replica)."""

    name: str
    start: int = 0  # first step (0: existed before the data starts)
    end: int = STEPS  # one past the last step
    reset_at: int | None = None  # the process restarted at this step (counters from 0)


# Per version, as tests/prometheus/datasets.py: stable has a pod that vanishes inside the window
# (last sample at base + 510 s); canary has a pod whose counters reset inside it (base + 600 s)
# and a pod born inside it (base + 450 s).
STABLE_PODS = (Pod("a"), Pod("b"), Pod("gone", end=18))
CANARY_PODS = (Pod("a", reset_at=20), Pod("new", start=15))
PODS = {"stable": STABLE_PODS, "canary": CANARY_PODS}
# Shared proxies report every version: one lifecycle per proxy pod, with a restart, a pod born
# and a pod gone inside the window.
PROXY_PODS = (Pod("0"), Pod("1", reset_at=20), Pod("2", start=15), Pod("3", end=18))


@dataclass
class Series:
    """One written series and what it contributes at each step (exact counted increments)."""

    name: str
    labels: dict[str, str]
    points: list[tuple[int, float]]
    scenario: str = ""
    slice: str = ""
    role: str = ""  # stable | canary | combined | decoy:<why> | "" (auxiliary)
    kind: str = "aux"  # requests | bucket | aux
    outcome: str = ""
    le: float | None = None  # bucket bound in seconds
    contrib: dict[int, float] = field(default_factory=dict)  # timestamp -> counted increment


@dataclass(frozen=True)
class Outcome:
    """One response class of a version: its labels, its outcome name, its traffic per step.

    Outcomes: ok (2xx, gRPC OK), client_err (4xx), http_5xx, grpc_server_err (HTTP 200 with a
    gRPC status a server failure maps to: Unknown, DeadlineExceeded, Unimplemented, Internal,
    Unavailable, DataLoss), grpc_client_err (HTTP 200 with NotFound, InvalidArgument, ...),
    http5xx_grpc (HTTP 5xx that also carries a gRPC status: counted once, never twice).
    """

    outcome: str
    labels: Mapping[str, str]
    low: int
    high: int


class Writer:
    def __init__(self, base: int) -> None:
        self.base = base
        self.series: list[Series] = []

    def ts(self, i: int) -> int:
        return self.base + i * STEP

    def counter(self, name: str, labels: Mapping[str, str], incs: Sequence[float], pod: Pod,
                offset: int = 1000, **meta: object) -> Series:
        """A counter owned by `pod`: value `offset` at step 0 for a pod older than the data,
        otherwise 0 + the step's increments; after a reset it restarts from the step's
        increment. Records what each sample adds (the first sample of an old pod adds nothing).
        """
        pts: list[tuple[int, float]] = []
        contrib: dict[int, float] = {}
        v: float = 0
        for i in range(pod.start, pod.end):
            if i == pod.start and pod.start == 0:
                v = offset
            elif i == pod.start or pod.reset_at == i:
                v = incs[i]
                contrib[self.ts(i)] = incs[i]
            else:
                v += incs[i]
                contrib[self.ts(i)] = incs[i]
            pts.append((self.ts(i), v))
        s = Series(name, _clean(labels), pts, contrib=contrib, **meta)  # type: ignore[arg-type]
        self.series.append(s)
        return s

    def gauge(self, name: str, labels: Mapping[str, str], value: float, pod: Pod,
              **meta: object) -> None:
        pts = [(self.ts(i), value) for i in range(pod.start, pod.end)]
        self.series.append(Series(name, _clean(labels), pts, **meta))  # type: ignore[arg-type]

    def histogram(self, base: str, labels: Mapping[str, str], obs: Sequence[Sequence[float]],
                  bounds_s: Sequence[float], bounds_text: Sequence[float], pod: Pod, *,
                  role: str, scenario: str, slice: str, outcome: str, count_is_requests: bool,
                  sum_scale: float = 1.0) -> None:
        """A classic histogram from per-step observations (seconds): `<base>_bucket{le}` per
        bound (`le` in the exporter's unit: `bounds_text`), `_count`, `_sum` (`sum_scale`
        converts seconds to the exporter's unit)."""
        meta = {"scenario": scenario, "slice": slice, "role": role, "outcome": outcome}
        bounds = [*zip(bounds_s, bounds_text, strict=True), (math.inf, math.inf)]
        for j, (b_s, b_txt) in enumerate(bounds):
            incs = [sum(1 for x in step if x <= b_s) for step in obs]
            self.counter(f"{base}_bucket", {**labels, "le": le_text(b_txt)}, incs, pod,
                         offset=100 + j, kind="bucket", le=b_s, **meta)
        counts = [len(step) for step in obs]
        self.counter(f"{base}_count", labels, counts, pod, offset=100 + len(bounds_s),
                     kind="requests" if count_is_requests else "aux", **meta)
        # sums are counted by no check; written for realism (monotonic, reset with the pod)
        sums = [sum(step) * sum_scale for step in obs]
        pts: list[tuple[int, float]] = []
        v = 0.0
        for i in range(pod.start, pod.end):
            if pod.start == 0 and i == 0:
                v = 50.0
            elif i == pod.start or pod.reset_at == i:
                v = sums[i]
            else:
                v += sums[i]
            pts.append((self.ts(i), round(v, 6)))
        self.series.append(Series(f"{base}_sum", _clean(labels), pts, **meta))  # type: ignore[arg-type]

    @staticmethod
    def text_of(series: Iterable[Series]) -> str:
        """OpenMetrics: one `unknown` family per sample name, so each name is stored as written
        (as analyzer.demo.local_prometheus.OpenMetricsWriter does)."""
        by_name: dict[str, list[Series]] = {}
        for s in series:
            by_name.setdefault(s.name, []).append(s)
        out: list[str] = []
        for name, group in by_name.items():
            out.append(f"# TYPE {name} unknown")
            for s in group:
                lab = ",".join(f'{k}="{_esc(v)}"' for k, v in s.labels.items())
                sel = f"{name}{{{lab}}}" if lab else name
                out.extend(f"{sel} {_num(v)} {t}" for t, v in s.points)
        out.append("# EOF")
        return "\n".join(out) + "\n"


def _clean(labels: Mapping[str, str]) -> dict[str, str]:
    # An empty label value is the same as no label in Prometheus (the scrape drops it).
    return {k: v for k, v in labels.items() if v != ""}


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def full(role: str, pod: Pod, pods: Sequence[Pod]) -> bool:
    """Decoys write their latency histograms on one pod only (size); counters on every pod."""
    return not role.startswith("decoy") or pod == pods[0]


def incs(rng: random.Random, o: Outcome) -> list[int]:
    return [rng.randint(o.low, o.high) for _ in range(STEPS)]


def observations(rng: random.Random, counts: Sequence[int], median_s: float,
                 truncate: bool = False) -> list[list[float]]:
    """Latencies (seconds) for each step's requests: log-normal around `median_s`."""
    out: list[list[float]] = []
    for n in counts:
        xs = [min(rng.lognormvariate(math.log(median_s), 0.8), 120.0) for _ in range(n)]
        if truncate:  # knative-v1.19.0..v1.20.0: float64(latency / time.Second), whole seconds
            xs = [float(int(x)) for x in xs]
        out.append(xs)
    return out


@dataclass(frozen=True)
class Target:
    """What a policy names for one slice of a scenario, as the exporter spells the values."""

    namespace: str
    service: str
    stable: str
    canary: str
    note: str = ""


@dataclass(frozen=True)
class Scenario:
    name: str
    exporter: str
    source: str
    slices: Mapping[str, Target]
    latency_per_version: bool = True
