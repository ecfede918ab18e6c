"""Policy tuning by simulation: what `canary simulate` and the policy-tuning notebook call.

Owns turning an SRE's question ("at 40 rps and 1% errors, how often does this policy roll back
a healthy canary, and how fast does it catch a 2x error-rate regression?") into scenarios for
the Monte Carlo harness `analyzer.offline.montecarlo`, sweeping policy settings over a grid, and
reading the trade-off. The simulation itself (traffic, judge, state machine) is the harness's;
nothing here re-implements it. Pure: no I/O, no clock.

The simulator replaces the policy's metric source, so a policy reading Prometheus simulates
like any other. The harness analyses at the router's weight; strategies whose canary gets
traffic at weight 0 (blue-green preview, A/B header route, mirror) are simulated as a canary
step at the share of traffic the canary would see (`simulation_policy`, stated in a note).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from analyzer.offline.montecarlo import (
    Estimate,
    Latency,
    Scenario,
    SimulationSummary,
    simulate_rollouts,
)
from analyzer.policy import (
    ErrorRateCheck,
    LatencyCheck,
    Policy,
    SimulateSource,
)
from analyzer.sources.simulate import AB_MATCH_SHARE, PREVIEW_TEST_SHARE
from analyzer.util.times import parse_duration

HEALTHY = "no regression"


# --------------------------------------------------------------------------- regressions


@dataclass(frozen=True)
class Regression:
    """A canary regression: error-rate multiplier and latency factors (1.0: unchanged)."""

    error_multiplier: float = 1.0
    median_factor: float = 1.0
    p99_factor: float = 1.0
    label: str = ""

    @property
    def is_none(self) -> bool:
        return self.error_multiplier == 1.0 and self.median_factor == 1.0 and \
            self.p99_factor == 1.0


_FACTOR = re.compile(r"^(?P<num>[0-9]*\.?[0-9]+)x$|^(?P<sign>[+-])(?P<pct>[0-9]*\.?[0-9]+)%$")
_KEYS = {"error-rate": "error", "errors": "error", "p99": "p99", "p50": "median",
         "median": "median", "latency": "latency"}


def _factor(text: str, what: str) -> float:
    m = _FACTOR.match(text.strip())
    if m is None:
        raise ValueError(f"{what}: {text!r} is not a factor; use 2x, 1.5x, +30% or -10%")
    if m.group("num") is not None:
        f = float(m.group("num"))
    else:
        pct = float(m.group("pct"))
        f = 1 + (pct if m.group("sign") == "+" else -pct) / 100
    if f <= 0:
        raise ValueError(f"{what}: {text!r} gives a non-positive factor")
    return f


def parse_regression(spec: str) -> Regression:
    """`error-rate=2x`, `p99=+30%`, `p50=+20%`, `latency=+30%` (median and p99), or several
    joined by commas: `error-rate=1.5x,p99=+30%`."""
    err, med, p99 = 1.0, 1.0, 1.0
    parts = [p for p in spec.split(",") if p.strip()]
    if not parts:
        raise ValueError("empty regression: expected e.g. error-rate=2x or p99=+30%")
    for part in parts:
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in _KEYS:
            raise ValueError(f"regression {part!r}: expected KEY=FACTOR with KEY one of "
                             "error-rate, p99, p50, latency (e.g. error-rate=2x, p99=+30%)")
        f = _factor(value, f"regression {key}")
        kind = _KEYS[key]
        if kind == "error":
            err = f
        elif kind == "p99":
            p99 = f
        elif kind == "median":
            med = f
        else:
            med, p99 = f, f
    return Regression(err, med, p99, ",".join(p.strip() for p in parts))


def base_latency(policy: Policy) -> Latency:
    """The stable version's latency: the policy's simulate block, else 50 ms median / 300 ms p99."""
    spec = policy.spec.metrics
    if isinstance(spec, SimulateSource):
        return Latency(spec.stable.latencyMedian.total_seconds(),
                       spec.stable.latencyP99.total_seconds())
    return Latency()


def default_traffic(policy: Policy) -> tuple[float | None, float | None]:
    """(rps, base error rate) from the policy's simulate block; None when it reads Prometheus."""
    spec = policy.spec.metrics
    if isinstance(spec, SimulateSource):
        return spec.rps, spec.stable.errorRate
    return None, None


