"""`spec.strategy` (steps, blue-green, A/B, mirror, pauses) and `spec.analysis` (timing).
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from analyzer.policy.base import (
    Duration,
    Model,
    Percent,
    at_most,
)
from analyzer.util.times import format_duration

# --------------------------------------------------------------------------- strategy


class PauseSpec(Model):
    duration: Annotated[Duration, at_most("30d")] | None = Field(
        default=None, description="wait this long (at most 30d); absent: wait for `canary resume`"
    )


class PauseStep(Model):
    pause: PauseSpec


Step = Annotated[int, Field(ge=0, le=100)] | PauseStep


class HeaderMatch(Model):
    name: str = Field(pattern=r"^[A-Za-z0-9-]+$", description="HTTP header name")
    value: str | None = Field(
        default=None, min_length=1, description="exact value that selects the canary"
    )
    regex: str | None = Field(
        default=None, min_length=1,
        description="regular expression (RE2/PCRE) the value must match; Istio, Gateway API "
        "and NGINX Ingress (canary-by-header-pattern)",
    )

    @model_validator(mode="after")
    def _one(self) -> HeaderMatch:
        if (self.value is None) == (self.regex is None):
            raise ValueError("give exactly one of value or regex")
        return self


class CookieMatch(Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="cookie name")


class Match(Model):
    header: HeaderMatch | None = None
    cookie: CookieMatch | None = None

    @model_validator(mode="after")
    def _one(self) -> Match:
        if (self.header is None) == (self.cookie is None):
            raise ValueError("give exactly one of header or cookie")
        return self


class Strategy(Model):
    """How traffic reaches the canary.

    - canary: weight `steps` (e.g. [5, 10, 25, 50, 100], `{pause: {}}` entries allowed) or
      `stepWeight` + `maxWeight`;
    - blue-green: the preview gets no live traffic (or `mirrorPercent` of it), then 0 -> 100;
    - ab: only requests matching `match` go to the canary; analysis, then promote to 100;
    - mirror: the canary gets a copy of `mirrorPercent` of live traffic; analysis only.
    """

    type: Literal["canary", "blue-green", "ab", "mirror"] = "canary"
    steps: list[Step] | None = Field(default=None, max_length=100)
    stepWeight: int | None = Field(default=None, ge=1, le=100)
    maxWeight: int | None = Field(default=None, ge=1, le=100)
    match: Match | None = None
    mirrorPercent: Percent | None = None
    ramp: Literal["strict", "risk-budgeted"] = Field(
        default="strict",
        description="strict: every step advances once the canary is shown within tolerance; "
        "risk-budgeted (low traffic): intermediate steps advance once a severe regression "
        "(severeRatio) is excluded, the last step still needs the tolerance (docs/statistics.md)",
    )
    severeRatio: float = Field(
        default=2.0, gt=1, le=100,
        description="risk-budgeted ramp: the error-rate (or slow-share) ratio a canary must be "
        "shown to stay below before it leaves an intermediate step; above every check's "
        "1 + tolerance",
    )

    @model_validator(mode="after")
    def _shape(self) -> Strategy:
        if self.type == "canary":
            if self.steps is None and self.stepWeight is None:
                raise ValueError("a canary strategy needs steps or stepWeight (with maxWeight)")
            if self.steps is not None and self.stepWeight is not None:
                raise ValueError("give steps or stepWeight/maxWeight, not both")
            if self.steps is not None:
                weights = [s for s in self.steps if isinstance(s, int)]
                if not weights:
                    raise ValueError("steps need at least one weight")
                for prev, cur in itertools.pairwise(weights):
                    if cur <= prev:
                        raise ValueError(
                            f"weights in steps must increase strictly: {cur} follows {prev}"
                        )
        else:
            if self.steps is not None or self.stepWeight is not None:
                raise ValueError(f"steps and stepWeight apply to type canary, not {self.type}")
        if self.stepWeight is not None and self.maxWeight is None:
            raise ValueError("stepWeight needs maxWeight")
        if self.maxWeight is not None and self.stepWeight is None:
            raise ValueError("maxWeight needs stepWeight")
        if self.type == "ab" and self.match is None:
            raise ValueError("an ab strategy needs match.header or match.cookie")
        if self.type != "ab" and self.match is not None:
            raise ValueError("match applies to type ab only")
        if self.type == "mirror" and self.mirrorPercent is None:
            raise ValueError("a mirror strategy needs mirrorPercent (e.g. 100)")
        if self.mirrorPercent is not None and self.type not in ("mirror", "blue-green"):
            raise ValueError("mirrorPercent applies to types mirror and blue-green")
        if self.ramp != "strict" and self.type != "canary":
            raise ValueError(f"ramp: {self.ramp} applies to type canary (weight steps), not "
                             f"{self.type}")
        return self

    def weight_steps(self) -> list[int | PauseStep]:
        """The ordered steps the rollout walks, each a canary weight or a pause.

        canary: the configured steps (or stepWeight..maxWeight), always ending at 100: when
        the steps stop below 100, a final full promotion to 100 is appended (as Argo Rollouts
        does). blue-green and ab: analysis at weight 0 (preview / header route), then 100.
        mirror: analysis at weight 0 only; the rollout succeeds without moving live traffic.
        """
        if self.type == "canary":
            if self.steps is not None:
                steps: list[int | PauseStep] = list(self.steps)
            else:
                assert self.stepWeight is not None and self.maxWeight is not None
                steps = list(range(self.stepWeight, self.maxWeight + 1, self.stepWeight))
                if steps[-1] != self.maxWeight:
                    steps.append(self.maxWeight)
            weights = [s for s in steps if isinstance(s, int)]
            if weights[-1] != 100:
                steps.append(100)
            return steps
        if self.type == "mirror":
            return [0]
        return [0, 100]


# --------------------------------------------------------------------------- analysis timing


class Analysis(Model):
    """When ticks happen and how long a step may take."""

    interval: Annotated[Duration, at_most("1h")] = Field(
        default=timedelta(seconds=30), description="time between ticks (1s to 1h)"
    )
    window: Annotated[Duration, at_most("1h")] | None = Field(
        default=None, description="data window of one tick; default: the interval"
    )
    minStepDuration: Annotated[Duration, at_most("30d")] = Field(
        default=timedelta(minutes=2), description="soak time at each step before promotion"
    )
    maxStepDuration: Annotated[Duration, at_most("30d")] = Field(
        default=timedelta(minutes=30),
        description="after this, an inconclusive step takes decision.onInconclusive",
    )
    baselineWindow: Annotated[Duration, at_most("1d")] = Field(
        default=timedelta(minutes=10),
        description="pre-rollout window of stable traffic, read interval by interval: latency "
        "bucket bounds, and how bursty the service's errors and latency are",
    )
    burstWarmup: int = Field(
        default=0, ge=0, le=100,
        description="ticks at the start of the rollout during which one tick's regression "
        "evidence is capped at half the rollback threshold: a defence against bursts the "
        "baseline did not show, at the price of slower rollbacks of severe regressions "
        "(docs/statistics.md)",
    )

    @field_validator("window")
    @classmethod
    def _no_overlap(cls, window: timedelta | None, info: ValidationInfo) -> timedelta | None:
        interval = info.data.get("interval")
        if window is not None and interval is not None and window > interval:
            ticks = window.total_seconds() / interval.total_seconds()
            raise ValueError(
                f"analysis.window ({format_duration(window)}) exceeds analysis.interval "
                f"({format_duration(interval)}): each request would be counted in "
                f"{ticks:.3g} ticks, and the sequential tests (and a threshold's consecutive "
                "failures) assume each tick's data is new; use a window of at most the interval "
                "(or leave window out)")
        return window

    @model_validator(mode="after")
    def _order(self) -> Analysis:
        if self.interval.total_seconds() < 1:
            raise ValueError("interval must be at least 1s")
        if self.maxStepDuration < self.minStepDuration:
            raise ValueError("maxStepDuration must be at least minStepDuration")
        return self

    @property
    def effective_window(self) -> timedelta:
        return self.window or self.interval
