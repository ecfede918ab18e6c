"""The policy's latency checks as the judge runs them: per watched quantile a tail count test
("requests slower than a bucket bound", a `RatioCheck`) at a bound chosen once on the stable
baseline, the optional whole-distribution test, and the per-version quantile estimates of the
current step (reported, labelled as estimates).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from analyzer.core.ratio_check import RatioCheck
from analyzer.core.stats.distribution import DistributionTest
from analyzer.core.stats.latency import (
    add_histograms,
    bound_for_slo,
    choose_bound,
    interpolate_quantile,
    slow_count,
)
from analyzer.core.types import Histogram, Outcome, Samples, Verdict, VersionSample
from analyzer.policy.checks import LatencyCheck
from analyzer.util.fmt import fmt_num

#: Builds a tail test: (key, label, tolerance, alpha_j) -> RatioCheck (the judge's settings).
RunnerFactory = Callable[[str, str, float, float], RatioCheck]


def latency_key(name: str, q: float) -> str:
    return f"{name}-p{quantile_text(q)}"


def quantile_text(q: float) -> str:
    return f"{q * 100:g}"


def distribution_key(name: str) -> str:
    return f"{name}-distribution"


class LatencyChecks:
    """Every latency check of a policy (see the module docstring)."""

    def __init__(self, checks: Mapping[str, LatencyCheck], alpha_of: Mapping[str, float],
                 make_runner: RunnerFactory) -> None:
        self.checks = dict(checks)
        self.alpha_of = alpha_of
        self.make_runner = make_runner
        self.bounds: dict[str, float | None] = {}
        self.runners: dict[str, RatioCheck] = {}
        self.distribution: dict[str, DistributionTest] = {
            name: DistributionTest() for name, c in self.checks.items() if c.distribution}
        self.stable_step: Histogram | None = None
        self.canary_step: Histogram | None = None
        self._fed: set[str] = set()  # tests that got the baseline series already

    def keys(self) -> dict[str, tuple[LatencyCheck, float]]:
        return {latency_key(name, q): (c, q)
                for name, c in self.checks.items() for q in c.quantiles}

    # ------------------------------------------------------------------ baseline, steps

    def set_baseline(self, stable_latency: Histogram | None,
                     series: Sequence[VersionSample] = (), canary_share: float = 0.1) -> None:
        """Pick each tail test's bound on the stable baseline histogram (bounds never change
        once chosen) and give every test the baseline's per-interval series."""
        for key, (c, q) in self.keys().items():
            if key not in self.runners and stable_latency is not None:
                if c.sloBound is not None:
                    picked = bound_for_slo(stable_latency.le, c.sloBound.total_seconds())
                else:
                    picked = choose_bound(stable_latency, q)
                if picked is not None:
                    self.add_runner(key, c, q, picked)
            bound = self.bounds.get(key)
            if key in self.runners and bound is not None and series and key not in self._fed:
                self._fed.add(key)
                self._feed(self.runners[key], bound, series, canary_share)
        hists = [s.latency for s in series if s.latency is not None]
        for name, dt in self.distribution.items():
            if hists and name not in self._fed:
                self._fed.add(name)
                dt.set_baseline(hists)

    @staticmethod
    def _feed(runner: RatioCheck, bound: float, series: Sequence[VersionSample],
              canary_share: float) -> None:
        n, y = [], []
        for s in series:
            slow = slow_count(s.latency, bound) if s.latency is not None else None
            if slow is not None:
                n.append(float(s.requests))
                y.append(float(slow))
        if n:
            runner.set_baseline(n, y, canary_share)

    def add_runner(self, key: str, c: LatencyCheck, q: float, bound: float) -> RatioCheck:
        self.bounds[key] = bound
        runner = self.make_runner(
            key, f"p{quantile_text(q)} latency (share slower than {fmt_num(bound)}s)",
            c.tolerance, self.alpha_of[key])
        self.runners[key] = runner
        return runner

    def start_step(self) -> None:
        self.stable_step = None
        self.canary_step = None

    # ------------------------------------------------------------------ per tick

    def evaluate(self, samples: Samples, seconds: float, *, skip: bool,
                 not_counted: str | None) -> list[Verdict]:
        """Verdicts of every latency test for this window. `skip`: the window chose the bounds
        and is left out of the tests; `not_counted`: why the window is not fed to the tests
        (overlapping data), said in each reason."""
        assert samples.stable is not None and samples.canary is not None
        out: list[Verdict] = []
        sl, cl = samples.stable.latency, samples.canary.latency
        frozen = skip or not_counted is not None
        if not skip:
            self.stable_step = add_histograms(self.stable_step, sl)
            self.canary_step = add_histograms(self.canary_step, cl)
        for name, c in self.checks.items():
            estimates = self._quantile_estimates(c)
            for q in c.quantiles:
                out.append(self._tail(latency_key(name, q), q, samples, seconds, frozen,
                                      not_counted, estimates))
            if name in self.distribution:
                out.append(self._distribution(name, cl, sl, frozen, not_counted))
        return out

    def _tail(self, key: str, q: float, samples: Samples, seconds: float, frozen: bool,
              not_counted: str | None, estimates: dict[str, Any]) -> Verdict:
        assert samples.stable is not None and samples.canary is not None
        runner = self.runners.get(key)
        if runner is None:
            return Verdict(key, Outcome.NO_DATA, f"p{quantile_text(q)} latency: no stable "
                           "latency histogram to choose a bucket bound from", details=estimates)
        bound = self.bounds[key]
        assert bound is not None
        cl, sl = samples.canary.latency, samples.stable.latency
        xs = slow_count(cl, bound) if cl is not None else None
        ys = slow_count(sl, bound) if sl is not None else None
        if frozen or xs is None or ys is None:
            v = runner.verdict(runner.test.result())
            if not_counted is not None:
                v = replace(v, reason=f"{v.reason} ({not_counted})")
            elif xs is None or ys is None:
                keep = v.outcome in (Outcome.OK, Outcome.REGRESSION)
                v = replace(v, outcome=v.outcome if keep else Outcome.NO_DATA,
                            reason=f"{v.reason} (no histogram with bound {bound}s this tick)")
        else:
            v = runner.update(samples.canary.requests, xs, samples.stable.requests, ys, seconds)
        return replace(v, details={**v.details, "bound_seconds": bound, **estimates})

    def _distribution(self, name: str, cl: Histogram | None, sl: Histogram | None,
                      frozen: bool, not_counted: str | None) -> Verdict:
        key = distribution_key(name)
        dt = self.distribution[name]
        res = dt.result() if frozen else dt.update(cl, sl)
        thr = 1 / self.alpha_of[key]
        reg = res.e_value >= thr
        if reg:
            reason = (f"canary latency distribution slower than stable, e={fmt_num(res.e_value)}"
                      f" >= {fmt_num(thr)}")
        else:
            reason = (f"latency distribution: no evidence the canary is slower "
                      f"(e={fmt_num(res.e_value)}, rollback at {fmt_num(thr)})")
        if not_counted is not None:
            reason += f" ({not_counted})"
        return Verdict(key, Outcome.REGRESSION if reg else Outcome.INCONCLUSIVE, reason,
                       evidence=res.e_value, evidence_kind="e-value", threshold=thr,
                       details={"rollback_only": True, "intervals": res.intervals,
                                "tempering": res.tempering, "alpha": self.alpha_of[key]})

    def _quantile_estimates(self, c: LatencyCheck) -> dict[str, Any]:
        est: dict[str, Any] = {"estimates_note": "interpolated from buckets; estimates"}
        for q in c.quantiles:
            for label, h in (("stable", self.stable_step), ("canary", self.canary_step)):
                est[f"{label}_p{quantile_text(q)}_seconds"] = (
                    interpolate_quantile(h, q) if h is not None else None)
        return est

    # ------------------------------------------------------------------ persistence

    def to_state(self) -> dict[str, Any]:
        return {
            "latency_bounds": self.bounds,
            "latency_runners": {k: r.to_state() for k, r in self.runners.items()},
            "distribution": {k: d.to_state() for k, d in self.distribution.items()},
            "stable_step_latency": self.stable_step.to_json() if self.stable_step else None,
            "canary_step_latency": self.canary_step.to_json() if self.canary_step else None,
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        keys = self.keys()
        for key, bound in state["latency_bounds"].items():
            if key not in keys or bound is None:
                continue
            c, q = keys[key]
            self.add_runner(key, c, q, bound).load_state(state["latency_runners"][key])
        for k, s in state["distribution"].items():
            if k in self.distribution:
                self.distribution[k] = DistributionTest.from_state(s)
        for attr, key in (("stable_step", "stable_step_latency"),
                          ("canary_step", "canary_step_latency")):
            h = state[key]
            setattr(self, attr, Histogram.from_json(h) if h else None)
