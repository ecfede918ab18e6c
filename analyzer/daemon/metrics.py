"""The engine's own Prometheus metrics (served on /metrics by api/routes.py).

One registry per engine process. The names here are the contract the Grafana dashboard in
deploy/grafana/ is checked against. `EngineMetrics.rollout(name)` holds one rollout's labelled
children, looked up once (a `labels()` call takes a lock and checks the labels every time).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from analyzer.core.types import Verdict

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
            "canary_check_evidence",
            "Latest evidence per check, by kind: regression and non_inferiority e-values (a "
            "check rolls back or counts as non-inferior at its threshold), sample_ratio_mismatch "
            "(e-value), consecutive_failures (threshold checks), p_value (classic tests)",
            ["rollout", "check", "kind"], registry=r,
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
        self.fenced = Counter(
            "canary_fenced_writes", "Router writes refused because this replica no longer "
            "owned the rollout (lease lost, or a later owner's fencing token on the object)",
            ["rollout"], registry=r,
        )
        self.active = Gauge("canary_rollouts_active", "Rollouts this replica ticks", registry=r)
        self._rollouts: dict[str, RolloutMetrics] = {}
        self._lock = threading.Lock()

    def set_verdicts(self, rollout: str, verdicts: Iterable[Verdict]) -> None:
        """The latest evidence and estimate of each check (after a tick with a decision)."""
        self.rollout(rollout).set_verdicts(verdicts)

    def set_state(self, rollout: str, state: str) -> None:
        self.rollout(rollout).set_state(state)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def rollout(self, name: str) -> RolloutMetrics:
        """The children of one rollout (made on first use, then kept)."""
        found = self._rollouts.get(name)
        if found is None:
            with self._lock:
                found = self._rollouts.setdefault(name, RolloutMetrics(self, name))
        return found


class RolloutMetrics:
    """One rollout's labelled children of the engine's metrics."""

    def __init__(self, metrics: EngineMetrics, name: str) -> None:
        self._metrics, self._name = metrics, name
        self.weight = metrics.weight.labels(rollout=name)
        self.step = metrics.step.labels(rollout=name)
        self.data_failures = metrics.data_failures.labels(rollout=name)
        self._states = {s: metrics.state.labels(rollout=name, state=s) for s in ROLLOUT_STATES}
        self._state: str | None = None
        self._children: dict[tuple[str, ...], Any] = {}

    def set_state(self, state: str) -> None:
        if state == self._state:
            return
        for s, child in self._states.items():
            child.set(1 if s == state else 0)
        self._state = state

    def _child(self, metric: str, **labels: str) -> Any:
        key = (metric, *labels.values())
        child = self._children.get(key)
        if child is None:
            child = getattr(self._metrics, metric).labels(rollout=self._name, **labels)
            self._children[key] = child
        return child

    def decision(self, decision: str) -> Any:
        return self._child("decisions", decision=decision)

    def set_verdicts(self, verdicts: Iterable[Verdict]) -> None:
        """The latest evidence and estimate of each check (after a tick with a decision)."""
        for v in verdicts:
            for kind, value in evidence_by_kind(v).items():
                self._child("evidence", check=v.check, kind=kind).set(value)
            if v.estimate is not None:
                self._child("estimate", check=v.check).set(v.estimate)


#: the `kind` label of canary_check_evidence for a verdict's own evidence
EVIDENCE_KINDS = {"failures": "consecutive_failures", "p-value": "p_value"}


def evidence_by_kind(v: Verdict) -> dict[str, float]:
    """A verdict's evidence as `kind` -> value: a rate-ratio check reports both its e-values
    (regression, non_inferiority); the sample-ratio check its mismatch e-value; a rollback-only
    e-value test (latency distribution) its regression e-value; thresholds their consecutive
    failures; classic tests their p-value."""
    details = v.details or {}
    if details.get("e_regression") is not None:
        out = {"regression": float(details["e_regression"])}
        # the e-value the check's sentence calls non-inferiority (with the negligible-rate
        # route averaged in when the check has one)
        ok = details.get("e_ok", details.get("e_noninferiority"))
        if ok is not None:
            out["non_inferiority"] = float(ok)
        return out
    if v.evidence is None:
        return {}
    if v.check == "sample-ratio":
        return {"sample_ratio_mismatch": v.evidence}
    return {EVIDENCE_KINDS.get(v.evidence_kind or "", "regression"): v.evidence}
