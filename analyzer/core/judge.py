"""The judge: one decision per tick from every check's verdict, with reasons in words.

Pure logic: no I/O, no clock (time is passed in). The engine calls `set_baseline` once,
`start_step` whenever the weight changes, `evaluate` each tick, and persists `to_state()`.

Rules (docs/statistics.md):
- alpha is split over the statistical gating checks by weighted Bonferroni:
  alpha_j = alpha * w_j / sum(w); check j rolls back at E_j >= 1/alpha_j, which keeps the
  overall false-rollback probability <= alpha under any dependence between checks;
- any regression, or a threshold at its failure limit -> rollback;
- a sample-ratio mismatch -> hold (the analysis of a wrongly routed canary is not trusted);
- every gating check non-inferior, minStepDuration passed, minSamples canary requests in the
  step -> promote (advance to the next step);
- otherwise hold; at maxStepDuration -> decision.onInconclusive;
- no data -> hold, never promote; after dataFailureLimit consecutive ticks -> onDataFailure.
"""


from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from analyzer.core.ratio_check import RatioCheck
from analyzer.core.stats.classic import ClassicCollector
from analyzer.core.stats.latency import (
    DistributionTest,
    add_histograms,
    bound_for_slo,
    choose_bound,
    interpolate_quantile,
    slow_count,
)
from analyzer.core.stats.srm import SampleRatioTest
from analyzer.core.stats.thresholds import ThresholdTracker
from analyzer.core.types import (
    Action,
    Decision,
    Histogram,
    Outcome,
    Samples,
    Verdict,
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

STATE_VERSION = 1
# Regression evidence: half the prior weight on the e-process started with the rollout, the


class Judge:
    """Turns each tick's samples into a Decision for one rollout (see the module docstring)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        spec = policy.spec
        self.alpha = spec.decision.alpha
        weights = [w for w in spec.strategy.weight_steps() if isinstance(w, int)]
        self.n_steps = max(len(weights), 1)
        self.alpha_of = self._split_alpha()
        self.error_runners: dict[str, RatioCheck] = {}
        self.latency_checks: dict[str, LatencyCheck] = {}
        self.latency_runners: dict[str, RatioCheck] = {}  # key: f"{check}-p{q}"
        self.latency_bounds: dict[str, float | None] = {}
        self.distribution: dict[str, DistributionTest] = {}
        self.thresholds: dict[str, ThresholdTracker] = {}
        self.classic: dict[str, ClassicCollector] = {}
        for c in spec.checks:
            name = check_name(c)
            if isinstance(c, ErrorRateCheck):
                self.error_runners[name] = RatioCheck(
                    name, "error-rate", c.tolerance, self.alpha_of[name], self.n_steps,
                    negligible_rate=c.negligibleRate,
                )
            elif isinstance(c, LatencyCheck):
                self.latency_checks[name] = c
                if c.distribution:
                    self.distribution[name] = DistributionTest()
            elif isinstance(c, ThresholdCheck):
                self.thresholds[name] = ThresholdTracker(c.max, c.failureLimit)
            elif isinstance(c, ClassicCheck):
                self.classic[name] = ClassicCollector(c)
        self.srm = SampleRatioTest(self.alpha)
        self.srm_enabled = spec.decision.checkSampleRatio
        self.baseline_set = False
        self.step_index = -1
        self.step_started: datetime | None = None
        self.step_weight: float | None = None
        self.step_canary_requests = 0
        self.data_failures = 0
        self.stable_step_latency: Histogram | None = None
        self.canary_step_latency: Histogram | None = None

    # ------------------------------------------------------------------ alpha

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
                    parts[_latency_key(name, q)] = c.weight / k
                if c.distribution:
                    parts[f"{name}-distribution"] = c.weight / k
            elif isinstance(c, ClassicCheck) and not c.advisory:
                parts[name] = 1.0
        total = sum(parts.values()) or 1.0
        out = {k: self.alpha * w / total for k, w in parts.items()}
        for c in self.policy.spec.checks:  # advisory classic tests report at their own level
            if isinstance(c, ClassicCheck) and c.advisory:
                out[check_name(c)] = 1 - c.confidence
        return out

    # ------------------------------------------------------------------ the interface

    def set_baseline(self, stable_latency: Histogram | None) -> None:
        """Pick the latency bounds from a pre-rollout window of stable traffic."""
        for name, c in self.latency_checks.items():
            for q in c.quantiles:
                key = _latency_key(name, q)
                if key in self.latency_runners:
                    continue  # bounds never change once analysis has started
                bound = self._pick_bound(c, q, stable_latency)
                if bound is not None:
                    self._add_latency_runner(key, c, q, bound)
        self.baseline_set = stable_latency is not None

    def use_latency_bounds(self, bounds: Mapping[str, float | None]) -> bool:
        """Take the latency bounds another run picked (a backtest of a recorded rollout uses
        the engine's, chosen on its pre-rollout baseline), instead of choosing them here.
        True when every latency test got its bound; otherwise nothing is changed and the
        bounds are picked as usual."""
        keys = {_latency_key(name, q): (c, q)
                for name, c in self.latency_checks.items() for q in c.quantiles}
        if self.latency_runners or not keys or any(bounds.get(k) is None for k in keys):
            return False
        for key, (c, q) in keys.items():
            self._add_latency_runner(key, c, q, float(bounds[key]))  # type: ignore[arg-type]
        self.baseline_set = True
        return True

    def _add_latency_runner(self, key: str, c: LatencyCheck, q: float, bound: float) -> None:
        self.latency_bounds[key] = bound
        self.latency_runners[key] = RatioCheck(
            key, f"p{_qtext(q)} latency (share slower than {fmt_num(bound)}s)",
            c.tolerance, self.alpha_of[key], self.n_steps,
        )
        if self.step_index > 0:
            self.latency_runners[key].start_step(first=True)

    @staticmethod
    def _pick_bound(c: LatencyCheck, q: float, hist: Histogram | None) -> float | None:
        if hist is None:
            return None
        if c.sloBound is not None:
            return bound_for_slo(hist.le, c.sloBound.total_seconds())
        return choose_bound(hist, q)

    def start_step(self, now: datetime, canary_weight: float) -> None:
        """A new step begins: reset step time and counts; start new regression e-processes."""
        first = self.step_index < 0
        self.step_index += 1
        self.step_started = now
        self.step_weight = canary_weight
        self.step_canary_requests = 0
        self.stable_step_latency = None
        self.canary_step_latency = None
        for r in [*self.error_runners.values(), *self.latency_runners.values()]:
            r.start_step(first)
        for cl in self.classic.values():
            cl.reset()
        self.srm = SampleRatioTest(self.alpha)

    def evaluate(self, samples: Samples, now: datetime) -> Decision:
        """One tick: update every check with the window's counts, then decide."""
        if self.step_started is None:
            self.start_step(samples.t0, samples.canary_weight or 0.0)
        assert self.step_started is not None
        rules = self.policy.spec.decision
        analysis = self.policy.spec.analysis
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

        if not self.baseline_set and self.latency_checks and samples.stable.latency is not None:
            # No pre-rollout baseline was given: take the bounds from this first window's
            # stable histogram and leave this window out of the latency tests, so the bound
            # does not depend on the data it is tested on.
            self.set_baseline(samples.stable.latency)
            skip_latency = True
        else:
            skip_latency = False

        seconds = max((samples.t1 - samples.t0).total_seconds(), 0.0)
        st, ca = samples.stable, samples.canary
        self.step_canary_requests += ca.requests
        verdicts: list[Verdict] = []
        for r in self.error_runners.values():
            verdicts.append(r.update(ca.requests, ca.errors, st.requests, st.errors, seconds))
        verdicts.extend(self._latency(samples, seconds, skip_latency))
        verdicts.extend(self._thresholds(samples))
        verdicts.extend(self._classic(samples))

        srm_verdict = None
        if self.srm_enabled:
            weight = samples.canary_weight
            if weight is None:
                weight = self.step_weight
            srm = self.srm.update(ca.requests, st.requests, weight)
            srm_verdict = _srm_verdict(srm)
            verdicts.append(srm_verdict)

        gating = [v for v in verdicts if v.gating]
        regressions = [v for v in gating if v.outcome == Outcome.REGRESSION]
        if regressions:
            return Decision(
                Action.ROLLBACK,
                f"rollback{where}: " + "; ".join(v.reason for v in regressions),
                tuple(verdicts),
            )
        power = self._power()
        if srm_verdict is not None and srm_verdict.outcome == Outcome.INCONCLUSIVE and \
                srm_verdict.details.get("mismatch"):
            return self._hold_or_timeout(
                f"sample ratio mismatch: {srm_verdict.reason}; the analysis is not trusted",
                verdicts, elapsed, power,
            )
        promotable = [v for v in gating if not v.details.get("rollback_only")]
        not_ok = [v for v in promotable if v.outcome != Outcome.OK]
        min_dur = analysis.minStepDuration.total_seconds()
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
        return self._hold_or_timeout(
            "; ".join(v.reason for v in not_ok), verdicts, elapsed, power
        )

    # ------------------------------------------------------------------ helpers

    def _where(self) -> str:
        if self.step_weight is None:
            return ""
        return f" at {fmt_num(self.step_weight)}% (step {self.step_index + 1})"

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
        return Decision(Action.HOLD, text, tuple(verdicts), time_needed_seconds=needed)

    def _power(self) -> dict[str, Any] | None:
        best = None
        for r in [*self.error_runners.values(), *self.latency_runners.values()]:
            p = r.power()
            if p is not None and (best is None or p["seconds"] > best["seconds"]):
                best = {**p, "check": r.name}
        return best

    def _latency(self, samples: Samples, seconds: float, skip: bool) -> list[Verdict]:
        assert samples.stable is not None and samples.canary is not None
        out: list[Verdict] = []
        sl, cl = samples.stable.latency, samples.canary.latency
        if not skip:
            self.stable_step_latency = add_histograms(self.stable_step_latency, sl)
            self.canary_step_latency = add_histograms(self.canary_step_latency, cl)
        for name, c in self.latency_checks.items():
            estimates = self._quantile_estimates(c)
            for q in c.quantiles:
                key = _latency_key(name, q)
                runner = self.latency_runners.get(key)
                if runner is None:
                    out.append(Verdict(key, Outcome.NO_DATA,
                                       f"p{_qtext(q)} latency: no stable latency histogram to "
                                       "choose a bucket bound from", details=estimates))
                    continue
                bound = self.latency_bounds[key]
                assert bound is not None
                xs = slow_count(cl, bound) if cl is not None else None
                ys = slow_count(sl, bound) if sl is not None else None
                if skip or xs is None or ys is None:
                    v = runner.verdict(runner.test.result())
                    if xs is None or ys is None:
                        keep = v.outcome in (Outcome.OK, Outcome.REGRESSION)
                        v = replace(v, outcome=v.outcome if keep else Outcome.NO_DATA,
                                    reason=f"{v.reason} (no histogram with bound {bound}s "
                                    "this tick)")
                else:
                    v = runner.update(samples.canary.requests, xs, samples.stable.requests, ys,
                                      seconds)
                details = {**v.details, "bound_seconds": bound, **estimates}
                out.append(replace(v, details=details))
            if name in self.distribution:
                key = f"{name}-distribution"
                dt = self.distribution[name]
                res = dt.result() if skip else dt.update(cl, sl)
                thr = 1 / self.alpha_of[key]
                reg = res.e_value >= thr
                out.append(Verdict(
                    key,
                    Outcome.REGRESSION if reg else Outcome.INCONCLUSIVE,
                    (f"canary latency distribution slower than stable, e={fmt_num(res.e_value)}"
                     f" >= {fmt_num(thr)}") if reg else
                    (f"latency distribution: no evidence the canary is slower "
                     f"(e={fmt_num(res.e_value)}, need {fmt_num(thr)})"),
                    evidence=res.e_value, evidence_kind="e-value", threshold=thr,
                    details={"rollback_only": True, "intervals": res.intervals},
                ))
        return out

    def _quantile_estimates(self, c: LatencyCheck) -> dict[str, Any]:
        est: dict[str, Any] = {"estimates_note": "interpolated from buckets; estimates"}
        for q in c.quantiles:
            for label, h in (("stable", self.stable_step_latency),
                             ("canary", self.canary_step_latency)):
                est[f"{label}_p{_qtext(q)}_seconds"] = (
                    interpolate_quantile(h, q) if h is not None else None
                )
        return est

    def _thresholds(self, samples: Samples) -> list[Verdict]:
        assert samples.canary is not None
        out = []
        for c in self.policy.spec.checks:
            if not isinstance(c, ThresholdCheck):
                continue
            name = check_name(c)
            ca = samples.canary
            value: float | None
            if c.metric == "error-rate":
                value = 100 * ca.errors / ca.requests if ca.requests else None
                unit, what = "%", "canary error rate"
            else:
                assert c.quantile is not None
                value = interpolate_quantile(ca.latency, c.quantile) if ca.latency else None
                unit, what = "s", f"canary p{_qtext(c.quantile)} latency (estimate)"
            res = self.thresholds[name].update(value)
            if value is None:
                outcome, reason = Outcome.NO_DATA, f"{what}: no canary data this tick"
            elif res.failed:
                outcome = Outcome.REGRESSION
                reason = (f"{what} {fmt_num(value)}{unit} > max {fmt_num(c.max)}{unit} for "
                          f"{res.consecutive_failures} consecutive ticks (failureLimit "
                          f"{c.failureLimit})")
            elif res.passed:
                outcome = Outcome.OK
                reason = f"{what} {fmt_num(value)}{unit} <= max {fmt_num(c.max)}{unit}"
            else:
                outcome = Outcome.INCONCLUSIVE
                reason = (f"{what} {fmt_num(value)}{unit} > max {fmt_num(c.max)}{unit} "
                          f"({res.consecutive_failures}/{c.failureLimit} failures)")
            out.append(Verdict(name, outcome, reason, estimate=value, threshold=c.max,
                               evidence=float(res.consecutive_failures), evidence_kind="failures"))
        return out

    def _classic(self, samples: Samples) -> list[Verdict]:
        out = []
        for name, col in self.classic.items():
            out.append(col.update(samples, name, self.alpha_of[name]))
        return out

    # ------------------------------------------------------------------ persistence

    def to_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "step_index": self.step_index,
            "step_started": self.step_started.isoformat() if self.step_started else None,
            "step_weight": self.step_weight,
            "step_canary_requests": self.step_canary_requests,
            "data_failures": self.data_failures,
            "baseline_set": self.baseline_set,
            "latency_bounds": self.latency_bounds,
            "error_runners": {k: r.to_state() for k, r in self.error_runners.items()},
            "latency_runners": {k: r.to_state() for k, r in self.latency_runners.items()},
            "distribution": {k: d.to_state() for k, d in self.distribution.items()},
            "thresholds": {k: t.to_state() for k, t in self.thresholds.items()},
            "classic": {k: c.to_state() for k, c in self.classic.items()},
            "srm": self.srm.to_state(),
            "stable_step_latency": self.stable_step_latency.to_json()
            if self.stable_step_latency else None,
            "canary_step_latency": self.canary_step_latency.to_json()
            if self.canary_step_latency else None,
        }

    @classmethod
    def from_state(cls, policy: Policy, state: dict[str, Any]) -> Judge:
        j = cls(policy)
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unknown judge state version {state.get('version')!r}")
        j.step_index = state["step_index"]
        j.step_started = datetime.fromisoformat(state["step_started"]) if state["step_started"] \
            else None
        j.step_weight = state["step_weight"]
        j.step_canary_requests = state["step_canary_requests"]
        j.data_failures = state["data_failures"]
        j.baseline_set = state["baseline_set"]
        for k, s in state["error_runners"].items():
            if k in j.error_runners:
                j.error_runners[k].load_state(s)
        for key, bound in state["latency_bounds"].items():
            name = key.rsplit("-p", 1)[0]
            c = j.latency_checks.get(name)
            if c is None or bound is None:
                continue
            j.latency_bounds[key] = bound
            runner = RatioCheck(key, f"{key.rsplit('-', 1)[1]} latency (share slower than "
                                  f"{fmt_num(bound)}s)", c.tolerance, j.alpha_of[key], j.n_steps)
            runner.load_state(state["latency_runners"][key])
            j.latency_runners[key] = runner
        for k, s in state["distribution"].items():
            j.distribution[k] = DistributionTest.from_state(s)
        for k, s in state["thresholds"].items():
            if k in j.thresholds:
                j.thresholds[k].load_state(s)
        for k, s in state["classic"].items():
            if k in j.classic:
                j.classic[k].load_state(s)
        j.srm = SampleRatioTest.from_state(state["srm"])
        for attr in ("stable_step_latency", "canary_step_latency"):
            h = state[attr]
            setattr(j, attr, Histogram.from_json(h) if h else None)
        return j


def _latency_key(name: str, q: float) -> str:
    return f"{name}-p{_qtext(q)}"


def _qtext(q: float) -> str:
    return f"{q * 100:g}"


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
    return Verdict("sample-ratio", Outcome.OK, f"{text} (consistent)",
                   estimate=srm.observed_share, evidence=srm.e_value, evidence_kind="e-value",
                   threshold=srm.threshold, gating=False, details={"mismatch": False})
