"""One sequential rate-ratio check (the error rate, or the share of requests slower than a
latency bound) as the judge runs it: the count test over the rollout's steps, the latches of
the step's promotion evidence, its verdict in words, and the power estimates for a hold.

Every sentence prints the policy's tolerance as written and the threshold the evidence was
compared with; the verdict's `threshold` field is that same number ("ratio 2.3 [1.6, 3.4] >
1 + tolerance 1.0 = 2, e=137 >= 40" has threshold 40).
"""

from __future__ import annotations

import math
from typing import Any

from analyzer.core.stats.counts import CountTest, CountTestResult
from analyzer.core.stats.power import time_to_detect, time_to_promote
from analyzer.core.stats.rates import rate_below
from analyzer.core.types import ConfidenceInterval, Outcome, Verdict
from analyzer.util.fmt import fmt_num, fmt_pct, fmt_tolerance


def _ci(res: CountTestResult) -> ConfidenceInterval | None:
    if math.isnan(res.ci_low):
        return None
    return ConfidenceInterval(res.ci_low, res.ci_high)


def _ci_text(res: CountTestResult) -> str:
    if math.isnan(res.ci_low):
        return ""
    return f" [{fmt_num(res.ci_low)}, {fmt_num(res.ci_high)}]"


class RatioCheck:
    """A sequential rate-ratio comparison (error rate, or slow requests above a bound).

    Rollback at E_regression >= 1/alpha (alpha: this check's share). Promotion evidence is
    latched within a step: once E_ok (or, on an intermediate step of the risk-budgeted ramp,
    E_severe) has reached 1/beta in the step, the check is OK until the step ends (the first
    crossing is the event Ville's inequality bounds, so latching costs nothing)."""

    def __init__(
        self,
        name: str,
        label: str,
        tolerance: float,
        alpha: float,
        beta: float,
        *,
        n_starts: int,
        severe_ratio: float | None = None,
        negligible_rate: float = 0.0,
        warmup_ticks: int = 0,
        evidence_per_step: bool = False,
    ) -> None:
        self.name = name
        self.label = label  # "error-rate" / "p99 latency (share slower than 0.25s)"
        self.tolerance = tolerance
        self.alpha = alpha
        self.beta = beta
        self.negligible_rate = negligible_rate
        self.test = CountTest(tolerance, alpha, n_starts=n_starts, severe_ratio=severe_ratio,
                              negligible_rate=negligible_rate, warmup_ticks=warmup_ticks,
                              evidence_per_step=evidence_per_step)
        self.step = [0.0, 0.0, 0.0, 0.0]  # canary events, stable events, canary n, stable n
        self.step_seconds = 0.0
        self.severe_only = False  # this step advances on severe exclusion (ramp)
        self.peak: float | None = None  # the latched promotion e-value of this step

    def set_baseline(self, n: list[float], y: list[float], canary_share: float) -> None:
        self.test.set_baseline(n, y, canary_share)

    def start_step(self, first: bool, severe_only: bool = False) -> None:
        if not first:
            self.test.start_step()
        self.step = [0.0, 0.0, 0.0, 0.0]
        self.step_seconds = 0.0
        self.severe_only = severe_only
        self.peak = None

    def update(self, n_c: int, x: int, n_s: int, y: int, seconds: float) -> Verdict:
        res = self.test.update(n_c, x, n_s, y)
        for i, v in enumerate((x, y, n_c, n_s)):
            self.step[i] += v
        self.step_seconds += seconds
        e = res.e_severe if self.severe_only else res.e_ok
        if self.peak is None and e >= 1 / self.beta:
            self.peak = e
        return self.verdict(res)

    # ------------------------------------------------------------------ words

    def _step_text(self, res: CountTestResult) -> str:
        """The current step's own ratio, when it is not the whole rollout's. The regression
        evidence mixes e-processes started at each step (a regression may begin at a higher
        weight), while the estimate and interval cover every step; without this, "ratio 1.2
        [1, 1.4] > 1 + tolerance 0.25 = 1.25" would read as a contradiction."""
        x, y, n_c, n_s = self.step
        if min(y, n_c, n_s) <= 0 or n_c >= res.canary_exposure:
            return ""
        return (f" (this step alone: ratio {fmt_num((x / n_c) / (y / n_s))}, {int(x)} in "
                f"{int(n_c)} canary vs {int(y)} in {int(n_s)} stable)")

    def _tolerance_text(self) -> str:
        return fmt_tolerance(self.tolerance)

    def verdict(self, res: CountTestResult) -> Verdict:
        thr_reg, thr_ok = 1 / self.alpha, 1 / self.beta
        sizes = {
            "canary_events": int(res.canary_events),
            "stable_events": int(res.stable_events),
            "canary_requests": int(res.canary_exposure),
            "stable_requests": int(res.stable_exposure),
        }
        est = res.estimate if math.isfinite(res.estimate) else None
        if est is not None and res.canary_events == 0:
            est = 0.0  # the maximum-likelihood ratio; the grid's lowest point would mislead
        est_text = f"{self.label} ratio {fmt_num(est)}{_ci_text(res)}"
        details: dict[str, Any] = {
            "e_regression": res.e_regression,
            "e_noninferiority": res.e_noninferiority,
            "e_ok": res.e_ok,
            "e_severe": res.e_severe,
            "threshold_regression": thr_reg,
            "threshold_promotion": thr_ok,
            "tolerance": self.tolerance,
            "tolerance_ratio": 1 + self.tolerance,
            "alpha": self.alpha,
            "beta": self.beta,
            "tempering": res.tempering,
            "burst_tau2": res.burst_tau2,
        }
        if self.severe_only:
            details["severe_ratio"] = self.test.r_sev
        if self.negligible_rate > 0:
            details["e_negligible_rate"] = res.e_rate
            details["negligible_rate_weight"] = 1 - res.ratio_weight
        common: dict[str, Any] = dict(check=self.name, estimate=est,
                                      confidence_interval=_ci(res), sample_sizes=sizes,
                                      details=details, evidence_kind="e-value")
        if res.e_regression >= thr_reg:
            return Verdict(
                outcome=Outcome.REGRESSION,
                reason=f"{est_text}{self._step_text(res)} > {self._tolerance_text()}, "
                f"e={fmt_num(res.e_regression)} >= {fmt_num(thr_reg)}",
                evidence=res.e_regression, threshold=thr_reg, **common,
            )
        if self.peak is not None:
            return Verdict(outcome=Outcome.OK, reason=self._ok_text(res, est_text),
                           evidence=self.peak, threshold=thr_ok, **common)
        if res.canary_events + res.stable_events == 0 and res.canary_exposure == 0:
            return Verdict(outcome=Outcome.NO_DATA, reason=f"{self.label}: nothing compared yet",
                           evidence=res.e_regression, threshold=thr_reg, **common)
        promo = "severe-regression exclusion" if self.severe_only else "non-inferiority"
        e_promo = res.e_severe if self.severe_only else res.e_ok
        return Verdict(
            outcome=Outcome.INCONCLUSIVE,
            reason=f"{est_text}: not decided yet (regression e={fmt_num(res.e_regression)}, "
            f"rollback at {fmt_num(thr_reg)}; {promo} e={fmt_num(e_promo)}, promotion at "
            f"{fmt_num(thr_ok)})",
            evidence=res.e_regression, threshold=thr_reg, **common,
        )

    def _ok_text(self, res: CountTestResult, est_text: str) -> str:
        assert self.peak is not None
        thr = 1 / self.beta
        now = res.e_severe if self.severe_only else res.e_ok
        later = "" if now >= thr else f" earlier in this step (now {fmt_num(now)})"
        evidence = f"e={fmt_num(self.peak)} >= {fmt_num(thr)}{later}"
        if self.severe_only:
            return (f"{est_text}: a {fmt_num(self.test.r_sev)}x regression is excluded "
                    f"(risk-budgeted ramp), {evidence}")
        rate_share = (1 - res.ratio_weight) * res.e_rate
        if self.negligible_rate > 0 and rate_share > res.ratio_weight * res.e_noninferiority:
            rb = rate_below(self.negligible_rate, int(res.canary_events),
                            int(res.canary_exposure), self.alpha)
            return (f"canary {self.label} < {fmt_pct(rb.upper_bound)} ({int(res.canary_events)} "
                    f"in {int(res.canary_exposure)} requests), below negligible "
                    f"{fmt_pct(self.negligible_rate)}, {evidence}")
        return f"{est_text} within {self._tolerance_text()} (non-inferior), {evidence}"

    # ------------------------------------------------------------------ power

    def power(self) -> dict[str, float] | None:
        """Wald's bounds at this step's traffic: time to detect a 2x regression starting now,
        and time until a healthy canary's promotion evidence reaches 1/beta."""
        _, _, c_n, s_n = self.step
        if self.step_seconds <= 0:
            return None
        res = self.test.result()
        base = (res.stable_events + 1) / (res.stable_exposure + 1)
        c_rps, s_rps = c_n / self.step_seconds, s_n / self.step_seconds
        est = time_to_detect(canary_rps=c_rps, stable_rps=s_rps, base_rate=base,
                             r0=self.test.r0, alpha=self.alpha, beta=self.beta)
        if est is None:
            return None
        out = {
            "ratio": est.ratio,
            "events_needed": est.events_needed,
            "more_canary_requests": est.more_canary_requests,
            "seconds": est.seconds,
        }
        if self.peak is None and not self.severe_only:
            log_e = math.log(max(res.e_ok, 1e-300))
            promote = time_to_promote(canary_rps=c_rps, stable_rps=s_rps, base_rate=base,
                                      r0=self.test.r0, beta=self.beta,
                                      log_evidence_so_far=log_e)
            if promote is not None:
                out["promote_seconds"] = promote
        return out

    # ------------------------------------------------------------------ persistence

    def to_state(self) -> dict[str, Any]:
        return {"test": self.test.to_state(), "step": self.step,
                "step_seconds": self.step_seconds, "severe_only": self.severe_only,
                "peak": self.peak}

    def load_state(self, state: dict[str, Any]) -> None:
        self.test = CountTest.from_state(state["test"])
        self.step = list(state["step"])
        self.step_seconds = state["step_seconds"]
        self.severe_only = state["severe_only"]
        self.peak = state["peak"]
