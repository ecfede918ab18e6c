"""Synthetic exporter data for the Prometheus tests, one dataset per preset.

Each dataset writes series the way the real exporter names them (metric and label names are
spelled out here, independently of analyzer/sources/prometheus/presets.py, so a wrong preset
name fails the tests) and records the exact counts written into the test window (T0, T1].

Shapes per (service, version): stable has two pods; canary has a pod whose counters reset
inside the window and a pod born inside the window; one more pod vanishes mid-window. Error
series and latency buckets follow the same pods.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from analyzer.demo.local_prometheus import OpenMetricsWriter
from tests.support.clock import EPOCH

STEP = 15  # seconds between scrapes
STEPS = 80  # 20 minutes of data
# The suite's fixed clock (hour-aligned, long past): promtool blocks must not overlap the head
# block, and the data must not depend on when the tests run.
BASE = int(EPOCH.timestamp())
T0 = BASE + 300
T1 = BASE + 900
LE_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, math.inf)


@dataclass
class Expected:
    requests: int = 0
    errors: int = 0
    buckets: dict[float, int] = field(default_factory=dict)  # cumulative, seconds


@dataclass
class Pod:
    name: str
    start: int = 0  # first step (0: existed before the data starts)
    end: int = STEPS  # one past the last step
    reset_at: int | None = None


def _in_window(i: int) -> bool:
    return T0 < BASE + i * STEP <= T1


def write_counter(
    w: OpenMetricsWriter, name: str, labels: dict[str, str], incs: list[int], pod: Pod,
    offset: int = 1000,
) -> int:
    """Write one counter series; return what it adds in the window."""
    pts: list[tuple[float, float]] = []
    counted = 0
    v = 0
    for i in range(pod.start, pod.end):
        if i == pod.start:
            v = offset if pod.start == 0 else incs[i]
            if pod.start > 0 and _in_window(i):
                counted += incs[i]
        elif pod.reset_at == i:
            v = incs[i]  # the process restarted: counter from 0, then this step's requests
            if _in_window(i):
                counted += incs[i]
        else:
            v += incs[i]
            if _in_window(i):
                counted += incs[i]
        pts.append((BASE + i * STEP, v))
    w.add(name, labels, pts)
    return counted


@dataclass(frozen=True)
class Exporter:
    """How one provider names its series."""

    requests: str
    bucket: str
    ms: bool
    labels: Callable[[str, str, str, str, str], dict[str, str]]  # ns, svc, version, pod, code
    error_codes: tuple[str, ...]
    ok_codes: tuple[str, ...]
    decoy: Callable[[dict[str, str]], dict[str, str]] | None = None  # a look-alike to exclude


def _istio(ns: str, svc: str, ver: str, pod: str, code: str) -> dict[str, str]:
    return {
        "reporter": "destination", "source_workload": "frontend",
        "destination_workload": f"{svc}-{ver}", "destination_workload_namespace": ns,
        "destination_service": f"{svc}.{ns}.svc.cluster.local",
        "destination_service_name": svc, "destination_service_namespace": ns,
        "destination_version": ver, "request_protocol": "http", "response_code": code,
        "pod": pod,
    }


def _nginx(ns: str, svc: str, ver: str, pod: str, code: str) -> dict[str, str]:
    labels = {
        "controller_class": "k8s.io/ingress-nginx", "controller_namespace": "ingress-nginx",
        "controller_pod": f"ingress-nginx-{pod}", "ingress": svc, "namespace": ns,
        "method": "GET", "path": "/", "service": svc, "status": code,
    }
    if ver != "stable":
        labels["canary"] = f"{ns}-{svc}-canary-80"  # ingress-nginx: the alternative upstream
    return labels


def _knative(ns: str, svc: str, ver: str, pod: str, code: str) -> dict[str, str]:
    return {
        "namespace_name": ns, "configuration_name": svc, "service_name": svc,
        "revision_name": ver, "container_name": "queue-proxy", "pod_name": f"{ver}-{pod}",
        "response_code": code, "response_code_class": f"{code[0]}xx",
    }


def _seldon(ns: str, svc: str, ver: str, pod: str, code: str) -> dict[str, str]:
    # the executor has no namespace label; Seldon's PodMonitor adds the target label
    return {
        "deployment_name": svc, "predictor_name": ver, "predictor_version": "",
        "service": "/predict", "method": "POST", "code": code, "pod": pod, "namespace": ns,
    }


def _linkerd(ns: str, svc: str, ver: str, pod: str, code: str) -> dict[str, str]:
    return {
        "direction": "inbound", "namespace": ns, "deployment": ver, "pod": f"{ver}-{pod}",
        "status_code": code, "classification": "failure" if code.startswith("5") else "success",
        "tls": "true",
    }


def _generic(ns: str, svc: str, ver: str, pod: str, code: str) -> dict[str, str]:
    return {"namespace": ns, "service": svc, "version": ver, "code": code, "pod": pod,
            "job": svc}


EXPORTERS: dict[str, Exporter] = {
    "istio": Exporter("istio_requests_total", "istio_request_duration_milliseconds_bucket",
                      True, _istio, ("503",), ("200", "404"),
                      decoy=lambda lab: {**lab, "reporter": "source"}),
    "nginx-ingress": Exporter("nginx_ingress_controller_requests",
                              "nginx_ingress_controller_request_duration_seconds_bucket",
                              False, _nginx, ("502",), ("200",)),
    "knative": Exporter("revision_app_request_count", "revision_app_request_latencies_bucket",
                        True, _knative, ("500",), ("200",)),
    "seldon": Exporter("seldon_api_executor_server_requests_seconds_count",
                       "seldon_api_executor_server_requests_seconds_bucket",
                       False, _seldon, ("500",), ("200",)),
    "linkerd": Exporter("response_total", "response_latency_ms_bucket", True, _linkerd,
                        ("503",), ("200",),
                        decoy=lambda lab: {**lab, "direction": "outbound"}),
    "generic": Exporter("http_requests_total", "http_request_duration_seconds_bucket", False,
                        _generic, ("500", "503"), ("200",)),
}

# Version names as each provider spells them: (stable, canary) per service.
VERSIONS: dict[str, Callable[[str], tuple[str, str]]] = {
    "istio": lambda svc: ("v1", "v2"),
    "nginx-ingress": lambda svc: ("stable", "canary"),  # stable: no canary label at all
    "knative": lambda svc: (f"{svc}-00001", f"{svc}-00002"),
    "seldon": lambda svc: ("main", "canary"),
    "linkerd": lambda svc: (f"{svc}-v1", f"{svc}-v2"),
    "generic": lambda svc: ("v1", "v2"),
}


def _le_text(le: float, ms: bool) -> str:
    if math.isinf(le):
        return "+Inf"
    return f"{le * 1000:g}" if ms else f"{le:g}"


def write_version(
    w: OpenMetricsWriter, rng: random.Random, exp: Exporter, ns: str, svc: str, ver: str,
    pods: list[Pod],
) -> Expected:
    """All series of one version; return the exact counts written into the window."""
    out = Expected(buckets={le: 0 for le in LE_SECONDS})
    for pod in pods:
        for code in exp.ok_codes + exp.error_codes:
            err = code in exp.error_codes
            incs = [rng.randint(0, 2) if err else rng.randint(3, 12) for _ in range(STEPS)]
            labels = exp.labels(ns, svc, ver, pod.name, code)
            n = write_counter(w, exp.requests, labels, incs, pod)
            out.requests += n
            if err:
                out.errors += n
            if exp.decoy is not None:
                write_counter(w, exp.requests, exp.decoy(labels), incs, pod)
        # latency: observations per step spread over the buckets, then cumulative per le
        per_bucket = [[rng.randint(0, 4) for _ in LE_SECONDS] for _ in range(STEPS)]
        base_labels = exp.labels(ns, svc, ver, pod.name, exp.ok_codes[0])
        for j, le in enumerate(LE_SECONDS):
            incs = [sum(row[: j + 1]) for row in per_bucket]
            labels = {**base_labels, "le": _le_text(le, exp.ms)}
            out.buckets[le] += write_counter(w, exp.bucket, labels, incs, pod)
            if exp.decoy is not None:
                write_counter(w, exp.bucket, exp.decoy(labels), incs, pod)
    return out


STABLE_PODS = [Pod("a"), Pod("b"), Pod("gone", end=35)]
CANARY_PODS = [Pod("a", reset_at=40), Pod("new", start=30)]


@dataclass
class Dataset:
    text: str
    expected: dict[tuple[str, str, str], Expected]  # (preset, service, version) -> counts


def build(seed: int = 7) -> Dataset:
    """One dataset per preset (services checkout and cart in namespace shop), plus extras."""
    rng = random.Random(seed)
    w = OpenMetricsWriter()
    expected: dict[tuple[str, str, str], Expected] = {}
    for preset, exp in EXPORTERS.items():
        for svc in ("checkout", "cart"):
            stable, canary = VERSIONS[preset](svc)
            expected[(preset, svc, stable)] = write_version(w, rng, exp, "shop", svc, stable,
                                                            STABLE_PODS)
            expected[(preset, svc, canary)] = write_version(w, rng, exp, "shop", svc, canary,
                                                            CANARY_PODS)
    # many small services for the coalescing test (generic preset, namespace fleet)
    for k in range(12):
        svc = f"svc{k}"
        for ver in ("v1", "v2"):
            expected[("generic", svc, ver)] = write_version(
                w, rng, EXPORTERS["generic"], "fleet", svc, ver, [Pod("a")]
            )
    # a NaN sample inside the window (namespace odd, service nan)
    pts = [(BASE + i * STEP, math.nan if i == 50 else 1000 + i) for i in range(STEPS)]
    for ver in ("v1", "v2"):
        w.add("http_requests_total", {"namespace": "odd", "service": "nan", "version": ver,
                                      "code": "200"}, pts)
    return Dataset(w.text(), expected)


INJECTION_CORPUS = [
    'v1"} or vector(1) #',
    'v1\\"} or vector(1) #',
    '" or on() vector(1) or "',
    "v1\n} or vector(1)",
    "v1\\",
    "v1'",
    ".*",
    "v1|v2",
    "^v1$",
    "[a-z]+",
    ")(",
    "{{version}}",
    "${1}",
    "tab\there",
    "ünï©ødé ✓",
    "v1) or sum(up",
]


def build_injection(seed: int = 11) -> tuple[str, dict[str, int]]:
    """Series whose version label values are the injection corpus, plus a big decoy `v1`."""
    rng = random.Random(seed)
    w = OpenMetricsWriter()
    expected: dict[str, int] = {}
    for value in [*INJECTION_CORPUS, "v1", "v2"]:
        incs = [rng.randint(1, 9) * (50 if value in ("v1", "v2") else 1) for _ in range(STEPS)]
        labels = {"namespace": "inj", "service": "inj", "version": value, "code": "200",
                  "env": value}
        expected[value] = write_counter(w, "http_requests_total", labels, incs, Pod("a"))
    return w.text(), expected