def build_scenarios(
    policy: Policy, rps: float, base_error_rate: float, regressions: Sequence[Regression] = (),
    *, burstiness: float = 0.0, latency: Latency | None = None,
) -> list[Scenario]:
    """The healthy scenario (for the false-rollback rate) and one per regression."""
    lat = latency or base_latency(policy)
    out = [Scenario(HEALTHY, rps=rps, error_rate=base_error_rate, latency=lat,
                    burstiness=burstiness, regression=False)]
    for r in regressions:
        if r.is_none:
            continue
        canary_lat = None
        if r.median_factor != 1.0 or r.p99_factor != 1.0:
            canary_lat = Latency(lat.median * r.median_factor,
                                 max(lat.p99 * r.p99_factor, lat.median * r.median_factor))
        out.append(Scenario(r.label or "regression", rps=rps, error_rate=base_error_rate,
                            error_multiplier=r.error_multiplier, latency=lat,
                            canary_latency=canary_lat, burstiness=burstiness, regression=True))
    return out


# --------------------------------------------------------------------------- policies


def simulation_policy(policy: Policy) -> tuple[Policy, str | None]:
    """The policy as the harness can simulate it, and a note when it had to be changed.

    blue-green, ab and mirror analyse at router weight 0 while the canary gets preview, header
    or mirrored traffic; the harness sends a canary traffic in proportion to the weight, so
    these become one canary step at the canary's share (the simulate source's shares)."""
    st = policy.spec.strategy
    if st.type == "canary":
        return policy, None
    if st.type == "ab":
        share = AB_MATCH_SHARE * 100
        what = "the A/B route's audience"
    elif st.mirrorPercent is not None:
        m = st.mirrorPercent
        share = 100 * m / (100 + m)  # mirrored copies come on top of stable's traffic
        what = f"{m:g}% mirrored"
    else:
        share = PREVIEW_TEST_SHARE * 100
        what = "the preview's test traffic"
    weight = max(1, min(99, round(share)))
    doc = policy.model_dump(mode="json")
    doc["spec"]["strategy"] = {"type": "canary", "steps": [weight]}
    note = (f"strategy {st.type} simulated as one analysis step with {weight}% of the traffic "
            f"on the canary ({what}), then the promotion")
    return Policy.model_validate(doc), note


#: Grid keys and where they go in the policy document.
GRID_KEYS = {
    "alpha": "decision.alpha",
    "beta": "decision.beta",
    "tolerance": "every error-rate and latency check's tolerance",
    "minSamples": "decision.minSamples",
    "dataFailureLimit": "decision.dataFailureLimit",
    "interval": "analysis.interval",
    "minStepDuration": "analysis.minStepDuration",
    "maxStepDuration": "analysis.maxStepDuration",
    "negligibleRate": "every error-rate check's negligibleRate",
    "CHECK.tolerance": "the tolerance of the check named CHECK (e.g. error-rate.tolerance)",
}
_DURATION_KEYS = {"interval", "minStepDuration", "maxStepDuration"}


def parse_grid(specs: Sequence[str]) -> dict[str, list[Any]]:
    """`["alpha=0.01,0.05", "tolerance=0.1,0.25"]` -> {"alpha": [0.01, 0.05], ...}."""
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or not values.strip():
            raise ValueError(f"grid {spec!r}: expected KEY=V1,V2,... (e.g. alpha=0.01,0.05)")
        if key not in GRID_KEYS and not key.endswith(".tolerance"):
            raise ValueError(f"grid key {key!r} unknown; known: {', '.join(GRID_KEYS)}")
        out: list[Any] = []
        for v in values.split(","):
            v = v.strip()
            try:
                if key in _DURATION_KEYS:
                    parse_duration(v)
                    out.append(v)
                elif key in ("minSamples", "dataFailureLimit"):
                    out.append(int(v))
                else:
                    out.append(float(v))
            except ValueError:
                raise ValueError(f"grid {key}: {v!r} is not a valid value") from None
        grid[key] = out
    return grid


