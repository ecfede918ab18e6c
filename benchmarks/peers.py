"""Peer judges for the decision-quality benchmark, over the same Samples as our Judge.

Each implements the harness's small judge interface (`set_baseline`, `start_step`,
`evaluate(samples, now) -> Decision`) so `analyzer.offline.montecarlo.simulate_rollouts` can
drive it through the same policy steps, min/max step durations and traffic as ours. They are
models of how the peers decide, written from their documentation and source, not the peers
themselves:

- `KayentaJudge`: Kayenta's Mann-Whitney classifier (confidence 0.98, tolerance 0.25, effect
  size threshold 1.0) per metric on per-minute values (canary vs stable error rate and p99
  latency), scored as the share of metrics classified Pass (pass 95, marginal 75), re-run at
  every interval over all minutes since the rollout began (a standalone canary analysis
  spanning the rollout, no lookback), failing fast when the score drops below marginal. It
  classifies once each version has `min_points` complete minutes (3): with fewer, Kayenta's
  Mann-Whitney (like R's) falls back to the widest interval and flags any difference.
- `FlaggerJudge`: Flagger's built-in checks on the canary alone, each interval: request
  success rate >= 99 % and p99 latency (histogram_quantile over the interval) <= 500 ms; a
  failed check (or no canary traffic) increments the failed-check count, which is not reset;
  rollback at 5 failed checks.
- `RepeatedFisherJudge`: one-sided Fisher exact tests (canary worse) on the cumulative error
  counts and on the cumulative counts of requests slower than the stable baseline's p99
  bucket bound, repeated every interval at alpha split evenly over the two (naive peeking).
- `OracleJudge`: Wald's SPRT per check (error rate; share slower than the baseline p99 bound)
  on the conditional-binomial likelihood our judge uses, knowing the true ratio: it tests the
  truth against the tolerance boundary r0 = 1 + tolerance, at the same error rates per check
  as ours: alpha split over the checks like ours (false rollbacks), the policy's
  `decision.beta` per check (false promotions). It restarts when the truth changes with the
  weight, and assumes Poisson counts (it knows nothing of bursts). Its expected sample size is
  Wald's lower bound: no judge with these error rates is faster on average.

Every peer promotes only once the step has lasted the policy's minStepDuration and its own
criterion passes, and (except Flagger, which has no such limit) pauses at maxStepDuration, so
the schedule is the same for all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
from scipy.stats import hypergeom

from analyzer.core.stats.classic import kayenta_classify
from analyzer.core.stats.latency import choose_bound, interpolate_quantile
from analyzer.core.types import Action, Decision, Histogram, Samples, VersionSample
from analyzer.offline.montecarlo import Scenario
from analyzer.policy import ErrorRateCheck, LatencyCheck, Policy


class _StepClock:
    """Step timing shared by the peers: min and max step duration from the policy."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        a = policy.spec.analysis
        self.min_step = a.minStepDuration.total_seconds()
        self.max_step = a.maxStepDuration.total_seconds()
        self.alpha = policy.spec.decision.alpha
        self.rollout_start: datetime | None = None
        self.step_start: datetime | None = None
        self.weight = 0.0
        self.baseline: Histogram | None = None

    def set_baseline(self, stable_latency: Histogram | None,
                     stable_series: Sequence[VersionSample] | None = None) -> None:
        self.baseline = stable_latency

    def start_step(self, now: datetime, canary_weight: float) -> None:
        if self.rollout_start is None:
            self.rollout_start = now
        self.step_start = now
        self.weight = canary_weight

    def _age(self, now: datetime) -> float:
        return (now - self.step_start).total_seconds() if self.step_start else 0.0

    def _finish(self, ok: bool, now: datetime, why: str, *, pause_at_max: bool = True) -> Decision:
        age = self._age(now)
        if ok and age >= self.min_step:
            return Decision(Action.PROMOTE, f"promote: {why}")
        if pause_at_max and age >= self.max_step:
            return Decision(Action.PAUSE, f"pause: inconclusive at maxStepDuration: {why}")
        return Decision(Action.HOLD, f"hold: {why}")


