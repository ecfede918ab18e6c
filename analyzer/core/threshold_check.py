"""The policy's absolute threshold checks as the judge runs them: per tick the canary's and the
stable's value (error rate in percent, or an interpolated latency quantile), the tracker's
outcome (stats/thresholds.py: a breach stable shares holds), and the verdict in words.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from analyzer.core.latency_check import quantile_text
from analyzer.core.stats.latency import interpolate_quantile
from analyzer.core.stats.thresholds import ThresholdOutcome, ThresholdResult, ThresholdTracker
from analyzer.core.types import Outcome, Samples, Verdict
from analyzer.policy.checks import ThresholdCheck
from analyzer.util.fmt import fmt_num


class ThresholdChecks:
    """Every threshold check of a policy, by name."""

    def __init__(self, checks: Mapping[str, ThresholdCheck]) -> None:
        self.checks = dict(checks)
        self.trackers = {name: ThresholdTracker(c.max, c.failureLimit, c.whenStableBreaches)
                         for name, c in self.checks.items()}

    def evaluate(self, samples: Samples) -> list[Verdict]:
        assert samples.canary is not None and samples.stable is not None
        out = []
        for name, c in self.checks.items():
            values: list[float | None] = []
            for v in (samples.canary, samples.stable):
                if c.metric == "error-rate":
                    values.append(100 * v.errors / v.requests if v.requests else None)
                else:
                    assert c.quantile is not None
                    values.append(interpolate_quantile(v.latency, c.quantile)
                                  if v.latency else None)
            res = self.trackers[name].update(values[0], values[1])
            out.append(threshold_verdict(name, c, res))
        return out

    def to_state(self) -> dict[str, Any]:
        return {k: t.to_state() for k, t in self.trackers.items()}

    def load_state(self, state: Mapping[str, Any]) -> None:
        for k, s in state.items():
            if k in self.trackers:
                self.trackers[k].load_state(s)


def threshold_verdict(name: str, c: ThresholdCheck, res: ThresholdResult) -> Verdict:
    if c.metric == "error-rate":
        unit, what = "%", "canary error rate"
    else:
        unit, what = "s", f"canary p{quantile_text(c.quantile or 0)} latency (estimate)"
    value, limit = res.value, f"max {fmt_num(c.max)}{unit}"
    stable = "n/a" if res.stable_value is None else f"{fmt_num(res.stable_value)}{unit}"
    failures = f"{res.consecutive_failures}/{c.failureLimit} failures"
    if res.outcome is ThresholdOutcome.NO_DATA or value is None:
        outcome, reason = Outcome.NO_DATA, f"{what}: no canary data this tick"
    elif res.failed:
        outcome = Outcome.REGRESSION
        reason = (f"{what} {fmt_num(value)}{unit} > {limit} for {res.consecutive_failures} "
                  f"consecutive ticks (failureLimit {c.failureLimit}; stable {stable})")
    elif res.outcome is ThresholdOutcome.PASS:
        outcome, reason = Outcome.OK, f"{what} {fmt_num(value)}{unit} <= {limit}"
    elif res.outcome is ThresholdOutcome.SHARED_BREACH:
        outcome = Outcome.INCONCLUSIVE
        reason = (f"{what} {fmt_num(value)}{unit} > {limit}, but stable breaches the SLO too "
                  f"({stable}): not the canary's fault, holding ({failures})")
    else:
        outcome = Outcome.INCONCLUSIVE
        reason = f"{what} {fmt_num(value)}{unit} > {limit} ({failures}; stable {stable})"
    return Verdict(name, outcome, reason, estimate=value, threshold=c.max,
                   evidence=float(res.consecutive_failures), evidence_kind="failures",
                   details={"stable_value": res.stable_value, "outcome": str(res.outcome),
                            "when_stable_breaches": c.whenStableBreaches})
