"""Monte Carlo harness: many simulated rollouts of one policy against one traffic scenario.

Owns the scenario model (`Scenario`), the vectorised per-interval sample generator and the
rollout loop used by `canary simulate`, the policy-tuning notebook and `benchmarks/`. It does
no I/O and reads no clock: simulated time starts at a fixed instant and advances by the
policy's `analysis.interval`.

One call runs `runs` rollouts in lock step, tick by tick:

- traffic per interval is drawn for every active run at once with numpy (seeded): total
  requests ~ Poisson(rps(t) * interval), the canary's share ~ Binomial(total, weight), errors ~
  Binomial(requests, rate x burst) with a Gamma(1/b, b) burst multiplier (mean 1, coefficient
  of variation sqrt(b)) per version and interval when `burstiness` b > 0 (in the canary only
  with `canary_only_bursts`), latency as a Multinomial over the histogram buckets of a
  lognormal fitted to each version's (median, p99), its median shifted per version and
  interval by a factor exp(N(0, latency_noise^2)) when `latency_noise` > 0;
- a tick's window is the last interval, or with `window_intervals` k > 1 the last k intervals
  added up (overlapping windows: each request is seen by k ticks, as a policy with
  `analysis.window` = k x interval would make the engine see it; policies are refused such a
  window, this measures the judge's own guard);
- each run has its own judge (anything with `set_baseline`, `start_step`, `evaluate`: our
  `analyzer.core.judge.Judge` or a peer from `benchmarks/peers.py`) and walks the policy's steps
  with the pure state machine of `analyzer.core.rollout` (a PROMOTE advances a step; reaching the
  final step is the promotion). Pause steps pass through at once; a PAUSE from the judge
  (`onInconclusive` / `onDataFailure` = pause) ends the run as `inconclusive`, as does the
  horizon (the sum of the steps' maxStepDuration plus one interval per step).

Before the rollout every judge gets a baseline, as the engine reads it: the stable version's
intervals over `analysis.baselineWindow` at the scenario's full rate (`core.judge
.baseline_windows`), with the scenario's bursts and latency noise (unless `bursts_in_baseline`
is False: bursts that begin with the rollout), and their latency histogram.

Truth is the scenario's: `Scenario.truth` is healthy (promoting is right), regression (rolling
back is right) or boundary (the canary sits exactly at a tolerance: rolling back is a false
rollback and promoting a false promotion), so the summary can report false-rollback,
false-promotion and detection rates with Monte Carlo standard errors.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

import numpy as np
from scipy.stats import norm

from analyzer.core.rollout import Command, Phase, RolloutMachine, RolloutState
from analyzer.core.stats.latency import add_histograms
from analyzer.core.types import Decision, Histogram, Samples, VersionSample
from analyzer.policy import Policy
from analyzer.sources.simulate import LATENCY_BUCKETS

#: Simulated rollouts start here (a fixed instant keeps runs reproducible).
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_Z99 = float(norm.ppf(0.99))


class JudgeLike(Protocol):
    """What the harness needs from a judge (our Judge and every peer implement it)."""

    def set_baseline(self, stable_latency: Histogram | None,
                     stable_series: Sequence[VersionSample] | None = None) -> None: ...

    def start_step(self, now: datetime, canary_weight: float) -> None: ...

    def evaluate(self, samples: Samples, now: datetime) -> Decision: ...


JudgeFactory = Callable[[Policy], JudgeLike]


# --------------------------------------------------------------------------- scenario


@dataclass(frozen=True)
class Latency:
    """A lognormal latency distribution given by its median and 99th percentile (seconds)."""

    median: float = 0.050
    p99: float = 0.300

    def params(self) -> tuple[float, float]:
        mu = math.log(self.median)
        return mu, (math.log(max(self.p99, self.median * 1.000001)) - mu) / _Z99

    def bucket_probabilities(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> np.ndarray:
        """Probability of each (non-cumulative) bucket."""
        mu, sigma = self.params()
        finite = np.array([b for b in bounds if math.isfinite(b)])
        cdf = np.concatenate([norm.cdf((np.log(finite) - mu) / sigma), [1.0]])
        return np.diff(np.concatenate([[0.0], cdf])).clip(min=0.0)

    def expected_histogram(self, requests: float = 1e6,
                           bounds: tuple[float, ...] = LATENCY_BUCKETS) -> Histogram:
        """The cumulative histogram `requests` requests fill on average (rounded): what a
        baseline of this latency shows, for choosing a bound as the judge does."""
        cum = np.cumsum(self.bucket_probabilities(bounds)) * requests
        return Histogram(bounds, tuple(round(float(c)) for c in cum))

    def share_above(self, bound: float) -> float:
        """Probability that a request is slower than `bound`."""
        mu, sigma = self.params()
        return float(norm.sf((math.log(bound) - mu) / sigma))

    def scaled(self, median_factor: float = 1.0, p99_factor: float = 1.0) -> Latency:
        return Latency(self.median * median_factor, self.p99 * p99_factor)


@dataclass(frozen=True)
class Scenario:
    """Traffic of the stable and the canary version, and what is true about the canary.

    `rps` is the service's total request rate (both versions). With `diurnal_amplitude` a the
    rate is rps * (1 + a sin(2 pi (t + phase) / period)), and both versions' error rates follow
    the same curve scaled by `diurnal_error_amplitude` (a trend shared by both versions).
    The canary's error rate is `error_rate * error_multiplier` and its latency
    `canary_latency` (default: the stable's), but only while its weight is above
    `regression_above_weight` (when set). `regression`: whether a rollback is the right
    answer (default: any difference between the versions); `boundary`: the canary sits exactly
    at a check's tolerance (neither a rollback nor a promotion is right). Bursts, latency
    noise and overlapping windows: see the module docstring.
    """

    name: str
    rps: float
    error_rate: float = 0.01
    error_multiplier: float = 1.0
    latency: Latency = Latency()
    canary_latency: Latency | None = None
    burstiness: float = 0.0
    diurnal_amplitude: float = 0.0
    diurnal_error_amplitude: float = 0.0
    diurnal_period_s: float = 86400.0
    diurnal_phase_s: float = 0.0
    regression_above_weight: float | None = None
    regression: bool | None = None
    boundary: bool = False
    canary_only_bursts: bool = False
    bursts_in_baseline: bool = True
    latency_noise: float = 0.0
    window_intervals: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        if self.rps <= 0:
            raise ValueError(f"scenario {self.name}: rps must be positive")
        if not 0 <= self.error_rate <= 1 or self.error_rate * self.error_multiplier > 1:
            raise ValueError(f"scenario {self.name}: error rates must lie in [0, 1]")
        if not 0 <= self.diurnal_amplitude < 1:
            raise ValueError(f"scenario {self.name}: diurnal_amplitude must lie in [0, 1)")
        if self.window_intervals < 1:
            raise ValueError(f"scenario {self.name}: window_intervals must be at least 1")

    @property
    def is_regression(self) -> bool:
        if self.boundary:
            return False
        if self.regression is not None:
            return self.regression
        return self.error_multiplier != 1.0 or (
            self.canary_latency is not None and self.canary_latency != self.latency
        )

    @property
    def truth(self) -> str:
        """healthy | boundary | regression."""
        if self.boundary:
            return "boundary"
        return "regression" if self.is_regression else "healthy"

    def regressed_at(self, weight: float) -> bool:
        """Whether the canary's own figures apply at this weight (percent)."""
        return self.regression_above_weight is None or weight > self.regression_above_weight

    def canary_latency_at(self, weight: float) -> Latency:
        if self.canary_latency is None or not self.regressed_at(weight):
            return self.latency
        return self.canary_latency

    def canary_error_rate_at(self, weight: float) -> float:
        return self.error_rate * (self.error_multiplier if self.regressed_at(weight) else 1.0)

    def rate_factor(self, seconds: float) -> float:
        if self.diurnal_amplitude == 0:
            return 1.0
        phase = 2 * math.pi * (seconds + self.diurnal_phase_s) / self.diurnal_period_s
        return 1.0 + self.diurnal_amplitude * math.sin(phase)

    def error_factor(self, seconds: float) -> float:
        if self.diurnal_error_amplitude == 0:
            return 1.0
        phase = 2 * math.pi * (seconds + self.diurnal_phase_s) / self.diurnal_period_s
        return 1.0 + self.diurnal_error_amplitude * math.sin(phase)

    def true_ratios(self, weight: float, bound: float | None) -> dict[str, float]:
        """The true canary/stable ratios at this weight: error rate, and the share of requests
        slower than `bound` (what the latency tail test measures). For the oracle."""
        out = {"error-rate": self.canary_error_rate_at(weight) / self.error_rate
               if self.error_rate > 0 else 1.0}
        if bound is not None:
            s = self.latency.share_above(bound)
            c = self.canary_latency_at(weight).share_above(bound)
            out["latency"] = c / s if s > 0 else 1.0
        return out


# --------------------------------------------------------------------------- results


class RunOutcome(StrEnum):
    ROLLED_BACK = "rolled_back"
    PROMOTED = "promoted"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class RunResult:
    """One simulated rollout: how it ended, when (seconds from the start), after how many
    analysis ticks, at which weight, and the last decision's reason."""

    outcome: RunOutcome
    seconds: float
    ticks: int
    weight: int
    reason: str


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo estimate with its standard error (nan when there is nothing to estimate)."""

    value: float
    stderr: float
    n: int

    def fmt(self, scale: float = 1.0, digits: int = 1, unit: str = "") -> str:
        if math.isnan(self.value):
            return "-"
        return f"{self.value * scale:.{digits}f}{unit} ± {self.stderr * scale:.{digits}f}"


def _rate(k: int, n: int) -> Estimate:
    if n == 0:
        return Estimate(math.nan, math.nan, 0)
    p = k / n
    # binomial standard error; at p = 0 or 1 report the rule-of-three scale instead of 0
    se = math.sqrt(p * (1 - p) / n) if 0 < p < 1 else 1.0 / n
    return Estimate(p, se, n)


def _quantile(values: np.ndarray, q: float, rng: np.random.Generator) -> Estimate:
    """Sample quantile with a bootstrap standard error (200 resamples, seeded)."""
    n = len(values)
    if n == 0:
        return Estimate(math.nan, math.nan, 0)
    value = float(np.quantile(values, q))
    if n == 1:
        return Estimate(value, math.nan, 1)
    boots = np.quantile(rng.choice(values, size=(200, n), replace=True), q, axis=1)
    return Estimate(value, float(np.std(boots, ddof=1)), n)


@dataclass(frozen=True)
class SimulationSummary:
    """Outcomes of `runs` rollouts of one policy under one scenario, with Monte Carlo errors.

    `false_rollback_rate` is the rollback rate when the scenario is healthy or at the boundary
    (None otherwise); `false_promotion_rate` the promotion rate at the boundary or under a
    regression; `detection_rate` the rollback rate under a regression. Times are seconds from
    the rollout's start to the decision.
    """

    scenario: Scenario
    runs: int
    seed: int
    results: tuple[RunResult, ...]
    rollback_rate: Estimate
    promote_rate: Estimate
    inconclusive_rate: Estimate
    median_time_to_rollback: Estimate
    p90_time_to_rollback: Estimate
    median_time_to_promote: Estimate
    mean_ticks: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def false_rollback_rate(self) -> Estimate | None:
        return None if self.scenario.is_regression else self.rollback_rate

    @property
    def false_promotion_rate(self) -> Estimate | None:
        return None if self.scenario.truth == "healthy" else self.promote_rate

    @property
    def detection_rate(self) -> Estimate | None:
        return self.rollback_rate if self.scenario.is_regression else None

    def outcomes(self) -> np.ndarray:
        return np.array([str(r.outcome) for r in self.results])

    def times(self) -> np.ndarray:
        return np.array([r.seconds for r in self.results])

    @classmethod
    def from_results(
        cls, scenario: Scenario, seed: int, results: Iterable[RunResult]
    ) -> SimulationSummary:
        res = tuple(results)
        n = len(res)
        rng = np.random.default_rng([seed, 7919])
        rb = np.array([r.seconds for r in res if r.outcome is RunOutcome.ROLLED_BACK])
        pr = np.array([r.seconds for r in res if r.outcome is RunOutcome.PROMOTED])
        n_inc = sum(r.outcome is RunOutcome.INCONCLUSIVE for r in res)
        return cls(
            scenario=scenario,
            runs=n,
            seed=seed,
            results=res,
            rollback_rate=_rate(len(rb), n),
            promote_rate=_rate(len(pr), n),
            inconclusive_rate=_rate(n_inc, n),
            median_time_to_rollback=_quantile(rb, 0.5, rng),
            p90_time_to_rollback=_quantile(rb, 0.9, rng),
            median_time_to_promote=_quantile(pr, 0.5, rng),
            mean_ticks=float(np.mean([r.ticks for r in res])) if n else math.nan,
        )


# --------------------------------------------------------------------------- traffic


class TrafficGenerator:
    """Draws one interval of samples for many runs at once (each at its own canary weight)."""

    def __init__(self, scenario: Scenario, rng: np.random.Generator,
                 bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.scenario = scenario
        self.rng = rng
        self.bounds = bounds
        self.p_stable = scenario.latency.bucket_probabilities(bounds)
        self.p_canary_reg = scenario.canary_latency_at(100.0).bucket_probabilities(bounds)
        self._finite_log = np.log(np.array([b for b in bounds if math.isfinite(b)]))

    def _bucket_probabilities(self, lat: Latency, shift: np.ndarray) -> np.ndarray:
        """(runs, buckets): the lognormal's buckets with its log-median moved by `shift`."""
        mu, sigma = lat.params()
        cdf = norm.cdf((self._finite_log[None, :] - mu - shift[:, None]) / sigma)
        cdf = np.concatenate([cdf, np.ones((len(shift), 1))], axis=1)
        p = np.diff(np.concatenate([np.zeros((len(shift), 1)), cdf], axis=1), axis=1)
        p = p.clip(min=0.0)
        return p / p.sum(axis=1, keepdims=True)

    def _latency_counts(self, n: np.ndarray, lat: Latency, base_p: np.ndarray) -> np.ndarray:
        sc = self.scenario
        if sc.latency_noise <= 0:
            return self.rng.multinomial(n, base_p)
        shift = self.rng.normal(0.0, sc.latency_noise, size=len(n))
        return self.rng.multinomial(n, self._bucket_probabilities(lat, shift))

    def _bursts(self, size: int, on: bool) -> np.ndarray:
        b = self.scenario.burstiness
        if b <= 0 or not on:
            return np.ones(size)
        return self.rng.gamma(1.0 / b, b, size=size)

    def baseline_series(self, windows: Sequence[tuple[float, float]],
                        runs: int) -> list[list[VersionSample]]:
        """Per run, one stable-only VersionSample per pre-rollout window (seconds relative to
        the rollout's start), at the full rate, with the scenario's bursts (when the baseline
        sees them) and latency noise."""
        sc, rng = self.scenario, self.rng
        seen = sc.bursts_in_baseline and not sc.canary_only_bursts
        out: list[list[VersionSample]] = [[] for _ in range(runs)]
        for t0, t1 in windows:
            mid, seconds = (t0 + t1) / 2, t1 - t0
            n = rng.poisson(sc.rps * sc.rate_factor(mid) * seconds, size=runs)
            p = sc.error_rate * sc.error_factor(mid) * self._bursts(runs, seen)
            e = rng.binomial(n, np.clip(p, 0.0, 1.0))
            h = np.cumsum(self._latency_counts(n, sc.latency, self.p_stable), axis=1)
            for i in range(runs):
                out[i].append(VersionSample(int(n[i]), int(e[i]),
                                            Histogram(self.bounds, tuple(h[i].tolist()))))
        return out

    def draw(self, t_offset: float, seconds: float, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Per-run arrays for the interval [t_offset, t_offset + seconds) at these weights
        (percent): requests, errors and cumulative bucket counts of each version."""
        sc, rng = self.scenario, self.rng
        r = len(weights)
        mid = t_offset + seconds / 2
        lam = sc.rps * sc.rate_factor(mid) * seconds
        total = rng.poisson(lam, size=r)
        n_c = rng.binomial(total, np.clip(weights / 100.0, 0.0, 1.0))
        n_s = total - n_c
        base = sc.error_rate * sc.error_factor(mid)
        regressed = np.array([sc.regressed_at(w) for w in weights]) if (
            sc.regression_above_weight is not None) else np.ones(r, dtype=bool)
        p_s = np.full(r, base) * self._bursts(r, not sc.canary_only_bursts)
        p_c = np.where(regressed, base * sc.error_multiplier, base) * self._bursts(r, True)
        e_s = rng.binomial(n_s, np.clip(p_s, 0.0, 1.0))
        e_c = rng.binomial(n_c, np.clip(p_c, 0.0, 1.0))
        h_s = self._latency_counts(n_s, sc.latency, self.p_stable)
        if sc.latency_noise > 0:
            shift = rng.normal(0.0, sc.latency_noise, size=r)
            lat_c = sc.canary_latency_at(100.0)
            p_reg = self._bucket_probabilities(lat_c, shift)
            p_ok = self._bucket_probabilities(sc.latency, shift)
            h_c = rng.multinomial(n_c, np.where(regressed[:, None], p_reg, p_ok))
        else:
            pv = np.where(regressed[:, None], self.p_canary_reg[None, :], self.p_stable[None, :])
            h_c = rng.multinomial(n_c, pv)
        return {
            "n_s": n_s, "e_s": e_s, "n_c": n_c, "e_c": e_c,
            "h_s": np.cumsum(h_s, axis=1), "h_c": np.cumsum(h_c, axis=1),
        }

    def samples(self, d: dict[str, np.ndarray], i: int, t0: datetime, t1: datetime,
                weight: float) -> Samples:
        """The i-th run's Samples from a `draw` result (or a sum of several)."""
        return Samples(
            t0=t0, t1=t1,
            stable=VersionSample(int(d["n_s"][i]), int(d["e_s"][i]),
                                 Histogram(self.bounds, tuple(d["h_s"][i].tolist()))),
            canary=VersionSample(int(d["n_c"][i]), int(d["e_c"][i]),
                                 Histogram(self.bounds, tuple(d["h_c"][i].tolist()))),
            canary_weight=weight,
            queries=(f"simulation({self.scenario.name})",),
        )


# --------------------------------------------------------------------------- the loop


def horizon_seconds(policy: Policy) -> float:
    """When a run still undecided ends as inconclusive: every analysis step's
    maxStepDuration plus one interval each (the judge needs a tick to notice the limit)."""
    a = policy.spec.analysis
    n = sum(1 for s in policy.spec.strategy.weight_steps() if isinstance(s, int))
    per = a.maxStepDuration.total_seconds() + a.interval.total_seconds()
    return n * per


def _default_judge_factory(policy: Policy) -> JudgeLike:
    from analyzer.core.judge import Judge

    return Judge(policy)


@dataclass
class _Run:
    state: RolloutState
    judge: JudgeLike
    ticks: int = 0
    reason: str = ""
    recent: list[dict[str, Any]] = field(default_factory=list)  # overlapping windows


def simulate_rollouts(
    policy: Policy,
    scenario: Scenario,
    runs: int,
    seed: int = 0,
    judge_factory: JudgeFactory | None = None,
    progress: Callable[[int], None] | None = None,
) -> SimulationSummary:
    """Run `runs` simulated rollouts of `policy` under `scenario`, each with a fresh judge from
    `judge_factory(policy)` (default: `analyzer.core.judge.Judge`).

    Reproducible: the same (policy, scenario, runs, seed, judge) gives the same results. The
    random stream depends on `seed` and the scenario's name only, so two judges see the same
    traffic as long as their runs sit at the same weights (common random numbers).
    `progress(k)` is called with the number of runs finished since the previous call.
    """
    if runs <= 0:
        raise ValueError("runs must be positive")
    factory = judge_factory or _default_judge_factory
    rng = np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(scenario.name.encode())])
    gen = TrafficGenerator(scenario, rng)
    machine = RolloutMachine.for_policy(policy)
    interval = policy.spec.analysis.interval.total_seconds()
    window = policy.spec.analysis.effective_window.total_seconds()
    horizon = horizon_seconds(policy)
    k = scenario.window_intervals

    from analyzer.core.judge import baseline_windows

    windows = [((a - EPOCH).total_seconds(), (b - EPOCH).total_seconds())
               for a, b in baseline_windows(policy, EPOCH)]
    series = gen.baseline_series(windows, runs)
    active: list[_Run] = []
    results: dict[int, RunResult] = {}
    for i in range(runs):
        judge = factory(policy)
        hist: Histogram | None = None
        for v in series[i]:
            hist = add_histograms(hist, v.latency)
        judge.set_baseline(hist, series[i])
        active.append(_Run(RolloutState(), judge))
    ids = list(range(runs))
    for run in active:
        _step_through(machine, run, EPOCH)

    elapsed = 0.0
    while ids:
        elapsed += interval
        now = EPOCH + timedelta(seconds=elapsed)
        weights = np.array([active[i].state.weight for i in ids], dtype=float)
        draw = gen.draw(elapsed - window, window, weights)
        still: list[int] = []
        finished = 0
        for j, i in enumerate(ids):
            run = active[i]
            if k == 1:
                t0 = now - timedelta(seconds=window)
                samples = gen.samples(draw, j, t0, now, float(weights[j]))
            else:
                samples = _overlapping(gen, run, draw, j, now, interval, window, k,
                                       float(weights[j]))
            decision = run.judge.evaluate(samples, now)
            run.ticks += 1
            run.reason = decision.reason
            tr = machine.on_decision(run.state, decision, now)
            run.state = tr.after
            if tr.start_step:
                run.judge.start_step(now, float(run.state.weight))
                run.recent.clear()
            _step_through(machine, run, now)
            outcome = _terminal(machine, run)
            if outcome is None and elapsed >= horizon:
                outcome = RunOutcome.INCONCLUSIVE
                run.reason = f"undecided at the simulation horizon ({horizon:.0f}s): {run.reason}"
            if outcome is None:
                still.append(i)
                continue
            results[i] = RunResult(outcome, elapsed, run.ticks, int(run.state.weight), run.reason)
            finished += 1
        ids = still
        if progress is not None and finished:
            progress(finished)
    return SimulationSummary.from_results(scenario, seed, (results[i] for i in range(runs)))


