"""The RolloutPolicy's `status`: what the controller writes and `kubectl get` shows.

Pure data: the controller (analyzer/daemon/controller/) fills it, crd.py turns it into the CRD's
status schema, so both stay one definition. Conditions follow metav1.Condition (type, status,
reason, message, lastTransitionTime, observedGeneration).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: the status phases, in the words `kubectl get rolloutpolicies` shows
PolicyPhase = Literal["Waiting", "Pending", "Progressing", "Paused", "Promoting", "Succeeded",
                      "RolledBack", "Failed", "Invalid", "Deleting"]
ConditionType = Literal["Ready", "Progressing", "Promoted", "RolledBack", "Paused"]
CONDITION_TYPES: tuple[str, ...] = ("Ready", "Progressing", "Promoted", "RolledBack", "Paused")


class _Status(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Status):
    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    message: str = Field(default="", max_length=32768)
    lastTransitionTime: str = Field(description="RFC 3339, when status last changed")
    observedGeneration: int | None = Field(default=None, ge=0)


class CommandResult(_Status):
    id: str = Field(max_length=128)
    command: str = Field(max_length=16)
    result: str = Field(max_length=1024, description="queued, or why it was refused")


class PolicyStatus(_Status):
    """Where the policy's rollouts stand (written by the controller owning the policy)."""

    observedGeneration: int | None = Field(
        default=None, description="the metadata.generation this status describes")
    phase: PolicyPhase | None = None
    canary: str | None = Field(default=None, description="the version being rolled out")
    stable: str | None = Field(default=None, description="the version serving the rest of the "
                               "traffic; after a promotion, the promoted one")
    weight: int | None = Field(default=None, ge=0, le=100, description="the canary's traffic %")
    step: str | None = Field(default=None, description="step n/m of the current rollout")
    lastDecision: str | None = Field(default=None, max_length=4096,
                                     description="the last decision's sentence")
    lastDecisionTime: str | None = None
    message: str | None = Field(default=None, max_length=4096)
    run: int | None = Field(default=None, ge=1, description="the rollout's run number in the "
                            "engine's store (canary history NAME)")
    queuedVersion: str | None = Field(default=None, description="onNewVersion: queue: the "
                                      "version that starts when this rollout ends")
    reportedTick: int | None = Field(default=None, ge=0, description="the last tick of the run "
                                     "recorded as an Event (the controller resumes there)")
    lastCommand: CommandResult | None = None
    controller: str | None = Field(default=None, description="the engine replica owning it")
    conditions: list[Condition] = Field(default_factory=list, max_length=8)