def apply_settings(policy: Policy, settings: Mapping[str, Any]) -> Policy:
    """A copy of `policy` with grid `settings` applied (keys as in GRID_KEYS); ValueError
    naming the key when the result is not a valid policy."""
    doc = policy.model_dump(mode="json")
    spec = doc["spec"]
    for key, value in settings.items():
        if key in ("alpha", "beta", "minSamples", "dataFailureLimit"):
            spec.setdefault("decision", {})[key] = value
        elif key in _DURATION_KEYS:
            spec.setdefault("analysis", {})[key] = value
        elif key == "tolerance":
            for c in spec["checks"]:
                if c["type"] in ("error-rate", "latency"):
                    c["tolerance"] = value
        elif key == "negligibleRate":
            for c in spec["checks"]:
                if c["type"] == "error-rate":
                    c["negligibleRate"] = value
        elif key.endswith(".tolerance"):
            name = key[: -len(".tolerance")]
            hits = [c for c in spec["checks"] if c.get("name") == name]
            if not hits:
                raise ValueError(f"{key}: policy {policy.name} has no check named {name!r}")
            for c in hits:
                c["tolerance"] = value
        else:
            raise ValueError(f"unknown setting {key!r}; known: {', '.join(GRID_KEYS)}")
    try:
        return Policy.model_validate(doc)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ValueError(f"settings {dict(settings)}: spec {where}: {first['msg']}") from None


def tunable_tolerances(policy: Policy) -> dict[str, float]:
    """Current tolerance of each error-rate / latency check (for display)."""
    return {c.name: c.tolerance for c in policy.spec.checks
            if isinstance(c, ErrorRateCheck | LatencyCheck)}


# --------------------------------------------------------------------------- running


Progress = Callable[[int], None]


def simulate_policy(
    policy: Policy, scenarios: Sequence[Scenario], runs: int, seed: int = 0,
    progress: Progress | None = None,
) -> list[SimulationSummary]:
    """`runs` simulated rollouts of `policy` per scenario (the harness's `simulate_rollouts`);
    non-canary strategies go through `simulation_policy` first."""
    sim, _note = simulation_policy(policy)
    return [simulate_rollouts(sim, sc, runs, seed=seed, progress=progress) for sc in scenarios]


@dataclass(frozen=True)
class GridRow:
    """One setting of the grid and its summaries (one per scenario, healthy first)."""

    settings: dict[str, Any]
    summaries: tuple[SimulationSummary, ...]

    @property
    def healthy(self) -> SimulationSummary:
        return self.summaries[0]

    @property
    def regressions(self) -> tuple[SimulationSummary, ...]:
        return self.summaries[1:]

    @property
    def false_rollback_rate(self) -> Estimate:
        return self.healthy.rollback_rate

    def to_json(self) -> dict[str, Any]:
        return {"settings": self.settings,
                "scenarios": [summary_json(s) for s in self.summaries]}

    def flat(self) -> dict[str, Any]:
        """One flat record (a DataFrame row): settings, then the headline figures."""
        row: dict[str, Any] = dict(self.settings)
        h = self.healthy
        row["false_rollback_rate"] = _v(h.rollback_rate.value)
        row["false_rollback_se"] = _v(h.rollback_rate.stderr)
        row["median_time_to_promote_s"] = _v(h.median_time_to_promote.value)
        for s in self.regressions:
            n = s.scenario.name
            row[f"detection_rate[{n}]"] = _v(s.rollback_rate.value)
            row[f"detection_se[{n}]"] = _v(s.rollback_rate.stderr)
            row[f"median_time_to_rollback_s[{n}]"] = _v(s.median_time_to_rollback.value)
            row[f"p90_time_to_rollback_s[{n}]"] = _v(s.p90_time_to_rollback.value)
        return row


@dataclass(frozen=True)
class GridResult:
    """A grid sweep: one row per combination of settings, in grid order."""

    policy: str
    grid: dict[str, list[Any]]
    rows: tuple[GridRow, ...]
    runs: int
    seed: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    def records(self) -> list[dict[str, Any]]:
        return [r.flat() for r in self.rows]

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "grid": self.grid, "runs": self.runs, "seed": self.seed,
                "notes": list(self.notes), "rows": [r.to_json() for r in self.rows]}


def grid_settings(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*(grid[k] for k in keys))]


