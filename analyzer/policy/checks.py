"""`spec.checks`: error-rate, latency, absolute threshold and classic checks, and their names.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from analyzer.policy.base import (
    Duration,
    Model,
    at_most,
)

# --------------------------------------------------------------------------- checks


class ErrorRateCheck(Model):
    """Sequential, anytime-valid test of the canary/stable error-rate ratio."""

    type: Literal["error-rate"]
    name: str = "error-rate"
    tolerance: float = Field(
        default=0.25, gt=0, le=10,
        description="allowed relative increase: rollback when ratio > 1 + tolerance is proven",
    )
    weight: float = Field(default=1, gt=0, description="share of alpha (weighted Bonferroni)")
    negligibleRate: float = Field(
        default=0.001, ge=0, le=1,
        description="canary error rate below which a canary counts as non-inferior even "
        "when errors are too rare to compare",
    )


class LatencyCheck(Model):
    """Tail-exceedance tests at bucket bounds chosen per quantile from the stable baseline."""

    type: Literal["latency"]
    name: str = "latency"
    quantiles: list[Annotated[float, Field(gt=0, lt=1)]] = Field(default_factory=lambda: [0.99])
    tolerance: float = Field(
        default=0.25, gt=0, le=10,
        description="allowed relative increase of the share of requests slower than the bound",
    )
    sloBound: Annotated[Duration, at_most("1h")] | None = Field(
        default=None, description="test exceedance of this bound instead of the baseline's quantile"
    )
    distribution: bool = Field(default=False, description="also run the whole-distribution test")
    weight: float = Field(default=1, gt=0)


class ThresholdCheck(Model):
    """Absolute SLO check on the canary (Flagger-style), with a failure limit; a breach that
    stable shares in the same window holds instead of counting (whenStableBreaches)."""

    type: Literal["threshold"]
    name: str | None = None
    metric: Literal["error-rate", "latency"]
    quantile: float | None = Field(default=None, gt=0, lt=1, description="for metric latency")
    max: float = Field(
        ge=0, description="error-rate: percent of requests; latency: seconds"
    )
    failureLimit: int = Field(default=3, ge=1, description="consecutive failures before rollback")
    whenStableBreaches: Literal["hold", "rollback"] = Field(
        default="hold",
        description="when stable exceeds max too in the same window: hold (not the canary's "
        "fault; neither a failure nor a pass), or rollback (count it as a failure anyway)",
    )

    @model_validator(mode="after")
    def _q(self) -> ThresholdCheck:
        if self.metric == "latency" and self.quantile is None:
            raise ValueError("a latency threshold needs quantile (e.g. 0.99)")
        if self.metric == "error-rate" and self.max > 100:
            raise ValueError("error-rate max is a percent: at most 100")
        return self

    @property
    def check_name(self) -> str:
        if self.name:
            return self.name
        if self.metric == "latency":
            return f"threshold-latency-p{_qname(self.quantile or 0)}"
        return "threshold-error-rate"


class ClassicCheck(Model):
    """Fixed-horizon test (Mann-Whitney as Kayenta, Welch's t, Fisher's exact), reported for
    comparison; advisory only: repeated looks inflate false rollbacks."""

    type: Literal["classic"]
    name: str | None = None
    test: Literal["mann-whitney", "welch", "fisher"] = "mann-whitney"
    metric: Literal["error-rate", "latency"] = "error-rate"
    confidence: float = Field(default=0.98, gt=0.5, lt=1)
    tolerance: float = Field(default=0.25, ge=0)
    advisory: bool = Field(default=True, description="reported but never decides (must be true)")

    @field_validator("advisory")
    @classmethod
    def _advisory_only(cls, advisory: bool) -> bool:
        if not advisory:
            raise ValueError(
                "classic tests cannot gate (advisory: false): they test 'no difference', not "
                "'within tolerance', and are valid at one look only, so repeated every tick they "
                "roll back healthy canaries (a gating Fisher test: 14 % at a 0.5 % level); use "
                "the error-rate / latency checks, which test the tolerance at any number of "
                "looks, and remove advisory: false")
        return advisory

    @property
    def check_name(self) -> str:
        return self.name or f"classic-{self.test}-{self.metric}"


Check = Annotated[
    ErrorRateCheck | LatencyCheck | ThresholdCheck | ClassicCheck, Field(discriminator="type")
]


def _qname(q: float) -> str:
    return f"{q * 100:g}".replace(".", "_")


def check_name(check: ErrorRateCheck | LatencyCheck | ThresholdCheck | ClassicCheck) -> str:
    if isinstance(check, ThresholdCheck | ClassicCheck):
        return check.check_name
    return check.name
