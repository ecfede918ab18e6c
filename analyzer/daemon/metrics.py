"""The engine's own Prometheus metrics (served on /metrics by api/routes.py).

One registry per engine process. The names here are the contract the Grafana dashboard in
deploy/grafana/ is checked against.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ROLLOUT_STATES = (
    "pending", "progressing", "paused", "promoting", "succeeded", "rolled_back", "failed",
)


class EngineMetrics:
    """Counters and gauges the scheduler updates after each tick."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.weight = Gauge(
            "canary_rollout_weight_percent", "Canary traffic weight the engine set",
            ["rollout"], registry=r,
        )
        self.state = Gauge(
            "canary_rollout_state", "1 for the rollout's current state, 0 otherwise",
            ["rollout", "state"], registry=r,
        )
        self.step = Gauge("canary_rollout_step", "Index of the rollout's current step",
                          ["rollout"], registry=r)
        self.decisions = Counter(
            "canary_decisions", "Decisions taken, by outcome", ["rollout", "decision"], registry=r,
        )
        self.evidence = Gauge(
            "canary_check_evidence", "Latest evidence (e-value) per check", ["rollout", "check"],
            registry=r,
        )
        self.estimate = Gauge(
            "canary_check_estimate", "Latest effect estimate (canary/stable ratio) per check",
            ["rollout", "check"], registry=r,
        )
        self.tick_seconds = Histogram(
            "canary_tick_duration_seconds", "Wall time of one rollout tick", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.data_failures = Counter(
            "canary_data_failures", "Ticks without trustworthy data", ["rollout"], registry=r,
        )
        self.router_errors = Counter(
            "canary_router_errors", "Weight changes the router refused or failed",
            ["rollout"], registry=r,
        )
        self.active = Gauge("canary_rollouts_active", "Rollouts this replica ticks", registry=r)

    def set_state(self, rollout: str, state: str) -> None:
        for s in ROLLOUT_STATES:
            self.state.labels(rollout=rollout, state=s).set(1 if s == state else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
