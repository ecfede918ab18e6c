"""Record the example rollouts the notebooks open by default: notebooks/data/example.db.

The real engine (analyzer.daemon.engine.run_rollout) runs two policies on the `simulate` source
and the `dry-run` router, on a simulated clock starting at a fixed instant, into a SQLite store:

- `checkout`: the canary's error rate is 2.5x stable's above 20 % weight and its p99 latency
  450 ms against 250 ms: promoted at 10 %, rolled back at 50 %;
- `checkout-healthy`: the canary behaves like stable: promoted to 100 %.

Everything is seeded, so running this again gives the same decisions (tests/sre checks that the
shipped file matches a fresh recording). Usage:

    .venv/bin/python scripts/record_example_rollouts.py [OUT.db]
"""

from __future__ import annotations

import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path

from analyzer.daemon.engine import run_rollout
from analyzer.daemon.store import Store
from analyzer.policy import parse_policy

START = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "notebooks" / "data" / "example.db"

POLICY = """
apiVersion: canary-analyzer.io/v1alpha1
kind: RolloutPolicy
metadata: {{name: {name}}}
spec:
  target: {{namespace: shop, service: checkout, stable: v1, canary: v2}}
  router: {{provider: dry-run}}
  strategy: {{steps: [10, 50, 100]}}
  analysis: {{interval: 10s, minStepDuration: 30s, maxStepDuration: 10m, baselineWindow: 1m}}
  metrics:
    source: simulate
    rps: 3000
    seed: 11
    stable: {{errorRate: 0.01}}
    canary: {{errorRate: {error_rate}, latencyP99: {p99}}}
    regressionAboveWeight: 20
  checks:
    - {{type: error-rate, tolerance: 0.2}}
    - {{type: latency, quantiles: [0.5, 0.99]}}
    - {{type: threshold, metric: error-rate, max: 5}}
  decision: {{alpha: 0.01}}
"""


def record(out: Path) -> dict[str, str]:
    """Write both rollouts into a new SQLite file `out`; return each one's final phase."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{out}{suffix}").unlink(missing_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    store = Store(f"sqlite:///{out}")
    phases = {}
    for name, error_rate, p99 in (("checkout", 0.025, "450ms"),
                                  ("checkout-healthy", 0.01, "250ms")):
        policy = parse_policy(POLICY.format(name=name, error_rate=error_rate, p99=p99))
        run = run_rollout(policy, store=store, start=START, max_ticks=300)
        phases[name] = str(run.phase)
    store.dispose()
    db = sqlite3.connect(out)  # one compact file, no WAL beside it: what ships in git
    try:
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("VACUUM")
    finally:
        db.close()
    return phases


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    phases = record(out)
    for name, phase in phases.items():
        print(f"{name}: {phase}")
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
