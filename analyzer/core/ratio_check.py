"""One sequential rate-ratio check (the error rate, or the share of requests slower than a
latency bound) as the judge runs it: the count test over the rollout's steps, its verdict in
words, and the power estimate for a hold.
"""

from __future__ import annotations

import math
from typing import Any

from analyzer.core.stats.counts import CountTest, CountTestResult, rate_below
from analyzer.core.stats.power import time_to_detect
from analyzer.core.types import (
    ConfidenceInterval,
    Outcome,
    Verdict,
)
from analyzer.util.fmt import fmt_num, fmt_pct

# Regression evidence: half the prior weight on the e-process started with the rollout, the
# other half spread over the e-processes started at later steps (docs/statistics.md).
FIRST_START_WEIGHT = 0.5


def _ci(res: CountTestResult) -> ConfidenceInterval | None:
    if math.isnan(res.ci_low):
        return None
    return ConfidenceInterval(res.ci_low, res.ci_high)


def _ci_text(res: CountTestResult) -> str:
    if math.isnan(res.ci_low):
        return ""
    return f" [{fmt_num(res.ci_low)}, {fmt_num(res.ci_high)}]"


def start_weights(n_steps: int) -> list[float]:
    if n_steps <= 1:
        return [1.0]
    rest = (1 - FIRST_START_WEIGHT) / (n_steps - 1)
    return [FIRST_START_WEIGHT] + [rest] * (n_steps - 1)


# --------------------------------------------------------------------------- check runners


class RatioCheck:
    """A sequential rate-ratio comparison (error rate, or slow requests above a bound)."""

    def __init__(
        self,
        name: str,
        label: str,
        tolerance: float,
        alpha: float,
        n_steps: int,
        negligible_rate: float = 0.0,
    ) -> None:
        self.name = name
        self.label = label  # "error-rate" / "p99 latency (share slower than 0.25s)"
        self.tolerance = tolerance
        self.alpha = alpha
        self.negligible_rate = negligible_rate
        self.test = CountTest(tolerance, alpha, start_weights=start_weights(n_steps))
        self.step = [0.0, 0.0, 0.0, 0.0]  # canary events, stable events, canary n, stable n
        self.step_seconds = 0.0

    def start_step(self, first: bool) -> None:
        if not first:
            self.test.new_start()
        self.step = [0.0, 0.0, 0.0, 0.0]
        self.step_seconds = 0.0

    def update(self, n_c: int, x: int, n_s: int, y: int, seconds: float) -> Verdict:
        res = self.test.update(n_c, x, n_s, y)
        for i, v in enumerate((x, y, n_c, n_s)):
            self.step[i] += v
        self.step_seconds += seconds
        return self.verdict(res)

    def _step_text(self, res: CountTestResult) -> str:
        """The current step's own ratio, when it is not the whole rollout's. The regression
        evidence mixes e-processes started at each step (a regression may begin at a higher
        weight), while the estimate and interval cover every step; without this, "ratio 1.2
        [1, 1.4] exceeds tolerance 1.25" would read as a contradiction."""
        x, y, n_c, n_s = self.step
        if min(y, n_c, n_s) <= 0 or n_c >= res.canary_exposure:
            return ""
        return (f" (this step alone: ratio {fmt_num((x / n_c) / (y / n_s))}, {int(x)} in "
                f"{int(n_c)} canary vs {int(y)} in {int(n_s)} stable)")

    def verdict(self, res: CountTestResult) -> Verdict:
        thr = 1 / self.alpha
        r0 = self.test.r_up
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
            "tolerance_ratio": r0,
            "alpha": self.alpha,
            "dispersion": res.dispersion,
        }
        # The zero-error path: with (nearly) no events the ratio cannot be bounded, but an
        # anytime-valid upper bound on the canary's absolute rate can fall below a negligible
        # rate. Averaging the two e-values keeps a valid e-value for "canary is fine".
        e_ok = res.e_noninferiority
        rate_text = ""
        if self.negligible_rate > 0:
            rb = rate_below(
                self.negligible_rate, int(res.canary_events), int(res.canary_exposure), self.alpha
            )
            e_ok = (res.e_noninferiority + rb.e_value) / 2
            details["e_negligible_rate"] = rb.e_value
            details["canary_rate_upper_bound"] = rb.upper_bound
            rate_text = (
                f"canary {self.label} < {fmt_pct(rb.upper_bound)} ({int(res.canary_events)} in "
                f"{int(res.canary_exposure)} requests), below negligible "
                f"{fmt_pct(self.negligible_rate)}"
            )
            if rb.e_value >= res.e_noninferiority:
                details["noninferior_by"] = "negligible-rate"
        details["e_ok"] = e_ok
        common = dict(
            check=self.name,
            estimate=est,
            confidence_interval=_ci(res),
            threshold=thr,
            sample_sizes=sizes,
            details=details,
        )
        if res.e_regression >= thr:
            return Verdict(
                outcome=Outcome.REGRESSION,
                reason=f"{est_text}{self._step_text(res)} exceeds tolerance {fmt_num(r0)}, "
                f"e={fmt_num(res.e_regression)} >= {fmt_num(thr)}",
                evidence=res.e_regression,
                evidence_kind="e-value",
                **common,
            )
        ok_thr = thr * (2 if self.negligible_rate > 0 else 1)
        if e_ok >= ok_thr:
            if details.get("noninferior_by") == "negligible-rate":
                reason = f"{rate_text}, e={fmt_num(e_ok)} >= {fmt_num(ok_thr)}"
            else:
                reason = (
                    f"{est_text} within tolerance {fmt_num(r0)} (non-inferior), "
                    f"e={fmt_num(e_ok)} >= {fmt_num(ok_thr)}"
                )
            return Verdict(
                outcome=Outcome.OK, reason=reason, evidence=e_ok, evidence_kind="e-value", **common
            )
        if res.canary_events + res.stable_events == 0 and res.canary_exposure == 0:
            return Verdict(
                outcome=Outcome.NO_DATA,
                reason=f"{self.label}: nothing compared yet",
                evidence=res.e_regression,
                evidence_kind="e-value",
                **common,
            )
        return Verdict(
            outcome=Outcome.INCONCLUSIVE,
            reason=f"{est_text}: not decided yet (regression e={fmt_num(res.e_regression)}, "
            f"non-inferiority e={fmt_num(e_ok)}, need {fmt_num(thr)})",
            evidence=res.e_regression,
            evidence_kind="e-value",
            **common,
        )

    def power(self) -> dict[str, float] | None:
        _, _, c_n, s_n = self.step
        if self.step_seconds <= 0:
            return None
        res = self.test.result()
        base = (res.stable_events + 1) / (res.stable_exposure + 1)
        est = time_to_detect(
            canary_rps=c_n / self.step_seconds,
            stable_rps=s_n / self.step_seconds,
            base_rate=base,
            r0=self.test.r_up,
            alpha=self.alpha,
        )
        if est is None:
            return None
        return {
            "ratio": est.ratio,
            "events_needed": est.events_needed,
            "more_canary_requests": est.more_canary_requests,
            "seconds": est.seconds,
        }

    def to_state(self) -> dict[str, Any]:
        return {"test": self.test.to_state(), "step": self.step, "step_seconds": self.step_seconds}

    def load_state(self, state: dict[str, Any]) -> None:
        self.test = CountTest.from_state(state["test"])
        self.step = list(state["step"])
        self.step_seconds = state["step_seconds"]
