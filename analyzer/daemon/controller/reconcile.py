"""One RolloutPolicy's pass: what the owning controller does for it each time it looks.

In order: a deleted policy aborts its active run and, once none runs, loses its finalizer; the
finalizer is added; an invalid spec is reported (status Invalid, an Event) and nothing else
happens; the command annotation is queued exactly once; a changed spec goes into the active
run (applied from its next step); the canaryRef is watched and its version read; a new version
starts a rollout against the stable one, or restarts (onNewVersion: restart) or waits (queue);
then Events for the decision log's new ticks and the status go to the background writer.
(controller.py owns the threads, the watches of the policies and the ownership.)
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from analyzer.core.rollout import Command, Phase
from analyzer.daemon.controller import policies as P
from analyzer.daemon.controller.kube import CANARY_REF_RESOURCES, KubeApi
from analyzer.daemon.controller.status import (
    MAX_EVENTS_PER_PASS,
    PolicyView,
    plan_length,
    policy_status,
    tick_events,
)
from analyzer.daemon.controller.versions import WorkloadVersion, read_version
from analyzer.daemon.controller.watch import ListWatch
from analyzer.daemon.controller.writer import StatusWriter
from analyzer.daemon.store import NotFound, RolloutRecord, Store, StoreError
from analyzer.policy import API_VERSION, KIND, Policy

log = logging.getLogger("analyzer.daemon.controller")

Obj = dict[str, Any]


@dataclass
class Tracked:
    """What the controller keeps per owned policy between passes."""

    ref_watch: ListWatch | None = None
    ref_key: tuple[str, str, str, str] | None = None
    ref_object: Obj | None = None
    ref_seen: bool = False  # the first list of the canaryRef arrived
    version: WorkloadVersion | None = None
    applied_generation: int | None = None
    abort_for: int | None = None  # run id an abort was queued for
    reported: tuple[int, int] | None = None  # (run id, last tick reported as an Event)
    last_command: dict[str, str] | None = None
    invalid_generation: int | None = None  # generation whose problem was reported
    first_seen: str | None = None  # the canaryRef's version when first seen (the stable one)
    last_tick: tuple[int, int, str, datetime] | None = None  # run id, seq, sentence, time
    parsed: tuple[Any, Policy | None, str | None] | None = None  # (uid, generation), parse()
    plan: tuple[int, int] | None = None  # run id, its plan length


class PolicyWork:
    """One owned RolloutPolicy's pass (the Controller is one of these plus its threads,
    watches and ownership). Uses the Controller's store, api, writer, scheduler, clock."""

    store: Store
    api: KubeApi
    writer: StatusWriter
    scheduler: Any
    replica: str
    watch_timeout: int
    objects: dict[str, Obj]
    tracked: dict[str, Tracked]
    clock: Callable[[], datetime]
    sleep: Callable[[float, threading.Event], None]
    _lock: threading.RLock

    def _on_ref_list(self, key: str, items: list[Obj]) -> None:
        raise NotImplementedError

    def _on_ref_event(self, key: str, kind: str, obj: Obj) -> None:
        raise NotImplementedError

    def _reconcile(self, key: str, now: datetime) -> None:
        with self._lock:
            obj = copy.deepcopy(self.objects.get(key))
            t = self.tracked.get(key)
        if obj is None or t is None:
            return
        meta = obj["metadata"]
        ns, name = meta["namespace"], meta["name"]
        sname = P.store_name(ns, name)
        key_gen = (meta.get("uid"), meta.get("generation"))
        if t.parsed is None or t.parsed[0] != key_gen:  # validate each generation once
            t.parsed = (key_gen, *P.parse(obj))
        _, policy, problem = t.parsed
        run = self._latest(sname)
        prev_status = obj.get("status") or {}
        self._resume_from_status(t, run, prev_status)
        if meta.get("deletionTimestamp"):
            if not self._deleting(obj, t, run, sname, now):
                self._publish(obj, t, policy, run, None, now, deleting=True)
            return
        if P.FINALIZER not in (meta.get("finalizers") or []):
            self._add_finalizer(obj)
        if policy is None:
            if t.invalid_generation != meta.get("generation"):
                t.invalid_generation = meta.get("generation")
                self._event(obj, "InvalidSpec", problem or "invalid", warning=True)
            self._publish(obj, t, None, run, problem, now)
            return
        self._consume_command(obj, t, run, sname, now)
        self._apply_spec_change(obj, t, policy, run)
        problem = self._follow_ref(key, t, policy, ns)
        if self._versions(obj, t, policy, run, sname, now):
            run = self._latest(sname)  # a rollout was started: publish the new run
        self._publish(obj, t, policy, run, problem, now)

    # -- pieces --------------------------------------------------------------------------

    def _latest(self, sname: str) -> RolloutRecord | None:
        try:
            return self.store.latest(sname)
        except NotFound:
            return None

    @staticmethod
    def _resume_from_status(t: Tracked, run: RolloutRecord | None,
                            status: dict[str, Any]) -> None:
        """After a restart or a hand-over: continue where the status says the last owner
        stopped (Events already sent, the last command handled)."""
        if t.last_command is None and status.get("lastCommand"):
            t.last_command = dict(status["lastCommand"])
        if t.reported is None and run is not None:
            seq = status.get("reportedTick") if status.get("run") == run.generation else None
            t.reported = (run.id, int(seq or 0))

    def _deleting(self, obj: Obj, t: Tracked, run: RolloutRecord | None, sname: str,
                  now: datetime) -> bool:
        """A deleted policy: abort its active run; once none runs, remove the finalizer (True:
        removed, the object goes)."""
        if P.FINALIZER not in (obj["metadata"].get("finalizers") or []):
            return False
        if run is not None and run.active:
            if t.abort_for != run.id:
                self._abort(obj, t, run, sname, now, "RolloutPolicy deleted: traffic back to "
                            "stable")
            return False
        finalizers = obj["metadata"]["finalizers"]
        removed = self._patch(obj, [
            {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
            {"op": "replace", "path": "/metadata/finalizers",
             "value": [f for f in finalizers if f != P.FINALIZER]}])
        if removed:
            log.info("RolloutPolicy %s: finalizer removed (no active rollout)", P.key_of(obj))
        return removed

    def _add_finalizer(self, obj: Obj) -> None:
        finalizers = obj["metadata"].get("finalizers")
        if finalizers is None:
            ops = [{"op": "add", "path": "/metadata/finalizers", "value": [P.FINALIZER]}]
        else:
            ops = [{"op": "test", "path": "/metadata/finalizers", "value": finalizers},
                   {"op": "add", "path": "/metadata/finalizers/-", "value": P.FINALIZER}]
        self._patch(obj, ops)

    def _patch(self, obj: Obj, ops: list[Obj]) -> bool:
        meta = obj["metadata"]
        try:
            self.api.patch_policy(meta["namespace"], meta["name"], ops)
            return True
        except Exception as e:
            # A `test` failed (someone changed the field) or the API is away: the next pass
            # sees the new object and tries again.
            log.info("RolloutPolicy %s: patch not applied (retried): %s", P.key_of(obj),
                     str(e).splitlines()[0] if str(e) else type(e).__name__)
            return False

    def _abort(self, obj: Obj, t: Tracked, run: RolloutRecord, sname: str, now: datetime,
               why: str) -> None:
        try:
            self.store.add_command(sname, Command.ABORT, f"controller ({why})", now)
        except StoreError as e:
            log.warning("RolloutPolicy %s: abort not queued: %s", P.key_of(obj), e)
            return
        t.abort_for = run.id
        self._event(obj, "AbortRequested", f"run {run.generation}: {why}", warning=True)
        self._poke(run.id)

    def _poke(self, rollout_id: int) -> None:
        if self.scheduler is not None:
            self.scheduler.poke(rollout_id)

    def _consume_command(self, obj: Obj, t: Tracked, run: RolloutRecord | None, sname: str,
                         now: datetime) -> None:
        value = (obj["metadata"].get("annotations") or {}).get(P.COMMAND_ANNOTATION)
        if value is None:
            return
        try:
            req = P.CommandRequest.parse(value)
        except ValueError as e:
            t.last_command = {"id": "-", "command": "-", "result": f"refused: {e}"}
            self._event(obj, "CommandRefused", str(e), warning=True)
            self._clear_command(obj, value)
            return
        if t.last_command is None or t.last_command.get("id") != req.id:
            if run is None or not run.active:
                result = (f"refused: no active rollout to {req.command}"
                          + (f" (run {run.generation} {run.phase})" if run else ""))
                self._event(obj, "CommandRefused", f"{req.command} by {req.actor}: {result}",
                            warning=True)
            else:
                rec, cid, new = self.store.add_command_once(
                    sname, req.command, f"{req.actor} [{req.id}]", now)
                result = f"queued for run {rec.generation} (command {cid})"
                if new:
                    self._event(obj, "CommandQueued", f"{req.command} by {req.actor}: {result}")
                self._poke(rec.id)
            t.last_command = {"id": req.id, "command": str(req.command), "result": result}
        self._clear_command(obj, value)

    def _clear_command(self, obj: Obj, value: str) -> None:
        path = "/metadata/annotations/" + P.COMMAND_ANNOTATION.replace("~", "~0").replace(
            "/", "~1")
        self._patch(obj, [{"op": "test", "path": path, "value": value},
                          {"op": "remove", "path": path}])

    def _apply_spec_change(self, obj: Obj, t: Tracked, policy: Policy,
                           run: RolloutRecord | None) -> None:
        generation = obj["metadata"].get("generation")
        if run is None or not run.active:
            t.applied_generation = generation
            return
        if t.applied_generation == generation:
            return
        t.applied_generation = generation
        current = run.load_policy()
        if P.same_spec(current, policy):
            return
        updated = P.resolve(policy, P.identity(run, "stable"), P.identity(run, "canary"))
        self.store.update_policy(run.id, updated)
        self._event(obj, "SpecChanged", f"run {run.generation}: the changed spec applies from "
                    "its next step")

    def _follow_ref(self, key: str, t: Tracked, policy: Policy, ns: str) -> str | None:
        """Keep a watch on the policy's canaryRef object; a problem to show, or None."""
        ref = policy.spec.target.canaryRef
        want = None if ref is None else (ref.api_version, CANARY_REF_RESOURCES[ref.kind], ns,
                                         ref.name)
        if want != t.ref_key:
            if t.ref_watch is not None:
                t.ref_watch.stop(0)
            t.ref_watch, t.ref_key, t.ref_object, t.ref_seen = None, want, None, False
            if want is not None:
                api_version, resource, _, name = want
                t.ref_watch = ListWatch(
                    f"{key}-canaryRef", lambda: self._get_ref(want),
                    lambda rv: self.api.watch_object(api_version, resource, ns, name, rv,
                                                     self.watch_timeout),
                    on_list=lambda items: self._on_ref_list(key, items),
                    on_event=lambda kind, obj: self._on_ref_event(key, kind, obj),
                    sleep=self.sleep).start()
        if ref is None:
            t.version = None
            return None
        if not t.ref_seen:
            return None
        if t.ref_object is None:
            t.version = None
            return f"canaryRef {ref.kind} {ns}/{ref.name} not found"
        t.version = read_version(ref, t.ref_object)
        return None if t.version.version is not None else t.version.detail

    def _get_ref(self, want: tuple[str, str, str, str]) -> tuple[list[Obj], str]:
        api_version, resource, ns, name = want
        try:
            obj = self.api.get_object(api_version, resource, ns, name)
        except Exception as e:
            if getattr(e, "status", None) == 404:
                return [], ""  # watch from now: an ADDED event comes when it is created
            raise
        return [obj], str(obj["metadata"]["resourceVersion"])

    def _desired(self, t: Tracked, policy: Policy) -> tuple[str | None, str]:
        """The version that should be (or become) the canary, and where it comes from."""
        if policy.spec.target.canaryRef is not None:
            v = t.version
            return (v.version if v else None), (v.detail if v else "canaryRef not read yet")
        return policy.spec.target.canary, "spec.target.canary"

    @staticmethod
    def _stable(t: Tracked, policy: Policy, run: RolloutRecord | None, status: dict[str, Any],
                desired: str | None) -> str | None:
        """The stable version: the newest run's (its canary once promoted); before any run,
        the status's, the spec's, else the version the canaryRef ran when first seen."""
        if run is not None:
            return P.identity(run, "canary" if run.phase is Phase.SUCCEEDED else "stable")
        found = status.get("stable") or policy.spec.target.stable or t.first_seen
        if found is None and desired is not None:
            t.first_seen = found = desired
        return found

    def _versions(self, obj: Obj, t: Tracked, policy: Policy, run: RolloutRecord | None,
                  sname: str, now: datetime) -> bool:
        """Start, restart or queue on a new version; True when a rollout was started."""
        desired, source = self._desired(t, policy)
        stable = self._stable(t, policy, run, obj.get("status") or {}, desired)
        if desired is None or stable is None:
            return False
        if run is not None and run.active:
            current = P.identity(run, "canary")
            if desired == current or t.abort_for == run.id:
                return False
            if desired == stable:
                self._abort(obj, t, run, sname, now, f"{source} is back on the stable version "
                            f"{stable}")
            elif _on_new_version(policy) == "restart":
                self._abort(obj, t, run, sname, now, f"new version {desired} ({source}): "
                            "restarting the analysis on it")
            return False
        last = P.identity(run, "canary") if run is not None else None
        if desired in (stable, last):
            return False
        try:
            rec = self.store.create_rollout(P.resolve(policy, stable, desired), now)
        except (StoreError, ValueError) as e:
            self._event(obj, "StartFailed", f"{stable} -> {desired}: {e}", warning=True)
            return False
        t.abort_for = None
        log.info("RolloutPolicy %s: run %d started: %s -> %s (%s)", P.key_of(obj),
                 rec.generation, stable, desired, source)
        self._event(obj, "RolloutStarted", f"run {rec.generation}: {stable} -> {desired} "
                    f"({source})")
        if self.scheduler is not None:
            self.scheduler.sync_soon()
        return True

    def _publish(self, obj: Obj, t: Tracked, policy: Policy | None, run: RolloutRecord | None,
                 problem: str | None, now: datetime, *, deleting: bool = False) -> None:
        """Events for new ticks of the run, then the status (both through the writer)."""
        if run is not None:
            if t.reported is None or t.reported[0] != run.id:
                t.reported = (run.id, 0)
            if run.tick_seq > t.reported[1]:  # the store is read only when a tick landed
                ticks = self.store.ticks(run.id, since_seq=t.reported[1],
                                         limit=MAX_EVENTS_PER_PASS)
                for body in tick_events(obj, run, ticks):
                    self.writer.event(obj["metadata"]["namespace"], body)
                if ticks:
                    t.reported = (run.id, ticks[-1].seq)
        last = None
        if run is not None and run.tick_seq:
            if t.last_tick is None or t.last_tick[:2] != (run.id, run.tick_seq):
                newest = self.store.ticks(run.id, since_seq=run.tick_seq - 1)
                t.last_tick = ((run.id, run.tick_seq, newest[-1].reason,
                                newest[-1].scheduled_at) if newest else None)
            if t.last_tick is not None:
                last = (t.last_tick[2], t.last_tick[3])
        desired = self._desired(t, policy)[0] if policy is not None else None
        stable = (self._stable(t, policy, run, obj.get("status") or {}, desired)
                  if policy else None)
        canary = P.identity(run, "canary") if run is not None else None
        queued = None
        if (policy is not None and run is not None and run.active and desired not in (None,
                canary, stable) and _on_new_version(policy) == "queue"):
            queued = desired
        if run is not None and (t.plan is None or t.plan[0] != run.id):
            t.plan = (run.id, plan_length(run))
        view = PolicyView(
            generation=int(obj["metadata"].get("generation") or 0), run=run, canary=canary,
            stable=stable, last_decision=last, problem=problem,
            problem_reason="InvalidSpec" if policy is None else "CanaryRefUnreadable",
            deleting=deleting, queued=queued,
            reported_tick=t.reported[1] if t.reported and run else None,
            last_command=t.last_command, replica=self.replica,
            steps=t.plan[1] if t.plan is not None and run is not None else 0,
            waiting_for=(f"waiting for a new version (now {desired}, the stable one)"
                         if desired is not None else "waiting for the canaryRef's version"))
        status = policy_status(view, obj.get("status"), now)
        meta = obj["metadata"]
        self.writer.submit(meta["namespace"], meta["name"], status)

    def _event(self, obj: Obj, reason: str, message: str, *, warning: bool = False) -> None:
        meta = obj["metadata"]
        stamp = self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        self.writer.event(meta["namespace"], {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"],
                         "labels": {"app.kubernetes.io/managed-by": "canary-analyzer"}},
            "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta.get("uid")},
            "reason": reason, "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "canary-analyzer"},
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        })


def _on_new_version(policy: Policy) -> str:
    ref = policy.spec.target.canaryRef
    return ref.onNewVersion if ref is not None else "restart"
