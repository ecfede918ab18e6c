"""How far `canary simulate`'s suggestions can trust Wald's bound: the share of simulated
rollouts that decide within a step of k times the bound (analyzer.offline.verdict.SAFETY).

For each traffic level, the first step's Wald mean for the policy's binding check is computed
as the verdict computes it; then maxStepDuration is set to k times that mean and the healthy
canary (promotion) and a 2x error-rate regression (rollback) are simulated. Policy: the shape
of policies/local-simulated.yaml (steps 10/25/50/100, interval 5 s, minStepDuration 30 s,
error-rate and latency p99 checks at tolerance 0.25, alpha 0.01, beta 0.05), 1 % errors.

Run: `.venv/bin/python benchmarks/verdict_calibration.py [--runs 60 --seed 3]`; writes
benchmarks/results/verdict_calibration.md (`--quick`: 15 runs, one traffic level, not written).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analyzer.offline import tuning  # noqa: E402
from analyzer.offline.montecarlo import simulate_rollouts  # noqa: E402
from analyzer.offline.verdict import SAFETY, simulation_verdict  # noqa: E402
from analyzer.policy import Policy  # noqa: E402
from analyzer.util.fmt import fmt_seconds  # noqa: E402

POLICY = {
    "apiVersion": "canary-analyzer.io/v1alpha1", "kind": "RolloutPolicy",
    "metadata": {"name": "calibration"},
    "spec": {
        "target": {"service": "demo", "stable": "v1", "canary": "v2"},
        "router": {"provider": "dry-run"},
        "strategy": {"steps": [10, 25, 50, 100]},
        "analysis": {"interval": "5s", "minStepDuration": "30s", "maxStepDuration": "30m"},
        "metrics": {"source": "simulate", "rps": 100, "allowSimulatedMetrics": True},
        "checks": [{"type": "error-rate"}, {"type": "latency"}],
    },
}
MULTIPLES = (1.0, 2.0, 3.0, 4.0, 6.0)
BASE_ERROR_RATE = 0.01


def policy_with(max_step_s: float) -> Policy:
    doc = {**POLICY, "spec": {**POLICY["spec"], "analysis": {
        **POLICY["spec"]["analysis"], "maxStepDuration": f"{max(int(max_step_s), 30)}s"}}}
    return Policy.model_validate(doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    runs = 15 if args.quick else args.runs
    levels = (100.0,) if args.quick else (40.0, 100.0, 300.0)
    rows = []
    started = time.monotonic()
    for rps in levels:
        base = policy_with(1800)
        healthy, reg = tuning.build_scenarios(base, rps, BASE_ERROR_RATE,
                                              [tuning.parse_regression("error-rate=2x")])
        for scenario in (healthy, reg):
            probe = simulate_rollouts(base, scenario, 1, args.seed)
            wald = next((n.seconds for n in simulation_verdict(base, probe).needs
                         if n.seconds is not None), None)
            if wald is None:
                continue
            for k in MULTIPLES:
                policy = policy_with(k * wald)
                s = simulate_rollouts(policy, scenario, runs, args.seed)
                rate = s.rollback_rate if scenario.is_regression else s.promote_rate
                rows.append((rps, scenario.name, wald, k, rate.value, rate.stderr))
                print(f"  {rps:g} rps {scenario.name}: {k:g}x ({fmt_seconds(k * wald)}) -> "
                      f"{100 * rate.value:.0f}% [{time.monotonic() - started:.0f}s]",
                      file=sys.stderr, flush=True)
    lines = [
        "# Calibration of `canary simulate`'s suggestions",
        "",
        f"maxStepDuration set to k x Wald's mean for the first step (10 %), {runs} runs per "
        f"cell, seed {args.seed}, 1 % errors; the verdict suggests k = {SAFETY:g}. "
        "Decided: promoted (no regression) or rolled back (error-rate=2x).",
        "",
        "| total rps | scenario | Wald's mean | " + " | ".join(f"{k:g}x" for k in MULTIPLES)
        + " |",
        "|---|---|---|" + "---|" * len(MULTIPLES),
    ]
    for rps in levels:
        for name in dict.fromkeys(r[1] for r in rows if r[0] == rps):
            cells = [r for r in rows if r[0] == rps and r[1] == name]
            lines.append(f"| {rps:g} | {name} | {fmt_seconds(cells[0][2])} | " + " | ".join(
                f"{100 * r[4]:.0f}% ± {100 * r[5]:.0f}" for r in cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick:
        (ROOT / "benchmarks" / "results" / "verdict_calibration.md").write_text(text)


if __name__ == "__main__":
    main()
