"""What a rollout says when its router refuses (issue 22, item 4): the cause once, the router's
error once and what to do; a retry never wraps the previous retry's reason; a rollout whose
router never moved traffic says so instead of "rollback failed 5 times"."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from analyzer.core.rollout import ROUTER_FAILURE_LIMIT
from analyzer.daemon.engine import Engine
from analyzer.daemon.store import Store
from analyzer.policy import Policy
from analyzer.routers.base import RouterError, TrafficSplit
from analyzer.routers.dry_run import DryRunRouter

from .conftest import T0, make_policy

INTERVAL = timedelta(seconds=5)
# The message the Istio router gives for a VirtualService that is not there
# (analyzer/routers/kube/objects.py, ObjectClient._error for a 404).
MISSING = ('cannot read VirtualService shop/web: it does not exist; check the name and '
           'namespace in the policy (API: virtualservices.networking.istio.io "web" not found)')


class BreakableRouter:
    """The dry-run router until `broken` is set; then every call raises `broken`."""

    def __init__(self, policy: Policy) -> None:
        self.inner = DryRunRouter(policy)
        self.broken: str | None = None

    def _check(self) -> None:
        if self.broken is not None:
            raise RouterError(self.broken)

    def get_weight(self) -> TrafficSplit:
        self._check()
        return self.inner.get_weight()

    def set_weight(self, canary_percent: int) -> None:
        self._check()
        self.inner.set_weight(canary_percent)

    def set_header_route(self, match: dict[str, str] | None) -> None:
        self._check()
        self.inner.set_header_route(match)

    def set_mirror(self, percent: float | None) -> None:
        self._check()
        self.inner.set_mirror(percent)

    def reset(self) -> None:
        self._check()
        self.inner.reset()

    @property
    def last_applied(self) -> list[dict[str, Any]]:
        return self.inner.last_applied


def run(store: Store, policy: Policy, router: BreakableRouter, ticks: int,
        break_at: int | None = None) -> list[Any]:
    engine = Engine(store, router_factory=lambda _p: router)
    rec = store.create_rollout(policy, T0)
    for k in range(1, ticks + 1):
        if break_at is not None and k == break_at:
            router.broken = MISSING
        engine.tick(rec.id, T0 + k * INTERVAL)
        if not store.get(rec.id).active:
            break
    return store.ticks(rec.id)


def test_a_router_that_never_moved_traffic_says_what_failed_and_what_to_do(sqlite_store):
    policy = make_policy(name="web")
    router = BreakableRouter(policy)
    router.broken = MISSING
    ticks = run(sqlite_store, policy, router, ticks=20)
    assert [t.action for t in ticks] == ["router-hold"] * (ROUTER_FAILURE_LIMIT - 1) + ["fail"]
    for t in ticks:
        assert t.reason.count(MISSING) == 1, t.reason
        assert "rollback" not in t.reason.replace("rolling back", "")
    final = sqlite_store.latest("web")
    assert str(final.phase) == "failed" and final.state.weight == 0
    reason = final.state.reason
    assert reason.startswith("never started: the router refused the first step 5 times")
    assert "no traffic moved to the canary and nothing needs rolling back" in reason
    assert "check the name and namespace in the policy" in reason  # the router's own advice
    assert "`canary start POLICY`" in reason  # and what to do then
    assert "rollback failed" not in reason


def test_refused_rollback_reasons_do_not_nest(sqlite_store):
    """The canary regresses; the judge rolls back just as the router stops answering: every
    retry says the cause and the error once, and the end says what to do."""
    policy = make_policy(name="web", canary_error=0.06, min_step="1m")
    router = BreakableRouter(policy)
    ticks = run(sqlite_store, policy, router, ticks=60, break_at=2)
    # break_at=2: the first step was applied (tick 1), everything after is refused
    assert ticks[0].action == "start" and ticks[0].weight_after == 20
    retries = [t for t in ticks if t.action == "rollback-retry"]
    assert len(retries) == ROUTER_FAILURE_LIMIT - 1
    cause = retries[0].reason.split("the rollback is for: ", 1)[1]
    assert cause.startswith("rollback at 20%") and "> 1 + tolerance 0.5 = 1.5" in cause
    for k, t in enumerate(retries, start=1):
        assert t.reason.count(MISSING) == 1, t.reason
        assert t.reason.count("the rollback is for:") == 1, t.reason
        assert t.reason.endswith(cause)
        assert f"refused it {k} of {ROUTER_FAILURE_LIMIT} times" in t.reason
    final = ticks[-1]
    assert final.action == "fail" and final.phase_after == "failed"
    assert final.reason.startswith(
        f"rollback failed: the router refused it {ROUTER_FAILURE_LIMIT} times in a row: "
        f"{MISSING}. Traffic may still reach the canary")
    assert "`canary route POLICY --reset`" in final.reason
    assert final.reason.count(MISSING) == 1 and final.reason.endswith(cause)