def _overlapping(gen: TrafficGenerator, run: _Run, draw: dict[str, np.ndarray], j: int,
                 now: datetime, interval: float, window: float, k: int,
                 weight: float) -> Samples:
    """The run's last k intervals of this step added up: the window an `analysis.window` of k
    intervals gives (the engine clips a window to the step's start, so it does here)."""
    run.recent.append({key: v[j] for key, v in draw.items()})
    del run.recent[:-k]
    total = {key: sum(r[key] for r in run.recent)[None] for key in draw}
    t0 = now - timedelta(seconds=(len(run.recent) - 1) * interval + window)
    return gen.samples(total, 0, t0, now, weight)


def _step_through(machine: RolloutMachine, run: _Run, now: datetime) -> None:
    """Apply the transitions that need no analysis: start, pause steps, finishing."""
    for _ in range(1000):
        st = run.state
        if st.phase.terminal or machine.needs_analysis(st):
            return
        if st.phase is Phase.PAUSED:
            step = machine.current_step(st)
            if step is None or step.kind != "pause":
                return  # the judge asked for a human: the run ends inconclusive
            tr = machine.on_command(st, Command.RESUME, now, actor="simulation")
        else:
            tr = machine.on_time(st, now)
        if tr.after == st:
            return
        run.state = tr.after
        if tr.start_step:
            run.judge.start_step(now, float(run.state.weight))
            run.recent.clear()


def _terminal(machine: RolloutMachine, run: _Run) -> RunOutcome | None:
    st = run.state
    if st.phase is Phase.SUCCEEDED:
        return RunOutcome.PROMOTED
    if st.phase is Phase.ROLLED_BACK:
        return RunOutcome.ROLLED_BACK
    if st.phase is Phase.FAILED:
        return RunOutcome.INCONCLUSIVE
    if st.phase is Phase.PAUSED:
        step = machine.current_step(st)
        if step is None or step.kind != "pause":
            return RunOutcome.INCONCLUSIVE
    return None
