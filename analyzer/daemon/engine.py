"""The tick orchestrator: one evaluation of one rollout, from the store back to the store.

Owns the order of I/O in a tick (the state machine in analyzer/core/rollout.py decides; this module
does what it says):

1. read the rollout (state, tick sequence number, judge state still encoded) and its oldest
   pending manual command in ONE read statement (no write lock); no transaction is held while
   the network is used;
2. a command goes to the state machine directly; otherwise, at an analysis step, fetch the
   window [t0, now) from the metric source and ask the judge (the live judge of the last
   committed tick, kept in memory; rebuilt from the stored state only when the store moved on
   without this process); otherwise let time act (start, timed pause, finishing a promotion);
3. ask the `beforeStep` gates when the transition enters a step (non-2xx: hold);
4. move traffic, FENCED (analyzer/daemon/traffic.py, analyzer/routers/fence.py): right before
   every write the replica's lease is checked, and the write carries the fencing token (the
   store's epoch for this owner, the tick whose traffic it writes), which the router refuses
   when a later owner's token is on it. A rollback resets the router before anything else; a
   failed write leaves the previous weight and the rollout holds; a fenced write ends the tick
   (nothing is committed: another replica owns the rollout);
5. commit the tick, state, judge state, weight change, events and the consumed command in ONE
   transaction guarded by the tick sequence number AND the owner's epoch (store.commit_tick);
   a conflict (another replica took over, or committed this tick) re-reads the committed state
   and puts its traffic back, fenced like any write;
6. only then: metrics, notifications (background; never blocks).

Router before commit (docs/engine.md, "Fencing"). The router is written before the commit, so a
refused write is part of the same tick's record (a hold, counted towards the rollback after
repeated refusals). The write's token names the owner's epoch and the tick it belongs to: the
intent is kept where the traffic is. If the process dies in between, the store still holds the
previous state and the router may hold the new traffic; the next owner's first tick (a
restarted process, or another replica taking over) reads the router and writes the traffic the
committed state (or its own transition) asks for under its own, newer token (the claim write:
from then on no write of a former owner can land), and records a `reconcile` weight change.
The lost tick is re-evaluated from the committed judge state, so no decision is lost and none
is applied twice. A finished rollout stays with its owner until one more tick has made the
router agree with its final state (`settle`).

A new judge first reads the stable version's pre-rollout traffic, interval by interval over
`analysis.baselineWindow` (`baseline_samples`; from Prometheus one range query per metric for
all the intervals): the statistics learn from it how bursty the service is, and the latency
bounds come from it. Those intervals are recorded with the tick
that created the judge (its samples' `baseline`; the start tick has no window of its own), so
`canary export` can write them for replays. A judge state written by an older statistics
version cannot be continued: the analysis restarts at the current step with a fresh judge, and
an event says so.

`run_rollout` drives one rollout to its end on a simulated clock: the programmatic entry point
for simulations, notebooks and tests.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from analyzer.core.rollout import Phase, RolloutMachine, RolloutState, Transition
from analyzer.core.stats.latency import add_histograms
from analyzer.core.types import Decision, Histogram, Samples
from analyzer.daemon.metrics import EngineMetrics
from analyzer.daemon.notify import Notice, Notifier, check_gates
from analyzer.daemon.store import (
    Store,
    StoreError,
    TickConflict,
    TickRecord,
    TickRow,
    TickView,
)
from analyzer.daemon.traffic import Ownership, TrafficMoves
from analyzer.policy import Policy
from analyzer.routers.base import Router, RouterError
from analyzer.routers.fence import Fenced
from analyzer.sources.base import MetricSource, fetch_windows
from analyzer.sources.replay import baseline_line

log = logging.getLogger("analyzer.daemon.engine")

#: A window never reaches further back than this many effective windows (after a long pause
#: or downtime the first analysis looks at recent data only).
MAX_WINDOW_FACTOR = 3


def utcnow() -> datetime:
    return datetime.now(UTC)


def replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class TickOutcome:
    """What one call of `Engine.tick` did."""

    rollout_id: int
    recorded: bool  # a tick row was committed
    seq: int | None
    transition: Transition | None
    decision: Decision | None = None
    samples: Samples | None = None
    conflict: bool = False  # another replica committed this tick first, or took over
    reconciled: bool = False
    fenced: bool = False  # this replica does not own the rollout: nothing written or committed
    settled: bool = False  # a finished rollout's router was made to agree with its final state

    @property
    def phase(self) -> Phase | None:
        return self.transition.after.phase if self.transition else None


@dataclass(frozen=True)
class _LoadedJudge:
    """A judge for this tick: restored, or new (with the baseline it read), or restarted
    because its stored state was written by another statistics version (`restarted` says
    so, for the rollout's events)."""

    judge: Any
    baseline: tuple[Samples, ...] = ()
    restarted: str | None = None


def baseline_samples(source: MetricSource, policy: Policy,
                     now: datetime) -> tuple[Histogram | None, list[Samples]]:
    """The stable version's traffic before `now`: one Samples per analysis interval over the
    baseline window (`core.judge.baseline_windows`, read with `sources.base.fetch_windows`: one
    range query per metric for all of them from Prometheus), oldest first, and the window's
    stable latency histogram. Intervals without stable data are left out; a source never invents
    zeros, so a stable VersionSample present in an answer is real data even when the canary
    (not deployed yet) has no series. A failing source (no data for either version) stops the
    reading at once: the judge then starts with what it has (docs/statistics.md, 3.1)."""
    from analyzer.core.judge import baseline_windows

    windows = baseline_windows(policy, now)
    series: list[Samples] = []
    for s in fetch_windows(source, windows, canary_weight=0):
        if s.stable is None and s.canary is None and not s.ok:
            break  # the source is failing (each fetch would wait its timeouts): stop here
        if s.stable is not None:
            series.append(s)
    window = policy.spec.analysis.baselineWindow
    hist: Histogram | None = None
    if not series or windows[0][0] > now - window:
        whole = source.fetch(now - window, now, canary_weight=0)
        hist = whole.stable.latency if whole.stable is not None else None
    else:
        for s in series:
            lat = s.stable.latency if s.stable is not None else None
            if lat is not None and (hist is None or lat.le == hist.le):
                hist = add_histograms(hist, lat)
    return hist, series


class _Runtime:
    """What a process keeps per rollout between ticks (rebuilt after a restart)."""

    def __init__(self, policy: Policy, router: Router | None, router_error: str | None,
                 source: MetricSource) -> None:
        self.policy = policy
        self.machine = RolloutMachine.for_policy(policy)
        self.router = router
        self.router_error = router_error
        self.source = source
        self.needs_reconcile = True
        self.store_failed = False  # the last commit failed: check the store before the router
        self.lock = threading.Lock()  # one tick of a rollout at a time in this process
        self.policy_rev = 0  # the revision of the stored policy it runs (Store.update_policy)
        self.pending: Policy | None = None  # a changed stored policy, for the next step
        self.epoch: int | None = None  # the claim the router was last made to agree under
        # The live judge and the committed tick whose stored judge state it equals (None:
        # being changed by a tick that has not committed, or none built yet).
        self.judge: Any = None
        self.judge_seq: int | None = None


RouterFactory = Callable[[Policy], Router]
SourceFactory = Callable[[Policy], MetricSource]
JudgeFactory = Any  # a class with Judge's interface (see the brief / analyzer/core/judge.py)


def default_router(policy: Policy) -> Router:
    from analyzer.routers.factory import build_router

    return build_router(policy)


def default_source(policy: Policy) -> MetricSource:
    from analyzer.sources.factory import build_metric_source

    return build_metric_source(policy)


def default_judge() -> JudgeFactory:
    from analyzer.core.judge import Judge

    return Judge


class Engine(TrafficMoves):
    """Ticks rollouts stored in `store`. Thread-safe: ticks of different rollouts may run in
    parallel; ticks of one rollout are serialized (and guarded in the store)."""

    def __init__(
        self,
        store: Store,
        *,
        metrics: EngineMetrics | None = None,
        notifier: Notifier | None = None,
        replica: str | None = None,
        router_factory: RouterFactory | None = None,
        source_factory: SourceFactory | None = None,
        judge_class: JudgeFactory | None = None,
        gate_post: Callable[..., Any] | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics or EngineMetrics()
        self.notifier = notifier
        self.replica = replica or replica_id()
        self.router_factory = router_factory or default_router
        self.source_factory = source_factory or default_source
        self._judge_class = judge_class
        self.gate_post = gate_post
        self._runtimes: dict[int, _Runtime] = {}
        self._owned: dict[int, Ownership] = {}
        self._lock = threading.Lock()
        # Set by the scheduler: it claims a rollout when it takes it over, and a tick of an
        # unclaimed rollout does nothing. Without a scheduler (run_rollout, notebooks, tests)
        # the first tick of a rollout in this engine claims it.
        self.claims_by_scheduler = False

    # -- runtime cache ---------------------------------------------------------------------

    @property
    def judge_class(self) -> JudgeFactory:
        if self._judge_class is None:
            self._judge_class = default_judge()
        return self._judge_class

    def runtime(self, rollout_id: int, policy: Policy, policy_rev: int = 0) -> _Runtime:
        with self._lock:
            rt = self._runtimes.get(rollout_id)
            if rt is None:
                router: Router | None = None
                error: str | None = None
                try:
                    router = self.router_factory(policy)
                except RouterError as e:
                    error = str(e)
                except Exception as e:  # a config problem must not kill the scheduler
                    error = f"cannot build router {policy.spec.router.provider}: {e}"
                rt = _Runtime(policy, router, error, self.source_factory(policy))
                rt.policy_rev = policy_rev
                self._runtimes[rollout_id] = rt
            return rt

    def router_for(self, rollout_id: int) -> Router | None:
        rt = self._runtimes.get(rollout_id)
        return rt.router if rt else None

    def forget(self, rollout_id: int) -> None:
        """Drop what this process keeps for a rollout (another replica owns it now)."""
        with self._lock:
            self._runtimes.pop(rollout_id, None)
            self._owned.pop(rollout_id, None)

    # -- ownership -----------------------------------------------------------------------

    def claim(self, rollout_id: int, lease: Callable[[], bool] | None = None) -> int:
        """Take the rollout over: the store hands out the next fencing epoch (call it while
        holding the rollout's lock, if there is one). `lease` tells, right before each router
        write, whether this replica still owns the rollout (default: the store still names
        our epoch). The next tick makes the router agree with the store under the new epoch."""
        c = self.store.claim(rollout_id, self.replica)
        if lease is None:
            def lease(store: Store = self.store, epoch: int = c.epoch) -> bool:
                return store.fence_epoch(rollout_id) == epoch
        with self._lock:
            self._owned[rollout_id] = Ownership(c.epoch, c.store_id, self.replica, lease)
        return c.epoch

    def ownership(self, rollout_id: int) -> Ownership | None:
        return self._owned.get(rollout_id)

    # -- one tick ------------------------------------------------------------------------

    def tick(self, rollout_id: int, now: datetime | None = None) -> TickOutcome:
        """Evaluate `rollout_id` once at time `now` (default: the wall clock, UTC)."""
        now = now or utcnow()
        rt = self._runtimes.get(rollout_id)
        if rt is None:
            rec = self.store.get(rollout_id)
            if not rec.active and not rec.unsettled:
                return TickOutcome(rollout_id, False, None, None)
            rt = self.runtime(rollout_id, rec.load_policy(), rec.policy_rev)
        owner = self._owned.get(rollout_id)
        if owner is None:
            if self.claims_by_scheduler:
                log.warning("rollout #%d not ticked: this replica has not claimed it",
                            rollout_id)
                return TickOutcome(rollout_id, False, None, None, fenced=True)
            self.claim(rollout_id)
            owner = self._owned[rollout_id]
        with rt.lock:
            if rt.epoch != owner.epoch:  # a new claim: the router must agree under it
                rt.needs_reconcile = True
                rt.epoch = owner.epoch
            return self._tick(rt, owner, rollout_id, now)

    def _tick(self, rt: _Runtime, owner: Ownership, rollout_id: int,
              now: datetime) -> TickOutcome:
        started = time.perf_counter()
        view = self.store.tick_view(rollout_id)  # under the per-rollout lock
        if not view.active:
            if view.unsettled:
                try:
                    settled = self._settle(rt, owner, view, now)
                except Fenced as e:
                    self._note_fenced(rt, e, "settling the finished rollout")
                    return TickOutcome(rollout_id, False, None, None, fenced=True)
                return TickOutcome(rollout_id, False, None, None, settled=settled)
            return TickOutcome(rollout_id, False, None, None)
        state = view.state
        if view.policy_rev != rt.policy_rev:
            state = self._adopt_changed_policy(rollout_id, rt, view, now)
        policy, machine = rt.policy, rt.machine
        seq = view.tick_seq + 1
        if rt.store_failed:
            # The store refused the last commit (disk full, read-only): do not move the router
            # again until it takes a write, or traffic would flap every tick of the outage.
            self.store.check_writable(rollout_id)
            rt.store_failed = False
        cmd = view.command
        judge_was_current = rt.judge is not None and rt.judge_seq == view.tick_seq
        loaded: _LoadedJudge | None = None
        judge = None
        decision: Decision | None = None
        samples: Samples | None = None
        t0 = t1 = None
        if cmd is not None:
            t = machine.on_command(state, cmd.command, now, actor=cmd.actor)
        elif machine.needs_analysis(state):
            t0, t1 = self.window(policy, view.last_t1, state, now)
            if t1 <= t0:
                t = Transition(state, state, "wait", "window not open yet")
            else:
                loaded = self._live_judge(rt, view, now, state)
                judge = loaded.judge
                weight = state.weight if policy.spec.strategy.type == "canary" else None
                samples = rt.source.fetch(t0, t1, canary_weight=weight)
                decision = judge.evaluate(samples, now)
                t = machine.on_decision(state, decision, now)
        else:
            t = machine.on_time(state, now)

        if rt.pending is not None and t.start_step:
            judge, policy = self._switch_policy(rollout_id, rt, judge, view, now)
        gate_answers: list[dict[str, Any]] | None = None
        if t.gate is not None and policy.spec.gates.beforeStep:
            res = check_gates(policy, t.gate.step, t.gate.weight, rollout_id=rollout_id,
                              post=self.gate_post)
            gate_answers = [a.to_json() for a in res.answers]
            if not res.ok:
                t = machine.gate_held(t, res.reason)

        try:
            t, reconciled_from = self._move_traffic(rt, owner, view, t, now)
        except Fenced as e:
            rt.judge = None
            self._note_fenced(rt, e, f"tick {seq}")
            return TickOutcome(rollout_id, False, seq, t, decision, samples, fenced=True)

        if t.is_wait:
            if reconciled_from is not None:
                self._record_reconcile(rollout_id, reconciled_from, state.traffic, now)
            return TickOutcome(rollout_id, False, None, t, reconciled=reconciled_from is not None)

        # The judge's clock: a new step starts now; a resumed step goes on with its clock
        # restarted (Judge.step_started: minStepDuration and maxStepDuration count from here).
        if (t.start_step or t.restart_clock) and t.after.phase is Phase.PROGRESSING:
            if judge is None:
                loaded = self._live_judge(rt, view, now, state)
                judge = loaded.judge
            if t.start_step:
                judge.start_step(now, float(t.after.weight), step=t.after.step)
            else:
                judge.step_started = now
        judge_state = judge.to_state() if judge is not None else None

        events = [(t.action, t.reason)] if t.action not in ("hold",) else []
        if reconciled_from is not None and state.traffic != t.after.traffic:
            events.append(("reconcile", f"router held weight {reconciled_from.weight}, the "
                           f"store {state.traffic.weight}; applied {t.after.traffic.weight}"))
        if loaded is not None and loaded.restarted:
            events.append(("judge-restarted", loaded.restarted))
        samples_json = samples.to_json() if samples is not None else None
        if loaded is not None and loaded.baseline:
            # what the new judge started from (the start tick has no window of its own)
            samples_json = samples_json or {}
            samples_json["baseline"] = [baseline_line(s) for s in loaded.baseline]
        record = TickRecord(
            rollout_id=rollout_id, seq=seq, scheduled_at=now, state_before=state,
            state_after=t.after, action=t.action, reason=t.reason,
            t0=t0 if samples is not None else None, t1=t1 if samples is not None else None,
            decision=decision.to_json() if decision is not None else None,
            samples=samples_json,
            judge_state=judge_state, gate=gate_answers,
            command_id=cmd.id if cmd is not None else None,
            command=str(cmd.command) if cmd is not None else None,
            replica=self.replica, duration_ms=int((time.perf_counter() - started) * 1000),
            events=tuple(events), epoch=owner.epoch,
        )
        try:
            self.store.commit_tick(record)
        except TickConflict as e:
            log.warning("%s: %s", policy.name, e)
            rt.judge = None
            self._restore_committed(rt, owner, rollout_id)
            return TickOutcome(rollout_id, False, seq, t, decision, samples, conflict=True)
        except StoreError:
            rt.judge = None
            self._undo_traffic(rt, owner, view, t)
            raise
        if judge is not None:
            rt.judge, rt.judge_seq = judge, seq
        elif judge_was_current:
            rt.judge_seq = seq  # this tick left the stored judge state as it was
        if reconciled_from is not None and state.traffic == t.after.traffic:
            self._record_reconcile(rollout_id, reconciled_from, t.after.traffic, now)
        self._after_commit(rt, view.name, rollout_id, seq, t, decision, samples,
                           time.perf_counter() - started)
        return TickOutcome(rollout_id, True, seq, t, decision, samples,
                           reconciled=reconciled_from is not None)

    # -- a changed policy ------------------------------------------------------------------

    def _adopt_changed_policy(self, rollout_id: int, rt: _Runtime, view: TickView,
                              now: datetime) -> RolloutState:
        """The run's stored policy changed (a RolloutPolicy edit, Store.update_policy: its
        revision moved). The current step goes on with the old checks, router and source; the
        next step is the new plan's (the state rebased onto it, RolloutMachine.rebase) and
        from it on everything is the new policy's (`_switch_policy`). Returns the state this
        tick starts from."""
        state = view.state
        if state.phase not in (Phase.PENDING, Phase.PROGRESSING):
            return state  # paused or promoting: the change waits until it progresses again
        rec = self.store.get(rollout_id)  # the policy document, read only when it changed
        rt.policy_rev = rec.policy_rev
        if rec.policy == rt.policy.model_dump(mode="json"):
            return state  # written again unchanged
        policy = rec.load_policy()
        rt.pending = policy
        rt.machine = RolloutMachine.for_policy(policy)
        log.info("%s: policy changed; applies from the next step", rec.name)
        if state.phase is Phase.PENDING:
            self._switch_policy(rollout_id, rt, None, view, now)
        return rt.machine.rebase(state)

    def _switch_policy(self, rollout_id: int, rt: _Runtime, judge: Any, view: TickView,
                       now: datetime) -> tuple[Any, Policy]:
        """A new step starts: from here on the changed policy's router, source and checks."""
        policy = rt.pending
        assert policy is not None
        rt.policy, rt.pending = policy, None
        rt.source = self.source_factory(policy)
        try:
            rt.router, rt.router_error = self.router_factory(policy), None
        except Exception as e:
            rt.router, rt.router_error = None, f"cannot build router " \
                f"{policy.spec.router.provider}: {e}"
        rt.needs_reconcile = True
        state = judge.to_state() if judge is not None else view.judge_state
        loaded = self._load_judge(rt, state, now, view.state) if state else None
        judge = loaded.judge if loaded is not None else None
        rt.judge, rt.judge_seq = judge, None  # the old policy's judge is gone
        self.store.record_event(rollout_id, "policy", "changed policy applied from this step",
                                now)
        if loaded is not None and loaded.restarted:
            self.store.record_event(rollout_id, "judge-restarted", loaded.restarted, now)
        return judge, policy

    # -- pieces --------------------------------------------------------------------------

    @staticmethod
    def window(policy: Policy, last_t1: datetime | None, state: RolloutState,
               now: datetime) -> tuple[datetime, datetime]:
        """The data window of a tick at `now`.

        Default (no explicit `analysis.window`): from the end of the previous window, so
        consecutive windows tile time with neither gaps nor double counting, even when ticks
        are late or were missed during a restart; never before the current step started (data
        at another weight) and never more than MAX_WINDOW_FACTOR windows back. With an
        explicit window: [now - window, now), also clipped to the step start.
        """
        analysis = policy.spec.analysis
        window = analysis.effective_window
        if analysis.window is not None:
            t0 = now - window
        else:
            t0 = last_t1 if last_t1 is not None else now - window
            t0 = max(t0, now - window * MAX_WINDOW_FACTOR)
        if state.step_started_at is not None:
            t0 = max(t0, state.step_started_at)
        return t0, now

    def _live_judge(self, rt: _Runtime, view: TickView, now: datetime,
                    state: RolloutState) -> _LoadedJudge:
        """The judge of the last committed tick: the one in memory when it is that tick's (no
        decoding, no rebuilding), else rebuilt from the stored judge state (or new, reading
        the baseline). It is marked as changing until this tick commits, so a tick that fails
        leaves no judge behind."""
        if rt.judge is not None and rt.judge_seq == view.tick_seq:
            loaded = _LoadedJudge(rt.judge)
        else:
            loaded = self._load_judge(rt, view.judge_state, now, state)
        rt.judge, rt.judge_seq = loaded.judge, None
        return loaded

    def _load_judge(self, rt: _Runtime, judge_state: dict[str, Any] | None, now: datetime,
                     state: RolloutState) -> _LoadedJudge:
        from analyzer.core.judge import JudgeStateVersionError, analysed_weights

        policy, cls = rt.policy, self.judge_class
        if judge_state:
            try:
                return _LoadedJudge(cls.from_state(policy, judge_state))
            except JudgeStateVersionError as e:
                log.warning("%s: %s: restarting the analysis at the current step",
                            policy.name, e)
                restarted = True
        else:
            restarted = False
        judge = cls(policy)
        # The statistics learn the service's burstiness and the latency bounds on stable
        # traffic BEFORE the analysis starts.
        hist, series = baseline_samples(rt.source, policy, now)
        judge.set_baseline(hist, [s.stable for s in series])
        if not restarted:
            return _LoadedJudge(judge, tuple(series))
        weights = analysed_weights(policy)
        step = weights.index(state.weight) + 1 if state.weight in weights else state.step + 1
        if rt.machine.needs_analysis(state):
            judge.start_step(now, float(state.weight), step=state.step)
        why = (f"judge upgraded to statistics v2: analysis restarted at step {step} "
               f"({state.weight}%); evidence from before is not carried over")
        return _LoadedJudge(judge, tuple(series), why)

    def _after_commit(self, rt: _Runtime, name: str, rollout_id: int, seq: int, t: Transition,
                      decision: Decision | None, samples: Samples | None,
                      seconds: float) -> None:
        m = self.metrics.rollout(name)
        after = t.after
        m.weight.set(after.weight)
        m.set_state(after.phase.value)
        m.step.set(after.step)
        self.metrics.tick_seconds.observe(seconds)
        m.decision(decision.action.value if decision else t.action).inc()
        if samples is not None and not samples.ok:
            m.data_failures.inc()
        if decision is not None:
            m.set_verdicts(decision.verdicts)
        # INFO only for a decision that changes something: a holding tick is not news.
        level = logging.INFO if t.changed else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(level, "%s tick %d: %s -> %s, step %s, weight %d%%: %s", name, seq,
                    t.before.phase, after.phase, rt.machine.plan.position(after.step),
                    after.weight, t.reason)
        if self.notifier is not None and t.changed:
            self.notifier.notify(rt.policy, _notice(rt.policy, rollout_id, seq, t, decision))


def _notice(policy: Policy, rollout_id: int, seq: int, t: Transition,
            decision: Decision | None) -> Notice:
    after = t.after
    if after.phase is Phase.SUCCEEDED:
        kind = "succeeded"
    elif after.phase is Phase.FAILED:
        kind = "failed"
    elif after.phase is Phase.ROLLED_BACK:
        kind = "rollback"
    elif after.phase is Phase.PAUSED and t.before.phase is not Phase.PAUSED:
        kind = "pause"
    elif t.action == "promote":
        kind = "promote"
    else:
        kind = "step"
    text = (f"{t.reason} (weight {t.before.weight}% -> {after.weight}%, "
            f"{t.before.phase} -> {after.phase})")
    payload = {
        "rollout_id": rollout_id, "tick": seq, "phase": str(after.phase), "step": after.step,
        "weight_before": t.before.weight, "weight_after": after.weight,
        "canary": policy.spec.target.canary, "stable": policy.spec.target.stable,
        "decision": decision.to_json() if decision is not None else None,
    }
    return Notice(policy.name, kind, text, payload)


# --------------------------------------------------------------------------- driver


@dataclass(frozen=True)
class RolloutRun:
    """Result of `run_rollout`: the final record and its ticks."""

    rollout_id: int
    phase: Phase
    weight: int
    ticks: list[TickRow]
    store: Store
    router: Router | None


def run_rollout(
    policy: Policy,
    *,
    store: Store | None = None,
    start: datetime | None = None,
    canary_version: str | None = None,
    max_ticks: int = 10_000,
    engine: Engine | None = None,
    on_tick: Callable[[TickOutcome, datetime], None] | None = None,
) -> RolloutRun:
    """Run one rollout to its end on a simulated clock (no sleeping, no scheduler).

    Ticks every `analysis.interval` from `start` (default: now, UTC) until the rollout is
    terminal, paused for a human (a pause without duration, or the judge's pause), or
    `max_ticks`. `store` defaults to an in-memory SQLite store; read the decision log with
    `run.ticks` or `store.ticks(run.rollout_id)`. `on_tick(outcome, now)` sees every tick
    (tests queue commands there).
    """
    store = store or Store("sqlite://")
    engine = engine or Engine(store)
    now = start or utcnow()
    interval = policy.spec.analysis.interval
    rec = store.create_rollout(policy, now, canary_version=canary_version)
    for _ in range(max_ticks):
        out = engine.tick(rec.id, now)
        if on_tick is not None:
            on_tick(out, now)
        cur = store.get(rec.id)
        if not cur.active:
            break
        if (cur.phase is Phase.PAUSED and cur.state.pause_until is None
                and store.pending_command(rec.id) is None):
            break  # needs a human
        now = now + interval
    cur = store.get(rec.id)
    return RolloutRun(cur.id, cur.phase, cur.state.weight, store.ticks(cur.id), store,
                      engine.router_for(cur.id))


__all__ = ["Engine", "RolloutRun", "TickOutcome", "run_rollout", "utcnow"]