def simulate_grid(
    policy: Policy, scenarios: Sequence[Scenario], grid: Mapping[str, Sequence[Any]],
    runs: int, seed: int = 0, progress: Progress | None = None,
) -> GridResult:
    """Every combination of `grid` applied to `policy`, each simulated on every scenario with
    the same seed (common random numbers: differences come from the settings)."""
    rows = []
    sim, note = simulation_policy(policy)
    for settings in grid_settings(grid):
        p = apply_settings(sim, settings)
        rows.append(GridRow(settings, tuple(simulate_policy(p, scenarios, runs, seed, progress))))
    return GridResult(policy.name, {k: list(v) for k, v in grid.items()}, tuple(rows), runs,
                      seed, (note,) if note else ())


@dataclass(frozen=True)
class Recommendation:
    """The chosen grid row and why (None row: nothing met the constraints)."""

    row: GridRow | None
    reason: str


def recommend(
    result: GridResult, *, max_false_rollback: float = 0.01, min_detection: float = 0.9,
) -> Recommendation:
    """The fastest setting (median time to roll back the first regression scenario, then to
    promote a healthy canary) whose false-rollback rate is at most `max_false_rollback` and
    whose detection rate is at least `min_detection`, both as point estimates (see the Monte
    Carlo errors next to them)."""
    ok = []
    for row in result.rows:
        fr = row.false_rollback_rate.value
        det = min((s.rollback_rate.value for s in row.regressions), default=1.0)
        if fr <= max_false_rollback and det >= min_detection:
            ok.append(row)
    if not ok:
        return Recommendation(None, f"no setting has false rollbacks <= {max_false_rollback:g} "
                              f"and detection >= {min_detection:g}: more traffic, longer steps "
                              "or a larger tolerance")

    def key(row: GridRow) -> tuple[float, float]:
        reg = row.regressions[0].median_time_to_rollback.value if row.regressions else math.nan
        pro = row.healthy.median_time_to_promote.value
        return (math.inf if math.isnan(reg) else reg, math.inf if math.isnan(pro) else pro)

    best = min(ok, key=key)
    reg = best.regressions[0] if best.regressions else None
    what = (f"median {reg.median_time_to_rollback.fmt(unit='s', digits=0)} to roll back "
            f"{reg.scenario.name}" if reg else "")
    return Recommendation(best, (
        f"{best.settings}: false rollbacks {best.false_rollback_rate.fmt(digits=3)}, "
        f"{what}, median {best.healthy.median_time_to_promote.fmt(unit='s', digits=0)} to "
        f"promote (of {len(ok)} settings within the limits)"))


# --------------------------------------------------------------------------- output


def _v(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def _est(e: Estimate | None) -> dict[str, Any] | None:
    if e is None or math.isnan(e.value):
        return None
    return {"value": _v(e.value), "stderr": _v(e.stderr), "n": e.n}


def summary_json(s: SimulationSummary) -> dict[str, Any]:
    """A summary as strict JSON (rates with their Monte Carlo standard errors; times in s)."""
    sc = s.scenario
    return {
        "scenario": sc.name, "regression": sc.is_regression, "runs": s.runs, "seed": s.seed,
        "rps": sc.rps, "base_error_rate": sc.error_rate,
        "error_multiplier": sc.error_multiplier,
        "false_rollback_rate": _est(s.false_rollback_rate),
        "detection_rate": _est(s.detection_rate),
        "promote_rate": _est(s.promote_rate),
        "inconclusive_rate": _est(s.inconclusive_rate),
        "median_time_to_rollback_s": _est(s.median_time_to_rollback),
        "p90_time_to_rollback_s": _est(s.p90_time_to_rollback),
        "median_time_to_promote_s": _est(s.median_time_to_promote),
        "mean_ticks": _v(s.mean_ticks),
    }


__all__ = [
    "GRID_KEYS", "HEALTHY", "GridResult", "GridRow", "Recommendation", "Regression",
    "apply_settings", "base_latency", "build_scenarios", "default_traffic", "grid_settings",
    "parse_grid", "parse_regression", "recommend", "simulate_grid", "simulate_policy",
    "simulation_policy", "summary_json", "tunable_tolerances",
]