# --------------------------------------------------------------------------- Kayenta


class KayentaJudge(_StepClock):
    def __init__(
        self,
        policy: Policy,
        *,
        confidence: float = 0.98,
        tolerance: float = 0.25,
        pass_score: float = 95.0,
        marginal_score: float = 75.0,
        min_points: int = 3,
    ) -> None:
        super().__init__(policy)
        self.confidence = confidence
        self.tolerance = tolerance
        self.pass_score = pass_score
        self.marginal_score = marginal_score
        self.min_points = min_points
        # per minute since the rollout start: [requests, errors] and latency bucket counts
        self.minutes: dict[int, dict[str, Any]] = {}

    def _add(self, minute: int, samples: Samples) -> None:
        m = self.minutes.setdefault(minute, {"s": [0, 0, None], "c": [0, 0, None], "ticks": 0})
        m["ticks"] += 1
        for key, v in (("s", samples.stable), ("c", samples.canary)):
            if v is None:
                continue
            m[key][0] += v.requests
            m[key][1] += v.errors
            if v.latency is not None:
                counts = np.asarray(v.latency.counts)
                m[key][2] = counts if m[key][2] is None else m[key][2] + counts
                m["le"] = v.latency.le

    def _series(self, complete: list[int]) -> dict[str, tuple[list[float], list[float]]]:
        err_s, err_c, p99_s, p99_c = [], [], [], []
        for k in complete:
            m = self.minutes[k]
            for (req, errs, hist), err, p99 in ((m["s"], err_s, p99_s), (m["c"], err_c, p99_c)):
                if req > 0:  # Kayenta's NaN strategy "remove": a minute without traffic drops
                    err.append(errs / req)
                if hist is not None and hist[-1] > 0:
                    q = interpolate_quantile(Histogram(m["le"], tuple(int(x) for x in hist)), 0.99)
                    if q is not None:
                        p99.append(q)
        return {"error-rate": (err_c, err_s), "latency-p99": (p99_c, p99_s)}

    def evaluate(self, samples: Samples, now: datetime) -> Decision:
        if self.rollout_start is None:
            self.start_step(samples.t0, samples.canary_weight or 0.0)
        assert self.rollout_start is not None
        if not samples.ok or samples.canary is None or samples.stable is None:
            return self._finish(False, now, "no data")
        minute = int((samples.t0 - self.rollout_start).total_seconds() // 60)
        self._add(minute, samples)
        current = int((now - self.rollout_start).total_seconds() // 60)
        complete = sorted(k for k in self.minutes if k < current)
        series = self._series(complete)
        passes, counted, reasons = 0, 0, []
        for name, (canary, stable) in series.items():
            if min(len(canary), len(stable)) < self.min_points:
                continue  # NoData: left out of the score
            c = kayenta_classify(canary, stable, tolerance=self.tolerance,
                                 confidence=self.confidence)
            counted += 1
            if c.classification == "Pass":
                passes += 1
            else:
                reasons.append(f"{name} {c.classification}")
        if counted == 0:
            return self._finish(False, now, "not enough per-minute data yet")
        score = 100.0 * passes / counted
        why = f"Kayenta score {score:.0f} ({', '.join(reasons) or 'all metrics Pass'})"
        if score < self.marginal_score:
            return Decision(Action.ROLLBACK, f"rollback: {why} < marginal {self.marginal_score:g}")
        return self._finish(score >= self.pass_score, now, why)


# --------------------------------------------------------------------------- Flagger


class FlaggerJudge(_StepClock):
    def __init__(
        self,
        policy: Policy,
        *,
        min_success_rate: float = 99.0,
        max_p99_seconds: float = 0.5,
        threshold: int = 5,
    ) -> None:
        super().__init__(policy)
        self.min_success_rate = min_success_rate
        self.max_p99 = max_p99_seconds
        self.threshold = threshold
        self.failed_checks = 0

    def evaluate(self, samples: Samples, now: datetime) -> Decision:
        if self.step_start is None:
            self.start_step(samples.t0, samples.canary_weight or 0.0)
        ca = samples.canary
        failures = []
        if not samples.ok or ca is None or ca.requests == 0:
            failures.append("no canary metrics")  # Flagger counts "no values found" as failed
        else:
            sr = 100.0 * (1 - ca.errors / ca.requests)
            if sr < self.min_success_rate:
                failures.append(f"success rate {sr:.2f}% < {self.min_success_rate:g}%")
            p99 = interpolate_quantile(ca.latency, 0.99) if ca.latency is not None else None
            if p99 is None:
                failures.append("no latency data")
            elif p99 > self.max_p99:
                failures.append(f"p99 {p99 * 1000:.0f}ms > {self.max_p99 * 1000:.0f}ms")
        if failures:
            self.failed_checks += 1
            why = f"{'; '.join(failures)} (failed checks {self.failed_checks}/{self.threshold})"
            if self.failed_checks >= self.threshold:
                return Decision(Action.ROLLBACK, f"rollback: {why}")
            return Decision(Action.HOLD, f"hold: {why}")
        return self._finish(True, now, "checks passed", pause_at_max=False)


# --------------------------------------------------------------------------- repeated Fisher


def fisher_greater(x: int, n_c: int, y: int, n_s: int) -> float:
    """One-sided Fisher exact p-value that the canary's event share x/n_c exceeds y/n_s."""
    total, events = n_c + n_s, x + y
    if n_c == 0 or n_s == 0 or events == 0:
        return 1.0
    return float(hypergeom.sf(x - 1, total, events, n_c))


class RepeatedFisherJudge(_StepClock):
    def __init__(self, policy: Policy) -> None:
        super().__init__(policy)
        self.bound: float | None = None
        self.totals = np.zeros(6, dtype=np.int64)  # n_c, x_err, n_s, y_err, x_slow, y_slow

    def set_baseline(self, stable_latency: Histogram | None,
                     stable_series: Sequence[VersionSample] | None = None) -> None:
        super().set_baseline(stable_latency, stable_series)
        self.bound = choose_bound(stable_latency, 0.99) if stable_latency is not None else None

    def evaluate(self, samples: Samples, now: datetime) -> Decision:
        if self.step_start is None:
            self.start_step(samples.t0, samples.canary_weight or 0.0)
        st, ca = samples.stable, samples.canary
        if not samples.ok or st is None or ca is None:
            return self._finish(False, now, "no data")
        xs = ys = 0
        if self.bound is not None and st.latency is not None and ca.latency is not None:
            xs, ys = ca.latency.count_above(self.bound), st.latency.count_above(self.bound)
        self.totals += np.array([ca.requests, ca.errors, st.requests, st.errors, xs, ys])
        n_c, x, n_s, y, x2, y2 = (int(v) for v in self.totals)
        level = self.alpha / (2 if self.bound is not None else 1)
        p_err = fisher_greater(x, n_c, y, n_s)
        p_lat = fisher_greater(x2, n_c, y2, n_s) if self.bound is not None else 1.0
        why = f"Fisher p error-rate {p_err:.3g}, p slow {p_lat:.3g} (level {level:g} each)"
        if min(p_err, p_lat) < level:
            return Decision(Action.ROLLBACK, f"rollback: {why}")
        return self._finish(True, now, why)


# --------------------------------------------------------------------------- the oracle


class _Sprt:
    """Wald's SPRT of r_good vs r_bad on the conditional binomial of one count check."""

    def __init__(self, r_true: float, r0: float, alpha: float, beta: float) -> None:
        self.r_true = r_true
        if r_true > r0:
            self.good, self.bad = r0, r_true
        else:
            self.good, self.bad = r_true, r0
        self.upper = math.log((1 - beta) / alpha)  # accept "bad": rollback
        self.lower = math.log(beta / (1 - alpha))  # accept "good"
        self.llr = 0.0
        self.verdict: str | None = None

    def update(self, n_c: int, x: int, n_s: int, y: int) -> None:
        if self.verdict is not None or n_c <= 0 or n_s <= 0 or x + y == 0:
            return
        if self.good == self.bad:
            return  # the truth sits on the boundary: nothing tells the two apart
        p1 = n_c * self.bad / (n_c * self.bad + n_s)
        p0 = n_c * self.good / (n_c * self.good + n_s)
        self.llr += x * math.log(p1 / p0) + y * math.log((1 - p1) / (1 - p0))
        if self.llr >= self.upper:
            self.verdict = "bad"
        elif self.llr <= self.lower:
            self.verdict = "good"


class OracleJudge(_StepClock):
    def __init__(self, policy: Policy, *, scenario: Scenario, beta: float | None = None) -> None:
        super().__init__(policy)
        self.scenario = scenario
        self.beta = policy.spec.decision.beta if beta is None else beta
        self.tolerance = {"error-rate": None, "latency": None}
        for c in policy.spec.checks:
            if isinstance(c, ErrorRateCheck):
                self.tolerance["error-rate"] = c.tolerance
            elif isinstance(c, LatencyCheck):
                self.tolerance["latency"] = c.tolerance
        self.bound: float | None = None
        self.sprts: dict[str, _Sprt] = {}

    def set_baseline(self, stable_latency: Histogram | None,
                     stable_series: Sequence[VersionSample] | None = None) -> None:
        super().set_baseline(stable_latency, stable_series)
        self.bound = choose_bound(stable_latency, 0.99) if stable_latency is not None else None

    def _checks(self) -> list[str]:
        return [k for k, tol in self.tolerance.items()
                if tol is not None and (k != "latency" or self.bound is not None)]

    def start_step(self, now: datetime, canary_weight: float) -> None:
        super().start_step(now, canary_weight)
        truth = self.scenario.true_ratios(canary_weight, self.bound)
        checks = self._checks()
        alpha = self.alpha / max(len(checks), 1)
        for k in checks:
            tol = self.tolerance[k]
            assert tol is not None
            cur = self.sprts.get(k)
            if cur is None or not math.isclose(cur.r_true, truth[k]):
                self.sprts[k] = _Sprt(truth[k], 1 + tol, alpha, self.beta)

    def evaluate(self, samples: Samples, now: datetime) -> Decision:
        if self.step_start is None:
            self.start_step(samples.t0, samples.canary_weight or 0.0)
        st, ca = samples.stable, samples.canary
        if not samples.ok or st is None or ca is None:
            return self._finish(False, now, "no data")
        for k, s in self.sprts.items():
            if k == "error-rate":
                s.update(ca.requests, ca.errors, st.requests, st.errors)
            elif self.bound is not None and ca.latency is not None and st.latency is not None:
                s.update(ca.requests, ca.latency.count_above(self.bound),
                         st.requests, st.latency.count_above(self.bound))
        bad = [k for k, s in self.sprts.items() if s.verdict == "bad"]
        if bad:
            return Decision(Action.ROLLBACK, f"rollback: SPRT accepts regression on {bad}")
        good = all(s.verdict == "good" for s in self.sprts.values())
        state = ", ".join(f"{k} llr {s.llr:.2f}" for k, s in self.sprts.items())
        return self._finish(good, now, f"SPRT {state}")


PEERS = {
    "kayenta": KayentaJudge,
    "flagger": FlaggerJudge,
    "fisher": RepeatedFisherJudge,
    "oracle": OracleJudge,
}
