"""Series shaped exactly like the real exporters' (names, labels, units, buckets, scrape target
labels), for the preset tests: Istio (HTTP, gRPC, mirroring, as a Gateway API gateway), Contour,
Envoy Gateway, ingress-nginx (direct and behind the Prometheus Operator), Knative (OpenCensus
and OpenTelemetry), Seldon Core v1 and 2, Linkerd. Each generator cites the source of its
shape; the evidence is in docs/prometheus.md. Ported from the phase-A data module of issue 23.

    ds = build(only=("istio-grpc",))     # .text() (OpenMetrics), .scenarios, .expected()
    ds.expected("istio-grpc", "canary")                          # default error semantics
    ds.expected("istio-grpc", "canary", errors=ERRORS_NON_OK)    # every non-OK gRPC status
    ds.expected("seldon-v1", "stable", slice="staging")          # the same-named deployment

Data sit at the suite's fixed clock (tests/support/clock.py EPOCH): 30 s scrapes, 16 minutes,
the default window (base + 300, base + 900]. `expected()` is exact for any window with
t0 >= base: every increment written is recorded.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tests.prometheus.exporters import envoy, istio, knative, linkerd, nginx, seldon
from tests.prometheus.exporters.series import Scenario, Series, Target, Writer
from tests.support.clock import EPOCH

BASE = int(EPOCH.timestamp())
T0 = BASE + 300
T1 = BASE + 900

# Error semantics (sets of outcomes). ERRORS_DEFAULT: HTTP 5xx plus gRPC failures a server is to
# blame for, each request once. ERRORS_NON_OK: every non-OK gRPC status. ERRORS_HTTP_ONLY: what
# `response_code=~"5.."` / `code=~"5.."` sees (the presets before issue 23).
ERRORS_DEFAULT = frozenset({"http_5xx", "grpc_server_err", "http5xx_grpc"})
ERRORS_NON_OK = ERRORS_DEFAULT | {"grpc_client_err"}
ERRORS_HTTP_ONLY = frozenset({"http_5xx", "http5xx_grpc"})

Gen = Callable[[Writer, random.Random], Scenario]
# Order matters: scenario k draws from its own stream, seeded seed * 1000 + k.
GENERATORS: tuple[tuple[str, Gen], ...] = (
    ("istio-http", istio.gen_istio_http),
    ("istio-grpc", istio.gen_istio_grpc),
    ("istio-mirror", istio.gen_istio_mirror),
    ("gateway-istio", istio.gen_gateway_istio),
    ("contour", envoy.gen_contour),
    ("envoy-gateway", envoy.gen_envoy_gateway),
    ("nginx-ingress", nginx.gen_nginx),
    ("knative-oc", knative.gen_knative_oc),
    ("knative-otel", knative.gen_knative_otel),
    ("seldon-v1", seldon.gen_seldon_v1),
    ("seldon-v2", seldon.gen_seldon_v2),
    ("linkerd", linkerd.gen_linkerd),
)


@dataclass
class Expected:
    requests: int = 0
    errors: int = 0
    buckets: dict[float, int] | None = None  # cumulative, le in seconds; None: no histogram
    breakdown: dict[str, int] | None = None  # requests per outcome


@dataclass
class Dataset:
    base: int
    t0: int
    t1: int
    scenarios: dict[str, Scenario]
    series: list[Series]

    def text(self) -> str:
        """The OpenMetrics text (about 120 MB for every scenario: built on demand, not kept)."""
        return Writer.text_of(self.series)

    def target(self, scenario: str, slice: str = "main") -> Target:
        return self.scenarios[scenario].slices[slice]

    def expected(self, scenario: str, role: str, *, slice: str = "main", t0: int | None = None,
                 t1: int | None = None, errors: frozenset[str] = ERRORS_DEFAULT) -> Expected:
        """Exact counts written into (t0, t1] for one version (role "stable"/"canary", a decoy
        role such as "decoy:reporter=source", or "combined" for Envoy Gateway's shared
        cluster)."""
        lo = self.t0 if t0 is None else t0
        hi = self.t1 if t1 is None else t1
        sc = self.scenarios[scenario]
        if slice not in sc.slices:
            raise KeyError(f"{scenario}: no slice {slice!r}; slices: {', '.join(sc.slices)}")
        out = Expected(buckets={} if sc.latency_per_version else None, breakdown={})
        assert out.breakdown is not None
        for s in self.series:
            if s.scenario != scenario or s.slice != slice or s.role != role:
                continue
            n = int(sum(v for ts, v in s.contrib.items() if lo < ts <= hi))
            if s.kind == "requests":
                out.requests += n
                out.breakdown[s.outcome] = out.breakdown.get(s.outcome, 0) + n
                if s.outcome in errors:
                    out.errors += n
            elif s.kind == "bucket" and out.buckets is not None and s.le is not None:
                out.buckets[s.le] = out.buckets.get(s.le, 0) + n
        if out.buckets is not None:
            out.buckets = dict(sorted(out.buckets.items()))
        return out


def build(only: Iterable[str] | None = None, base: int = BASE, seed: int = 23) -> Dataset:
    """The scenarios named in `only` (all when None); each has its own random stream, so its
    data do not depend on which others are built."""
    w = Writer(base)
    wanted = None if only is None else set(only)
    unknown = (wanted or set()) - {name for name, _ in GENERATORS}
    if unknown:
        raise KeyError(f"unknown scenarios {sorted(unknown)}")
    scenarios: dict[str, Scenario] = {}
    for k, (name, gen) in enumerate(GENERATORS):
        if wanted is None or name in wanted:
            scenarios[name] = gen(w, random.Random(seed * 1000 + k))
            assert scenarios[name].name == name
    return Dataset(base, base + 300, base + 900, scenarios, w.series)
