"""The store's side of a tick and of ownership, the engine's hot path (mixed into `Store`).

Owns:
- `tick_view`: ONE read statement per tick (the run's state, its judge state still encoded,
  and its oldest pending command, joined); on SQLite it takes no write lock (a deferred BEGIN),
  on PostgreSQL no transaction at all (one round trip);
- `commit_tick`: one write transaction, compare-and-set on (`tick_seq`, `fence_epoch`), with
  statements built once at import (only parameters change per tick) and the judge state
  encoded once for both the rollout and the tick row;
- fencing (analyzer/routers/fence.py): `claim` hands a replica taking a run over the next epoch
  of the store's one counter; a commit succeeds only under the run's current epoch, so a former
  owner can never commit after a take-over; `settle` records that the owner made a finished
  run's router agree with its final state.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Integer, String, Text, bindparam, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from analyzer.core.rollout import Command, Phase, RolloutState
from analyzer.daemon.store.codec import dumps, loads
from analyzer.daemon.store.errors import NotFound, StoreError, TickConflict
from analyzer.daemon.store.records import Claim, CommandRecord, RolloutBrief, TickRecord, TickView
from analyzer.daemon.store.tables import commands, events, fencing, rollouts, ticks, weight_changes
from analyzer.util.times import as_utc

_TERMINAL = [p.value for p in Phase if p.terminal]

# -- statements, built once ------------------------------------------------------------------

_PENDING = commands.alias("pending")
_OLDEST_PENDING = (select(func.min(commands.c.id))
                   .where(commands.c.rollout_id == rollouts.c.id,
                          commands.c.consumed_at.is_(None))
                   .scalar_subquery())
# The rollout and its oldest pending command in ONE statement (a left join on the oldest).
_VIEW = (select(rollouts.c.id, rollouts.c.name, rollouts.c.state, rollouts.c.tick_seq,
                rollouts.c.last_t1, rollouts.c.fence_epoch, rollouts.c.settled_seq,
                rollouts.c.judge_state, rollouts.c.policy_rev, _PENDING.c.id.label("cmd_id"),
                _PENDING.c.command.label("cmd"), _PENDING.c.actor.label("cmd_actor"),
                _PENDING.c.requested_at.label("cmd_at"))
         .select_from(rollouts.outerjoin(_PENDING, _PENDING.c.id == _OLDEST_PENDING))
         .where(rollouts.c.id == bindparam("p_id")))


def _advance(fenced: bool) -> Any:
    """UPDATE rollouts to tick n+1 if it is at tick n (and, fenced, under epoch e). A NULL
    judge state, window end or finish time leaves the stored one (one statement for all)."""
    where = [rollouts.c.id == bindparam("p_id"), rollouts.c.tick_seq == bindparam("p_prev")]
    if fenced:
        where.append(rollouts.c.fence_epoch == bindparam("p_epoch", type_=Integer))
    return update(rollouts).where(*where).values(
        tick_seq=bindparam("p_seq"), phase=bindparam("p_phase"), step=bindparam("p_step"),
        weight=bindparam("p_weight"), state=bindparam("p_state"), reason=bindparam("p_reason"),
        owner=bindparam("p_owner"), updated_at=bindparam("p_now"),
        judge_state=func.coalesce(bindparam("p_judge", type_=Text), rollouts.c.judge_state),
        last_t1=func.coalesce(bindparam("p_t1", type_=rollouts.c.last_t1.type),
                              rollouts.c.last_t1),
        finished_at=func.coalesce(bindparam("p_finished", type_=rollouts.c.finished_at.type),
                                  rollouts.c.finished_at),
    )


_ADVANCE_FENCED = _advance(True)
_ADVANCE = _advance(False)
_INSERT_TICK = insert(ticks)
_INSERT_WEIGHT = insert(weight_changes)
_INSERT_EVENT = insert(events)
_CONSUME = (update(commands)
            .where(commands.c.id == bindparam("p_cid"), commands.c.consumed_at.is_(None))
            .values(consumed_at=bindparam("p_now"), consumed_seq=bindparam("p_seq"),
                    result=bindparam("p_result", type_=String)))


class TickPath:
    """Mixed into `Store`, which provides the transactions."""

    def _tx(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    def _read_tx(self, *, single: bool = False) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    # -- reading -------------------------------------------------------------------------

    def tick_view(self, rollout_id: int) -> TickView:
        with self._read_tx(single=True) as conn:
            row = conn.execute(_VIEW, {"p_id": rollout_id}).first()
        if row is None:
            raise NotFound(f"no rollout with id {rollout_id}")
        command = (CommandRecord(row.cmd_id, rollout_id, Command(row.cmd), row.cmd_actor,
                                 as_utc(row.cmd_at))  # type: ignore[arg-type]
                   if row.cmd_id is not None else None)
        return TickView(
            id=row.id, name=row.name, state=RolloutState.from_json(loads(row.state)),
            tick_seq=row.tick_seq, last_t1=as_utc(row.last_t1), fence_epoch=row.fence_epoch,
            settled_seq=row.settled_seq, judge_state_text=row.judge_state, command=command,
            policy_rev=row.policy_rev)

    def schedulable(self) -> list[RolloutBrief]:
        """Every run a scheduler must own: the active ones and the finished ones not settled
        yet (one light query: no policy or judge state is decoded)."""
        q = (select(rollouts.c.id, rollouts.c.name, rollouts.c.phase, rollouts.c.tick_seq,
                    rollouts.c.settled_seq)
             .where(rollouts.c.phase.not_in(_TERMINAL)
                    | rollouts.c.settled_seq.is_(None)
                    | (rollouts.c.settled_seq < rollouts.c.tick_seq))
             .order_by(rollouts.c.id))
        with self._read_tx() as conn:
            rows = conn.execute(q).all()
        return [RolloutBrief(r.id, r.name, Phase(r.phase), r.tick_seq, r.settled_seq)
                for r in rows]

    def fence_epoch(self, rollout_id: int) -> int:
        """The epoch of the run's current owner (a lease check where no lock exists)."""
        with self._read_tx() as conn:
            epoch = conn.execute(select(rollouts.c.fence_epoch)
                                 .where(rollouts.c.id == rollout_id)).scalar()
        if epoch is None:
            raise NotFound(f"no rollout with id {rollout_id}")
        return int(epoch)

    # -- ownership -----------------------------------------------------------------------

    def claim(self, rollout_id: int, replica: str) -> Claim:
        """Take the run over: the next epoch of the store's counter becomes the run's (call it
        while holding the run's lock). Every earlier owner's commits fail from now on."""
        with self._tx() as conn:
            row = conn.execute(update(fencing).where(fencing.c.id == 1)
                               .values(last_epoch=fencing.c.last_epoch + 1)
                               .returning(fencing.c.last_epoch, fencing.c.store_id)).first()
            if row is None:
                raise StoreError("the store has no fencing row; run `canary run` (it migrates)")
            res = conn.execute(update(rollouts).where(rollouts.c.id == rollout_id)
                               .values(fence_epoch=row.last_epoch, owner=replica[:128]))
            if res.rowcount != 1:
                raise NotFound(f"no rollout with id {rollout_id}")
        return Claim(rollout_id, int(row.last_epoch), str(row.store_id))

    def settle(self, rollout_id: int, seq: int, epoch: int | None) -> bool:
        """Record that the owner (under `epoch`) made the finished run's router agree with
        tick `seq`'s state; False when the run moved on or was taken over meanwhile."""
        where = [rollouts.c.id == rollout_id, rollouts.c.tick_seq == seq]
        if epoch is not None:
            where.append(rollouts.c.fence_epoch == epoch)
        with self._tx() as conn:
            res = conn.execute(update(rollouts).where(*where).values(settled_seq=seq))
        return bool(res.rowcount == 1)

    # -- committing ----------------------------------------------------------------------

    def commit_tick(self, rec: TickRecord) -> None:
        """Commit one tick atomically; TickConflict when tick `rec.seq` exists already, or the
        run was taken over (its fence epoch is no longer `rec.epoch`)."""
        now = rec.scheduled_at
        after, before = rec.state_after, rec.state_before
        judge = dumps(rec.judge_state)  # once, for the rollout and the tick row
        decision = rec.decision or {}
        detail = {k: v for k, v in decision.items() if k != "checks"} if decision else None
        phase_after = after.phase.value
        advance = {
            "p_id": rec.rollout_id, "p_prev": rec.seq - 1, "p_epoch": rec.epoch,
            "p_seq": rec.seq, "p_phase": phase_after, "p_step": after.step,
            "p_weight": after.traffic.weight, "p_state": dumps(after.to_json()),
            "p_reason": after.reason, "p_owner": rec.replica, "p_now": now, "p_judge": judge,
            "p_t1": rec.t1,
            "p_finished": now if after.phase.terminal and not before.phase.terminal else None,
        }
        tick_row = {
            "rollout_id": rec.rollout_id, "seq": rec.seq, "scheduled_at": now, "t0": rec.t0,
            "t1": rec.t1, "phase_before": before.phase.value, "phase_after": phase_after,
            "step_before": before.step, "step_after": after.step,
            "weight_before": before.traffic.weight, "weight_after": after.traffic.weight,
            "action": rec.action, "decision": decision.get("decision"), "reason": rec.reason,
            "samples": dumps(rec.samples), "verdicts": dumps(decision.get("checks", [])),
            "decision_detail": dumps(detail), "judge_state": judge, "gate": dumps(rec.gate),
            "command": rec.command, "replica": rec.replica, "fence_epoch": rec.epoch,
            "duration_ms": rec.duration_ms, "created_at": datetime.now(UTC),
        }
        try:
            with self._tx() as conn:
                stmt = _ADVANCE_FENCED if rec.epoch is not None else _ADVANCE
                if conn.execute(stmt, advance).rowcount != 1:
                    raise TickConflict(self._conflict(conn, rec))
                conn.execute(_INSERT_TICK, tick_row)
                if before.traffic != after.traffic:
                    conn.execute(_INSERT_WEIGHT, {
                        "rollout_id": rec.rollout_id, "tick_seq": rec.seq, "at": now,
                        "weight_before": before.traffic.weight,
                        "weight_after": after.traffic.weight,
                        "traffic": dumps(after.traffic.to_json()),
                        "cause": rec.weight_cause or rec.action})
                for kind, message in rec.events:
                    conn.execute(_INSERT_EVENT, {"rollout_id": rec.rollout_id,
                                                 "tick_seq": rec.seq, "at": now, "kind": kind,
                                                 "message": message})
                if rec.command_id is not None:
                    res = conn.execute(_CONSUME, {"p_cid": rec.command_id, "p_now": now,
                                                  "p_seq": rec.seq, "p_result": rec.reason})
                    if res.rowcount != 1:
                        raise TickConflict(f"command {rec.command_id} was already consumed")
        except IntegrityError:
            raise TickConflict(
                f"tick {rec.rollout_id}:{rec.seq} was already committed elsewhere") from None

    @staticmethod
    def _conflict(conn: Connection, rec: TickRecord) -> str:
        """Why the compare-and-set failed: another tick, or another owner."""
        row = conn.execute(select(rollouts.c.tick_seq, rollouts.c.fence_epoch, rollouts.c.owner)
                           .where(rollouts.c.id == rec.rollout_id)).first()
        if row is None:
            return f"rollout {rec.rollout_id} does not exist"
        if rec.epoch is not None and row.fence_epoch != rec.epoch:
            return (f"rollout {rec.rollout_id} was taken over by {row.owner} (fence epoch "
                    f"{row.fence_epoch}, ours {rec.epoch}); tick {rec.seq} not committed")
        return f"tick {rec.rollout_id}:{rec.seq} was already committed elsewhere"
