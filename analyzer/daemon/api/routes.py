"""The API's routes: rollouts (read, and the manual commands behind the token) and the
operational endpoints (/metrics, /healthz, /readyz).

Layout: everything about rollouts lives under `/rollouts` (one APIRouter), reads as GET and
actions as POST on a sub-path, so starting a rollout (`POST /rollouts`, issue 19) fits in
beside them. Answers are the pydantic models of models.py; refusals are `ErrorBody` (app.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from analyzer.core.rollout import Command
from analyzer.daemon.api.auth import require_token
from analyzer.daemon.api.context import ApiContext
from analyzer.daemon.api.links import render_links
from analyzer.daemon.api.models import (
    MAX_SEQ,
    MAX_TICKS_PER_PAGE,
    NAME_PATTERN,
    CommandAccepted,
    ErrorBody,
    Rollout,
    RolloutDetail,
    RolloutList,
    Series,
    StartRollout,
    Status,
    TickList,
)
from analyzer.daemon.series import rollout_series
from analyzer.daemon.store import InvalidCommand, LastDecision, RolloutRecord, Store
from analyzer.policy import Policy
from analyzer.util.redaction import redact_policy
from analyzer.util.times import iso

#: how far back the detail looks for the judge's latest power estimate
POWER_LOOKBACK_TICKS = 50


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    what = {400: "a parameter out of range or of the wrong type (the field is named)",
            401: "missing or wrong bearer token", 403: "write API disabled (no token configured)",
            404: "no such rollout or run", 409: "the rollout cannot take this command now "
            "(e.g. it has finished)", 503: "database unreachable, or the request's deadline "
            "passed, or too many requests in flight (retry)"}
    return {c: {"model": ErrorBody, "description": what[c]} for c in codes}


def api(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.api
    return ctx


Ctx = Annotated[ApiContext, Depends(api)]
RolloutName = Annotated[str, Path(description="the policy's name", pattern=NAME_PATTERN,
                                  max_length=253)]
Generation = Annotated[int | None, Query(ge=1, le=MAX_SEQ, description="a past run (default: "
                                                                          "the newest)")]

rollouts = APIRouter(prefix="/rollouts", tags=["rollouts"])
ops = APIRouter(tags=["operations"])


# --------------------------------------------------------------------------- reads


def steps_of(policy: dict[str, Any]) -> list[str]:
    try:
        steps = Policy.model_validate(policy).spec.strategy.weight_steps()
    except ValueError:
        return []
    out = []
    for s in steps:
        if isinstance(s, int):
            out.append(f"{s}%")
        else:
            d = s.pause.duration
            out.append(f"pause {d}" if d is not None else "pause")
    return out


def summary(rec: RolloutRecord, last: LastDecision | None) -> dict[str, Any]:
    target = (rec.policy.get("spec") or {}).get("target") or {}
    out = rec.to_json()
    out.update(namespace=str(target.get("namespace") or "default"),
               service=str(target.get("service") or ""), steps=steps_of(rec.policy),
               last_decision=last.to_json() if last else None)
    return out


def summaries(store: Store, recs: list[RolloutRecord]) -> list[dict[str, Any]]:
    """The rows of the rollouts table (two queries whatever the number of rollouts)."""
    last = store.last_decisions([r.id for r in recs])
    return [summary(r, last.get(r.id)) for r in recs]


def _list(store: Store, all_runs: bool) -> list[dict[str, Any]]:
    return summaries(store, store.list_rollouts(all_generations=all_runs))


def _run(store: Store, name: str, generation: int | None) -> RolloutRecord:
    return store.latest(name) if generation is None else store.run(name, generation)


@rollouts.get("", response_model=RolloutList, responses=_errors(400, 503),
              summary="Every policy's newest run (with all_runs: every run)")
async def list_rollouts(ctx: Ctx, all_runs: Annotated[bool, Query(
        description="also the past runs of each policy")] = False) -> dict[str, Any]:
    return {"rollouts": await ctx.call(_list, ctx.store, all_runs)}


def _detail(store: Store, name: str, generation: int | None, ctx: ApiContext) -> dict[str, Any]:
    rec = _run(store, name, generation)
    out = summary(rec, store.last_decisions([rec.id]).get(rec.id))
    out["pending_commands"] = [
        {"id": c.id, "command": str(c.command), "actor": c.actor,
         "requested_at": iso(c.requested_at)} for c in store.pending_commands(rec.id)]
    out["weight_changes"] = [
        {"tick": w.tick_seq, "at": iso(w.at), "from": w.weight_before, "to": w.weight_after,
         "cause": w.cause} for w in store.weight_changes(rec.id)]
    out["events"] = [{"tick": e.tick_seq, "at": iso(e.at), "kind": e.kind, "message": e.message}
                     for e in store.events(rec.id)[-50:]]
    out["policy"] = redact_policy(rec.policy)
    out["links"] = render_links(ctx.links, {**out, "stable": rec.stable_version,
                                            "canary": rec.canary_version})
    recent = store.ticks(rec.id, since_seq=max(0, rec.tick_seq - POWER_LOOKBACK_TICKS))
    power = next(((t.seq, t.decision_detail["time_needed_seconds"]) for t in reversed(recent)
                  if t.decision_detail and t.decision_detail.get("time_needed_seconds")
                  is not None), None)
    out["power"] = {"tick": power[0], "seconds": power[1]} if power else None
    out["runs"] = store.generations(rec.name)
    return out


@rollouts.get("/{name}", response_model=RolloutDetail, responses=_errors(400, 404, 503),
              summary="One run: state, pending commands, weight changes, events, policy "
                      "(secrets redacted), links out, power estimate")
async def get_rollout(ctx: Ctx, name: RolloutName, generation: Generation = None
                      ) -> dict[str, Any]:
    return await ctx.call(_detail, ctx.store, name, generation, ctx)


def _ticks(store: Store, name: str, generation: int | None, since: int, limit: int | None,
           full: bool) -> dict[str, Any]:
    rec = _run(store, name, generation)
    rows = store.ticks(rec.id, since_seq=since, limit=limit)
    return {"rollout": rec.name, "rollout_id": rec.id,
            "ticks": [t.to_json(full=full) for t in rows]}


@rollouts.get("/{name}/ticks", response_model=TickList, response_model_exclude_unset=True,
              responses=_errors(400, 404, 503), summary="The decision log, oldest first")
async def get_ticks(
    ctx: Ctx, name: RolloutName, generation: Generation = None,
    since: Annotated[int, Query(ge=0, le=MAX_SEQ, description="only ticks after this one")] = 0,
    limit: Annotated[int | None, Query(ge=1, le=MAX_TICKS_PER_PAGE,
                                       description="at most this many ticks")] = None,
    full: Annotated[bool, Query(description="with samples, judge state and gate answers")
                    ] = False,
) -> dict[str, Any]:
    return await ctx.call(_ticks, ctx.store, name, generation, since, limit, full)


def _series(store: Store, name: str, generation: int | None) -> dict[str, Any]:
    rec = _run(store, name, generation)
    return {"rollout": rec.name, "rollout_id": rec.id,
            **rollout_series(store.ticks(rec.id)).to_json()}


@rollouts.get("/{name}/series", response_model=Series, responses=_errors(400, 404, 503),
              summary="The run's ticks as chart series (what the dashboard draws)")
async def get_series(ctx: Ctx, name: RolloutName, generation: Generation = None
                     ) -> dict[str, Any]:
    return await ctx.call(_series, ctx.store, name, generation)


# --------------------------------------------------------------------------- start


def _start(store: Store, body: StartRollout) -> dict[str, Any]:
    policy = store.latest(body.name).load_policy()
    try:
        rec = store.create_rollout(policy, datetime.now(UTC), canary_version=body.canaryVersion)
    except ValueError as e:  # e.g. the canary version is the stable one
        raise InvalidCommand(f"canaryVersion {body.canaryVersion!r}: {e}") from None
    return summary(rec, None)


@rollouts.post("", status_code=201, response_model=Rollout, dependencies=[
    Depends(require_token)], responses=_errors(400, 401, 403, 404, 409, 503),
    openapi_extra={"security": [{"bearer": []}]},
    summary="Start a rollout of a known policy (what a CD pipeline calls; needs the bearer "
            "token): the same version again answers the active run, another version while one "
            "runs is a 409; after a promotion the promoted version is the stable one")
async def start_rollout(ctx: Ctx, body: StartRollout) -> dict[str, Any]:
    out = await ctx.call(_start, ctx.store, body)
    if ctx.scheduler is not None:
        ctx.scheduler.sync_soon()
    return out


# --------------------------------------------------------------------------- commands


def _command_route(command: Command) -> None:
    async def queue(request: Request, ctx: Ctx, name: RolloutName) -> dict[str, Any]:
        client = request.client.host if request.client else "?"
        rec, cid = await ctx.call(ctx.store.add_command, name, command, f"api ({client})",
                                  datetime.now(UTC))
        poked = bool(ctx.scheduler.poke(rec.id)) if ctx.scheduler is not None else False
        return {"rollout": name, "rollout_id": rec.id, "command": str(command),
                "command_id": cid, "status": "queued",
                "applies": "now" if poked else "at the next tick"}

    queue.__name__ = f"post_{command}"
    rollouts.add_api_route(
        f"/{{name}}/{command}", queue, methods=["POST"], status_code=202,
        response_model=CommandAccepted, dependencies=[Depends(require_token)],
        responses=_errors(400, 401, 403, 404, 409, 503), openapi_extra={
            "security": [{"bearer": []}]},
        summary=f"Queue a manual {command} for the newest run (needs the bearer token)")


for _command in Command:
    _command_route(_command)


# --------------------------------------------------------------------------- operations


@ops.get("/metrics", response_class=Response, summary="The engine's metrics (Prometheus text "
         "format)", responses={200: {"content": {CONTENT_TYPE_LATEST: {}},
                                     "description": "text exposition format"}})
async def metrics(ctx: Ctx) -> Response:
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@ops.get("/healthz", response_model=Status, summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _ready(ctx: ApiContext) -> tuple[bool, str]:
    if not ctx.store.ping():
        return False, "database unreachable"
    if ctx.scheduler is not None and not ctx.scheduler.running:
        return False, "scheduler not running"
    return True, "ready"


@ops.get("/readyz", response_model=Status, summary="Readiness: database reachable and "
         "scheduler running", responses={503: {"model": Status, "description": "not ready"}})
async def readyz(ctx: Ctx, response: Response) -> dict[str, str]:
    ok, why = await ctx.call(_ready, ctx)
    response.status_code = 200 if ok else 503
    return {"status": why}
