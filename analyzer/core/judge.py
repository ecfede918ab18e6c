"""The judge: one decision per tick from every check's verdict, with reasons in words.

Pure logic: no I/O, no clock (time is passed in). The engine calls `set_baseline` once (the
stable's pre-rollout intervals), `start_step` whenever the weight changes, `evaluate` each tick,
and persists `to_state()`.

Rules (docs/statistics.md, section 6):
- rollback: alpha is split over the statistical checks that can roll back (error rate, latency
  tails, distribution test) by weighted Bonferroni, alpha_j = alpha w_j / sum(w); check j rolls
  back at E_j >= 1/alpha_j, which keeps P(rolling back a canary within every tolerance) <= alpha
  under any dependence between checks; a threshold at its failure limit rolls back too;
- promotion: every promotable check's evidence has reached 1/beta in the step (no split:
  promotion is an intersection-union decision, so a canary at or beyond one check's tolerance is
  promoted with probability <= beta), minStepDuration passed, minSamples canary requests in the
  step. With the risk-budgeted ramp, intermediate steps need the exclusion of a severe
  regression instead, the last analysed step full non-inferiority;
- a sample-ratio mismatch holds (the analysis of a wrongly routed canary is not trusted);
- a window that overlaps data already analysed is not fed to the statistical tests again;
- otherwise hold; at maxStepDuration -> decision.onInconclusive;
- no data -> hold, never promote; after dataFailureLimit consecutive ticks -> onDataFailure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from analyzer.core.latency_check import (
    LatencyChecks,
    distribution_key,
    latency_key,
)
from analyzer.core.ratio_check import RatioCheck
from analyzer.core.stats.classic import ClassicCollector
from analyzer.core.stats.latency import add_histograms
from analyzer.core.stats.srm import SampleRatioTest
from analyzer.core.threshold_check import ThresholdChecks
from analyzer.core.types import (
    Action,
    Decision,
    Histogram,
    Outcome,
    Samples,
    Verdict,
    VersionSample,
)
from analyzer.policy.checks import (
    ClassicCheck,
    ErrorRateCheck,
    LatencyCheck,
    ThresholdCheck,
    check_name,
)
from analyzer.policy.model import Policy
from analyzer.util.fmt import fmt_num, fmt_seconds
from analyzer.util.times import iso

STATE_VERSION = 2
#: The canary's traffic share assumed for the negligible-rate weight when the first analysed
#: step has no weight between 0 and 100 (blue-green previews, header routes, mirrors).
DEFAULT_FIRST_SHARE = 0.1


#: At most this many pre-rollout intervals are read one by one for a judge's baseline.
MAX_BASELINE_INTERVALS = 40


def baseline_windows(policy: Policy, start: datetime) -> list[tuple[datetime, datetime]]:
    """The windows of the stable's traffic a judge starts from: one per analysis interval over
    `analysis.baselineWindow` before `start` (the last MAX_BASELINE_INTERVALS), oldest first.
    The last one ends at `start`, where the first analysed window begins (a metric source that
    shares queries among rollouts in step sees them in step)."""
    a = policy.spec.analysis
    n = min(int(a.baselineWindow / a.interval), MAX_BASELINE_INTERVALS)
    return [(start - k * a.interval, start - (k - 1) * a.interval) for k in range(n, 0, -1)]


class JudgeStateVersionError(ValueError):
    """A stored judge state written by another statistics version: it cannot be continued."""


def analysed_weights(policy: Policy) -> list[int]:
    """The weights of the steps the judge analyses (every weight step but the final 100)."""
    weights = [w for w in policy.spec.strategy.weight_steps() if isinstance(w, int)]
    return [w for w in weights if w < 100] or weights[:1]


class Judge:
    """Turns each tick's samples into a Decision for one rollout (see the module docstring)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        spec = policy.spec
        self.alpha = spec.decision.alpha
        self.beta = spec.decision.beta
        self.weights = analysed_weights(policy)
        self.n_steps = max(len(self.weights), 1)
        self.ramp = spec.strategy.ramp == "risk-budgeted"
        w0 = self.weights[0] if self.weights else 0
        self.first_share = w0 / 100 if 0 < w0 < 100 else DEFAULT_FIRST_SHARE
        self.alpha_of = self._split_alpha()
        self.step_index = -1  # analysis steps started so far - 1 (the regression e-processes)
        self.plan_step: int | None = None  # the rollout plan's index of this step (pauses count)
        self.step_started: datetime | None = None
        self.step_weight: float | None = None
        self.error_runners: dict[str, RatioCheck] = {}
        self.classic: dict[str, ClassicCollector] = {}
        latency: dict[str, LatencyCheck] = {}
        thresholds: dict[str, ThresholdCheck] = {}
        for c in spec.checks:
            name = check_name(c)
            if isinstance(c, ErrorRateCheck):
                self.error_runners[name] = self._runner(
                    name, "error-rate", c.tolerance, self.alpha_of[name], c.negligibleRate)
            elif isinstance(c, LatencyCheck):
                latency[name] = c
            elif isinstance(c, ThresholdCheck):
                thresholds[name] = c
            elif isinstance(c, ClassicCheck):
                self.classic[name] = ClassicCollector(c)
        self.latency = LatencyChecks(latency, self.alpha_of, self._latency_runner)
        self.thresholds = ThresholdChecks(thresholds)
        self.srm = SampleRatioTest(self.alpha)
        self.srm_enabled = spec.decision.checkSampleRatio
        self.baseline_set = False
        self.baseline_intervals = 0
        self.step_canary_requests = 0
        self.data_failures = 0
        self.last_consumed_t1: datetime | None = None

    # ------------------------------------------------------------------ checks and alpha

    def _runner(self, name: str, label: str, tolerance: float, alpha: float,
                negligible_rate: float = 0.0) -> RatioCheck:
        spec = self.policy.spec
        runner = RatioCheck(
            name, label, tolerance, alpha, self.beta, n_starts=self.n_steps,
            severe_ratio=spec.strategy.severeRatio, negligible_rate=negligible_rate,
            warmup_ticks=spec.analysis.burstWarmup,
            evidence_per_step=spec.decision.promotionEvidence == "step")
        if self.step_index >= 0:  # created mid-rollout (latency bounds from the first window)
            runner.start_step(first=True, severe_only=self._severe_only())
        return runner

    def _latency_runner(self, key: str, label: str, tolerance: float, alpha: float) -> RatioCheck:
        return self._runner(key, label, tolerance, alpha)

    def _split_alpha(self) -> dict[str, float]:
        """Weighted Bonferroni over the statistical checks that can roll back."""
        parts: dict[str, float] = {}
        for c in self.policy.spec.checks:
            name = check_name(c)
            if isinstance(c, ErrorRateCheck):
                parts[name] = c.weight
            elif isinstance(c, LatencyCheck):
                k = len(c.quantiles) + (1 if c.distribution else 0)
                for q in c.quantiles:
                    parts[latency_key(name, q)] = c.weight / k
                if c.distribution:
                    parts[distribution_key(name)] = c.weight / k
        total = sum(parts.values()) or 1.0
        return {k: self.alpha * w / total for k, w in parts.items()}

    def _severe_only(self) -> bool:
        """On the risk-budgeted ramp every analysed step but the last advances on the
        exclusion of a severe regression."""
        return self.ramp and self.step_weight is not None and self.step_weight < self.weights[-1]

    # ------------------------------------------------------------------ the interface

    def set_baseline(self, stable_latency: Histogram | None,
                     stable_series: Sequence[VersionSample] | None = None) -> None:
        """The stable version's pre-rollout traffic: `stable_series`, one VersionSample per
        analysis interval over `analysis.baselineWindow` (oldest first), tells every test how
        bursty the service is before the first tick; the latency bounds are picked on
        `stable_latency` (default: the series' histograms added up)."""
        series = list(stable_series or ())
        if stable_latency is None:
            for s in series:
                if s.latency is not None and (stable_latency is None
                                              or s.latency.le == stable_latency.le):
                    stable_latency = add_histograms(stable_latency, s.latency)
        if series:
            self.baseline_intervals = len(series)
            n = [float(s.requests) for s in series]
            for r in self.error_runners.values():
                r.set_baseline(n, [float(s.errors) for s in series], self.first_share)
        self.latency.set_baseline(stable_latency, series, self.first_share)
        self.baseline_set = self.baseline_set or stable_latency is not None

    def use_latency_bounds(self, bounds: Mapping[str, float | None]) -> bool:
        """Take the latency bounds another run picked (a backtest of a recorded rollout without
        recorded baseline intervals uses the engine's), instead of choosing them here. True
        when every latency test got its bound; otherwise nothing is changed."""
        keys = self.latency.keys()
        if self.latency.runners or not keys or any(bounds.get(k) is None for k in keys):
            return False
        for key, (c, q) in keys.items():
            self.latency.add_runner(key, c, q, float(bounds[key]))  # type: ignore[arg-type]
        self.baseline_set = True
        return True

    def _ratio_runners(self) -> list[RatioCheck]:
        return [*self.error_runners.values(), *self.latency.runners.values()]

    def start_step(self, now: datetime, canary_weight: float, step: int | None = None) -> None:
        """A new step begins: reset step time and counts; start new regression e-processes.
        `step`: the step's index in the rollout plan (pause steps counted), so the sentences say
        "step 3" where the API and the dashboard do; default: the judge's own count."""
        first = self.step_index < 0
        self.step_index += 1
        self.plan_step = step
        self.step_started = now
        self.step_weight = canary_weight
        self.step_canary_requests = 0
        self.latency.start_step()
        severe_only = self._severe_only()
        for r in self._ratio_runners():
            r.start_step(first, severe_only)
        for cl in self.classic.values():
            cl.reset()
        self.srm = SampleRatioTest(self.alpha)

    def evaluate(self, samples: Samples, now: datetime) -> Decision:
        """One tick: update every check with the window's counts, then decide."""
        if self.step_started is None:
            self.start_step(samples.t0, samples.canary_weight or 0.0)
        assert self.step_started is not None
        rules = self.policy.spec.decision
        elapsed = (now - self.step_started).total_seconds()
        where = self._where()

        if not samples.ok or samples.stable is None or samples.canary is None:
            self.data_failures += 1
            why = samples.no_data_reason or (
                "no series for the " + ("stable" if samples.stable is None else "canary")
                + " version"
            )
            if self.data_failures >= rules.dataFailureLimit:
                action = Action(rules.onDataFailure)
                return Decision(
                    action,
                    f"{action}: no usable data for {self.data_failures} consecutive ticks "
                    f"(limit {rules.dataFailureLimit}); last: {why}",
                )
            return Decision(
                Action.HOLD,
                f"hold: no usable data ({why}); {self.data_failures}/{rules.dataFailureLimit} "
                "consecutive failures",
            )
        self.data_failures = 0

        skip_latency = False
        if not self.baseline_set and self.latency.checks and samples.stable.latency is not None:
            # No pre-rollout baseline: take the bounds from this first window's stable
            # histogram and leave this window out of the latency tests, so the bound does not
            # depend on the data it is tested on.
            self.set_baseline(samples.stable.latency)
            skip_latency = True

        not_counted = None
        if self.last_consumed_t1 is not None and samples.t0 < self.last_consumed_t1:
            not_counted = (f"window from {iso(samples.t0)} overlaps data already analysed "
                           f"(up to {iso(self.last_consumed_t1)}): not counted again")
        else:
            self.last_consumed_t1 = samples.t1
        seconds = max((samples.t1 - samples.t0).total_seconds(), 0.0)
        st, ca = samples.stable, samples.canary
        self.step_canary_requests += ca.requests
        verdicts: list[Verdict] = []
        for r in self.error_runners.values():
            if not_counted is None:
                verdicts.append(r.update(ca.requests, ca.errors, st.requests, st.errors, seconds))
            else:
                v = r.verdict(r.test.result())
                verdicts.append(replace(v, reason=f"{v.reason} ({not_counted})"))
        verdicts.extend(self.latency.evaluate(samples, seconds, skip=skip_latency,
                                              not_counted=not_counted))
        verdicts.extend(self.thresholds.evaluate(samples))
        verdicts.extend(col.update(samples, name) for name, col in self.classic.items())

        srm_verdict = None
        if self.srm_enabled:
            weight = samples.canary_weight
            if weight is None:
                weight = self.step_weight
            srm = self.srm.update(ca.requests, st.requests, weight) if not_counted is None \
                else self.srm.result()
            srm_verdict = _srm_verdict(srm)
            verdicts.append(srm_verdict)
        return self._decide(verdicts, srm_verdict, elapsed, where)

    def _decide(self, verdicts: list[Verdict], srm_verdict: Verdict | None, elapsed: float,
                where: str) -> Decision:
        rules = self.policy.spec.decision
        gating = [v for v in verdicts if v.gating]
        regressions = [v for v in gating if v.outcome == Outcome.REGRESSION]
        if regressions:
            return Decision(Action.ROLLBACK,
                            f"rollback{where}: " + "; ".join(v.reason for v in regressions),
                            tuple(verdicts))
        power = self._power()
        if srm_verdict is not None and srm_verdict.outcome == Outcome.INCONCLUSIVE and \
                srm_verdict.details.get("mismatch"):
            return self._hold_or_timeout(
                f"sample ratio mismatch: {srm_verdict.reason}; the analysis is not trusted",
                verdicts, elapsed, power,
            )
        promotable = [v for v in gating if not v.details.get("rollback_only")]
        not_ok = [v for v in promotable if v.outcome != Outcome.OK]
        min_dur = self.policy.spec.analysis.minStepDuration.total_seconds()
        if not not_ok:
            waits = []
            if elapsed < min_dur:
                waits.append(
                    f"step time {fmt_seconds(elapsed)} < minStepDuration {fmt_seconds(min_dur)}"
                )
            if self.step_canary_requests < rules.minSamples:
                waits.append(
                    f"canary requests in step {self.step_canary_requests} < minSamples "
                    f"{rules.minSamples}"
                )
            if not waits:
                oks = "; ".join(v.reason for v in promotable) or "no gating checks"
                return Decision(Action.PROMOTE, f"promote{where}: {oks}", tuple(verdicts))
            return self._hold_or_timeout(
                "every check non-inferior, waiting: " + ", ".join(waits), verdicts, elapsed, None
            )
        return self._hold_or_timeout("; ".join(v.reason for v in not_ok), verdicts, elapsed,
                                     power)

    # ------------------------------------------------------------------ helpers

    def _where(self) -> str:
        if self.step_weight is None:
            return ""
        number = self.plan_step if self.plan_step is not None else self.step_index
        return f" at {fmt_num(self.step_weight)}% (step {number + 1})"

    def _hold_or_timeout(
        self, why: str, verdicts: list[Verdict], elapsed: float, power: dict[str, Any] | None
    ) -> Decision:
        max_dur = self.policy.spec.analysis.maxStepDuration.total_seconds()
        where = self._where()
        if elapsed >= max_dur:
            action = Action(self.policy.spec.decision.onInconclusive)
            return Decision(
                action,
                f"{action}{where}: inconclusive after {fmt_seconds(elapsed)} "
                f"(maxStepDuration {fmt_seconds(max_dur)}): {why}",
                tuple(verdicts),
            )
        needed = power["seconds"] if power else None
        text = f"hold{where}: {why}"
        if power:
            text += (
                f"; a {fmt_num(power['ratio'])}x {power['check']} regression starting now "
                f"needs at least {fmt_num(power['more_canary_requests'])} more canary requests "
                f"to detect (~{fmt_seconds(power['seconds'])} at current traffic, Wald bound)"
            )
            if power.get("promote_seconds") is not None:
                text += (f"; a healthy canary needs ~{fmt_seconds(power['promote_seconds'])} "
                         f"more to be shown within {power['promote_check']}'s tolerance")
        return Decision(Action.HOLD, text, tuple(verdicts), time_needed_seconds=needed)

    def _power(self) -> dict[str, Any] | None:
        best: dict[str, Any] | None = None
        promote: tuple[float, str] | None = None
        for r in self._ratio_runners():
            p = r.power()
            if p is None:
                continue
            if best is None or p["seconds"] > best["seconds"]:
                best = {**p, "check": r.name}
            if "promote_seconds" in p and (promote is None or p["promote_seconds"] > promote[0]):
                promote = (p["promote_seconds"], r.name)
        if best is not None:
            best.pop("promote_seconds", None)
            if promote is not None:
                best["promote_seconds"], best["promote_check"] = promote
        return best

    # ------------------------------------------------------------------ persistence

    def to_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "step_index": self.step_index,
            "plan_step": self.plan_step,
            "step_started": self.step_started.isoformat() if self.step_started else None,
            "step_weight": self.step_weight,
            "step_canary_requests": self.step_canary_requests,
            "data_failures": self.data_failures,
            "baseline_set": self.baseline_set,
            "baseline_intervals": self.baseline_intervals,
            "last_consumed_t1": self.last_consumed_t1.isoformat()
            if self.last_consumed_t1 else None,
            "error_runners": {k: r.to_state() for k, r in self.error_runners.items()},
            **self.latency.to_state(),
            "thresholds": self.thresholds.to_state(),
            "classic": {k: c.to_state() for k, c in self.classic.items()},
            "srm": self.srm.to_state(),
        }

    @classmethod
    def from_state(cls, policy: Policy, state: dict[str, Any]) -> Judge:
        """Continue from `to_state()`. JudgeStateVersionError for a state another statistics
        version wrote (its evidence cannot be carried over: the engine restarts the step)."""
        if state.get("version") != STATE_VERSION:
            raise JudgeStateVersionError(
                f"judge state version {state.get('version')!r}, this judge reads version "
                f"{STATE_VERSION} (statistics v2)")
        j = cls(policy)
        j.step_index = state["step_index"]
        j.plan_step = state["plan_step"]
        j.step_started = datetime.fromisoformat(state["step_started"]) if state["step_started"] \
            else None
        j.step_weight = state["step_weight"]
        j.step_canary_requests = state["step_canary_requests"]
        j.data_failures = state["data_failures"]
        j.baseline_set = state["baseline_set"]
        j.baseline_intervals = state["baseline_intervals"]
        last = state["last_consumed_t1"]
        j.last_consumed_t1 = datetime.fromisoformat(last) if last else None
        for k, s in state["error_runners"].items():
            if k in j.error_runners:
                j.error_runners[k].load_state(s)
        j.latency.load_state(state)
        j.thresholds.load_state(state["thresholds"])
        for k, s in state["classic"].items():
            if k in j.classic:
                j.classic[k].load_state(s)
        j.srm = SampleRatioTest.from_state(state["srm"])
        return j


def _srm_verdict(srm: Any) -> Verdict:
    if srm.observed_share is None:
        return Verdict("sample-ratio", Outcome.NO_DATA,
                       "sample ratio: no traffic at a weight strictly between 0 and 100",
                       gating=False)
    text = (f"canary received {fmt_num(srm.observed_share)}% of requests, router weight "
            f"{fmt_num(srm.expected_share)}%")
    if srm.mismatch:
        return Verdict("sample-ratio", Outcome.INCONCLUSIVE,
                       f"{text}, e={fmt_num(srm.e_value)} >= {fmt_num(srm.threshold)}",
                       estimate=srm.observed_share, evidence=srm.e_value, evidence_kind="e-value",
                       threshold=srm.threshold, gating=False, details={"mismatch": True})
    return Verdict("sample-ratio", Outcome.OK,
                   f"{text} (consistent: e={fmt_num(srm.e_value)} < {fmt_num(srm.threshold)})",
                   estimate=srm.observed_share, evidence=srm.e_value, evidence_kind="e-value",
                   threshold=srm.threshold, gating=False, details={"mismatch": False})
