"""What a simulation means for the policy: a verdict per scenario in words, and when the policy
does not decide, what would make it decide, with the numbers of the power estimate.

The simulation measures how often the policy promotes a healthy canary and catches a
regression; Wald's bound (analyzer.core.stats.power) says why: at the first step's traffic, how
long a check needs before its evidence can reach 1/beta (promotion) or 1/alpha (rollback).
The first step is the one that binds: it has the least canary traffic, and promotion evidence
starts there. Wald's figure is a mean and a lower bound for any sequential test, so the
settings suggested here aim for `SAFETY` times it within maxStepDuration: the time a healthy
canary's evidence takes has a long right tail. Measured by benchmarks/verdict_calibration.py
(40, 100 and 300 rps, 1% errors, 60 runs each): a step of 2x, 3x, 4x Wald's mean promotes
60-73%, 77-90%, 83-95% of healthy canaries and catches 77-78%, 92-98%, 100% of 2x regressions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from analyzer.core.stats.latency import bound_for_slo, choose_bound
from analyzer.core.stats.power import time_to_detect, time_to_promote
from analyzer.offline.montecarlo import LATENCY_BUCKETS, Scenario, SimulationSummary
from analyzer.policy import Policy
from analyzer.policy.checks import ErrorRateCheck, LatencyCheck
from analyzer.util.fmt import fmt_num, fmt_pct, fmt_seconds, fmt_tolerance

#: Suggested settings leave this factor between Wald's mean and maxStepDuration (83-95% of
#: healthy canaries promoted in time: benchmarks/verdict_calibration.py).
SAFETY = 4.0
#: A scenario counts as decided when this share of runs ends with the right decision.
GOOD_ENOUGH = 0.9
#: The largest tolerance a check accepts, and the longest step (policy/checks.py, strategy.py).
MAX_TOLERANCE = 10.0
MAX_STEP_DURATION_S = 30 * 86400.0


@dataclass(frozen=True)
class CheckNeed:
    """What one check needs at the first step: the stable's event share it compares against
    (error rate, or share of requests slower than the latency bound), the canary/stable ratio
    the scenario makes true, and Wald's estimate of the seconds until it can decide (None when
    it cannot decide at all: the ratio sits inside the tolerance, or no events)."""

    check: str
    tolerance: float
    base_rate: float
    ratio: float
    seconds: float | None


@dataclass(frozen=True)
class Suggestion:
    """One change that would let the policy decide in time, on its own."""

    setting: str
    value: str
    seconds: float | None  # Wald's estimate under the change
    text: str


@dataclass(frozen=True)
class SimulationVerdict:
    """The verdict on one scenario: whether the policy decides it well (`ok`), a sentence, what
    each check needs at the first step, and what would help when it does not decide."""

    scenario: str
    ok: bool
    headline: str
    first_step: int
    step_limit_s: float
    needs: tuple[CheckNeed, ...]
    suggestions: tuple[Suggestion, ...]
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "ok": self.ok, "headline": self.headline,
            "first_step": self.first_step, "max_step_duration_s": self.step_limit_s,
            "needs": [{"check": n.check, "tolerance": n.tolerance, "base_rate": n.base_rate,
                       "ratio": n.ratio, "wald_seconds": n.seconds} for n in self.needs],
            "suggestions": [{"setting": s.setting, "value": s.value, "wald_seconds": s.seconds,
                             "text": s.text} for s in self.suggestions],
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- the checks' needs


@dataclass(frozen=True)
class _Comparison:
    """A ratio check as the power estimate sees it."""

    name: str
    tolerance: float
    alpha_share: float
    base_rate: float
    ratio: float
    negligible_rate: float = 0.0


def _latency_bound(scenario: Scenario, check: LatencyCheck, q: float) -> float:
    """The bucket bound the check compares at, chosen as the judge chooses it: the SLO bound's
    bucket, else the smallest bucket whose stable CDF reaches q (on the histogram a million
    requests of the scenario's stable latency fill)."""
    if check.sloBound is not None:
        bound = bound_for_slo(LATENCY_BUCKETS, check.sloBound.total_seconds())
    else:
        bound = choose_bound(scenario.latency.expected_histogram(), q)
    assert bound is not None  # LATENCY_BUCKETS has finite bounds and the histogram requests
    return bound


def _comparisons(policy: Policy, scenario: Scenario, weight: int) -> list[_Comparison]:
    checks = [c for c in policy.spec.checks if isinstance(c, ErrorRateCheck | LatencyCheck)]
    total_weight = sum(c.weight for c in checks) or 1.0
    out: list[_Comparison] = []
    for c in checks:
        share = c.weight / total_weight
        if isinstance(c, ErrorRateCheck):
            out.append(_Comparison(c.name, c.tolerance, share, scenario.error_rate,
                                   scenario.true_ratios(weight, None)["error-rate"],
                                   c.negligibleRate))
            continue
        quantiles = [1.0] if c.sloBound is not None else c.quantiles
        for q in quantiles:
            bound = _latency_bound(scenario, c, q)
            name = c.name if len(quantiles) == 1 else f"{c.name} p{fmt_num(100 * q)}"
            out.append(_Comparison(name, c.tolerance, share / len(quantiles),
                                   scenario.latency.share_above(bound),
                                   scenario.true_ratios(weight, bound)["latency"]))
    return out


def _seconds(comp: _Comparison, rps: float, weight: float, tolerance: float, alpha: float,
             beta: float, regression: bool) -> float | None:
    c_rps, s_rps = rps * weight / 100, rps * (1 - weight / 100)
    if regression:
        est = time_to_detect(canary_rps=c_rps, stable_rps=s_rps, base_rate=comp.base_rate,
                             r0=1 + tolerance, alpha=alpha * comp.alpha_share,
                             ratio=comp.ratio, beta=beta)
        return None if est is None else est.seconds
    return time_to_promote(canary_rps=c_rps, stable_rps=s_rps, base_rate=comp.base_rate,
                           r0=1 + tolerance, beta=beta)


def _binding(seconds: list[float | None], regression: bool) -> float | None:
    """Promotion needs every check (the slowest binds); a rollback needs any one (the fastest)."""
    finite = [s for s in seconds if s is not None]
    if regression:
        return min(finite) if finite else None
    return None if len(finite) < len(seconds) or not finite else max(finite)


# --------------------------------------------------------------------------- the verdict


def simulation_verdict(policy: Policy, summary: SimulationSummary) -> SimulationVerdict:
    """The verdict on one simulated scenario of `policy` (the policy as simulated: see
    tuning.simulation_policy)."""
    sc = summary.scenario
    steps = [s for s in policy.spec.strategy.weight_steps() if isinstance(s, int) and s < 100]
    first = steps[0] if steps else 100
    a, d = policy.spec.analysis, policy.spec.decision
    limit = a.maxStepDuration.total_seconds()
    regression = sc.is_regression
    comps = _comparisons(policy, sc, first)
    notes: list[str] = []
    inside: list[_Comparison] = []  # checks whose tolerance covers the regression
    if not regression:
        # The negligible-rate route promotes the error-rate check without the ratio: leave
        # that check out of the binding time when the stable's rate is already below it.
        routed = [c for c in comps if c.base_rate < c.negligible_rate]
        for c in routed:
            notes.append(f"check {c.name!r} may pass on its negligible-rate route (stable "
                         f"{fmt_pct(c.base_rate)} < negligibleRate {fmt_pct(c.negligible_rate)})")
        comps = [c for c in comps if c not in routed]
    else:
        inside = [c for c in comps if c.ratio <= 1 + c.tolerance]
        comps = [c for c in comps if c not in inside]
    needs = tuple(CheckNeed(c.name, c.tolerance, c.base_rate, c.ratio,
                            _seconds(c, sc.rps, first, c.tolerance, d.alpha, d.beta, regression))
                  for c in comps)
    rate = summary.rollback_rate if regression else summary.promote_rate
    runs = summary.runs
    ok = not math.isnan(rate.value) and rate.value >= GOOD_ENOUGH
    if regression and not comps:
        return SimulationVerdict(
            sc.name, False, f"{sc.name}: within every check's tolerance "
            f"({_within_text(inside)}); this policy is not meant to roll it back "
            f"(rolled back in {fmt_pct(rate.value)} of runs)", first, limit, needs, (),
            tuple(notes))
    headline = _headline(sc.name, regression, ok, summary, runs)
    if ok or not needs:
        return SimulationVerdict(sc.name, ok, headline, first, limit, needs, (), tuple(notes))
    binding = _binding([n.seconds for n in needs], regression)
    headline += "; " + _why(needs, binding, first, sc.rps, limit, regression)
    suggestions = _suggestions(policy, comps, sc.rps, first, steps, limit, regression, binding)
    return SimulationVerdict(sc.name, ok, headline, first, limit, needs, tuple(suggestions),
                             tuple(notes))


def _within_text(comps: list[_Comparison]) -> str:
    return ", ".join(f"{c.name} ratio {fmt_num(c.ratio)} <= {fmt_tolerance(c.tolerance)}"
                     for c in comps)


def _headline(name: str, regression: bool, ok: bool, s: SimulationSummary, runs: int) -> str:
    median = s.median_time_to_rollback if regression else s.median_time_to_promote
    when = "" if math.isnan(median.value) else f", median {fmt_seconds(median.value)}"
    undecided = f"{fmt_pct(s.inconclusive_rate.value)} undecided"
    if regression:
        rate = s.rollback_rate.value
        if ok:
            return f"{name}: rolled back in {fmt_pct(rate)} of {runs} runs{when}"
        if rate == 0:
            return f"{name}: never caught in {runs} runs ({undecided})"
        return f"{name}: caught in only {fmt_pct(rate)} of {runs} runs{when} ({undecided})"
    rate = s.promote_rate.value
    if ok:
        return f"{name}: a healthy canary is promoted in {fmt_pct(rate)} of {runs} runs{when}"
    if rate == 0:
        return (f"{name}: this policy never promotes a healthy canary at this traffic "
                f"(0 of {runs} runs; {undecided}, "
                f"{fmt_pct(s.rollback_rate.value)} rolled back)")
    return (f"{name}: a healthy canary is promoted in only {fmt_pct(rate)} of {runs} runs"
            f"{when} ({undecided}, {fmt_pct(s.rollback_rate.value)} rolled back)")


def _why(needs: tuple[CheckNeed, ...], binding: float | None, first: int, rps: float,
         limit: float, regression: bool) -> str:
    goal = "catch it" if regression else "show the canary within tolerance"
    decidable = [n for n in needs if n.seconds is not None]
    pick = min if regression else max  # the check that binds (see _binding)
    slow = pick(decidable, key=lambda n: n.seconds or 0.0) if decidable else None
    at = f"the first step ({first}%: {fmt_num(rps * first / 100)} canary rps)"
    if binding is None or slow is None:
        return f"at {at} no check can {goal}: no events to compare"
    what = (f"check {slow.check!r} ({fmt_tolerance(slow.tolerance)}, stable rate "
            f"{fmt_pct(slow.base_rate)})")
    text = (f"at {at} {what} needs about {fmt_seconds(binding)} to {goal} (Wald's bound, a "
            f"mean), and a step lasts at most maxStepDuration {fmt_seconds(limit)}")
    if binding * SAFETY <= limit:
        text += (f"; by this estimate ({SAFETY:g}x fits) the step is long enough: the runs' "
                 "last reasons say more (--json)")
    return text


def _suggestions(policy: Policy, comps: list[_Comparison], rps: float, first: int,
                 steps: list[int], limit: float, regression: bool,
                 binding: float | None) -> list[Suggestion]:
    d = policy.spec.decision
    out: list[Suggestion] = []

    def need(weight: float, tolerances: dict[str, float] | None = None) -> float | None:
        tol = tolerances or {}
        return _binding([_seconds(c, rps, weight, tol.get(c.name, c.tolerance), d.alpha,
                                  d.beta, regression) for c in comps], regression)

    def fits(seconds: float | None) -> bool:
        return seconds is not None and seconds * SAFETY <= limit

    # 1. a larger first step (the later steps must stay above it)
    weight = next((w for w in range(first + 1, 100) if fits(need(w))), None)
    if weight is not None:
        new_steps = [weight, *(s for s in steps if s > weight), 100]  # `steps` stop below 100
        there = need(weight)
        out.append(Suggestion("strategy.steps", str(new_steps), there,
                              f"a first step of {weight}% (steps {new_steps}): about "
                              f"{fmt_seconds(there or 0)} there"))
    else:
        best = min(range(first, 100), key=lambda w: need(w) or math.inf)
        best_s = need(best)
        if best_s is not None:
            out.append(Suggestion("strategy.steps", "", best_s,
                                  f"no first step is enough at this traffic: the quickest, "
                                  f"{best}%, still needs about {fmt_seconds(best_s)}"))
    # 2. a wider tolerance on the checks that bind (only for promotion: a wider tolerance makes
    #    a regression harder to catch, never easier)
    if not regression:
        wider: dict[str, float] = {}
        for c in comps:
            if fits(_seconds(c, rps, first, c.tolerance, d.alpha, d.beta, False)):
                continue
            tol = _smallest_tolerance(lambda t, c=c: _seconds(c, rps, first, t, d.alpha,
                                                             d.beta, False), fits, c.tolerance)
            if tol is None:
                wider = {}
                break
            wider[c.name] = tol
        if wider:
            by_check = {c.name: c for c in comps}
            out.append(Suggestion(
                "checks.tolerance", ", ".join(f"{k}={fmt_num(v)}" for k, v in wider.items()),
                need(first, wider),
                " and ".join(f"check {k!r} tolerance {fmt_num(v)} ({fmt_tolerance(v)}; now "
                             f"{fmt_num(by_check[k].tolerance)})" for k, v in wider.items())
                + ": accepts a worse canary"))
    # 3. a longer step, and 4. the traffic at which the policy works as written
    if binding is not None and binding * SAFETY > limit:
        longer = min(_round_up_minutes(binding * SAFETY), MAX_STEP_DURATION_S)
        out.append(Suggestion("analysis.maxStepDuration", fmt_seconds(longer), binding,
                              f"maxStepDuration {fmt_seconds(longer)} ({SAFETY:g}x Wald's "
                              f"{fmt_seconds(binding)}; now {fmt_seconds(limit)})"))
        more = rps * binding * SAFETY / limit
        out.append(Suggestion("traffic", f"{fmt_num(more)} rps", binding * rps / more,
                              f"or about {fmt_num(more)} rps in all (now {fmt_num(rps)}): "
                              "the time needed falls in proportion to the traffic"))
    samples = d.minSamples
    canary_requests = rps * first / 100 * limit
    if samples > canary_requests:
        out.append(Suggestion("decision.minSamples", str(int(canary_requests)), None,
                              f"minSamples {samples} is more canary requests than the first "
                              f"step gets in maxStepDuration ({int(canary_requests)})"))
    return out


def _smallest_tolerance(seconds_at: Callable[[float], float | None],
                        fits: Callable[[float | None], bool], start: float) -> float | None:
    """The smallest tolerance (two decimals) above `start` whose time fits, by bisection (the
    time falls as the tolerance grows)."""
    if not fits(seconds_at(MAX_TOLERANCE)):
        return None
    lo, hi = start, MAX_TOLERANCE
    while hi - lo > 0.005:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if fits(seconds_at(mid)) else (mid, hi)
    return math.ceil(hi * 100) / 100


def _round_up_minutes(seconds: float) -> float:
    return float(math.ceil(seconds / 60) * 60)


__all__ = ["SAFETY", "CheckNeed", "SimulationVerdict", "Suggestion", "simulation_verdict"]
