"""The policy's value types (durations, percents, Kubernetes names, label values, URLs) and
the base model every policy block derives from: unknown keys are errors, values immutable.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)

from analyzer.util.times import format_duration, parse_duration

API_VERSION = "canary-analyzer.io/v1alpha1"
KIND = "RolloutPolicy"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d))+$",
            "description": "a duration: 30s, 5m, 1h, 1h30m, 250ms",
        }
    ),
]
Percent = Annotated[float, Field(ge=0, le=100)]


def at_most(limit: str) -> AfterValidator:
    """An upper bound for a Duration field, said the way the user writes durations."""
    bound = parse_duration(limit)

    def check(value: timedelta) -> timedelta:
        if value > bound:
            raise ValueError(f"expected a duration of at most {limit}, got "
                             f"{format_duration(value)}")
        return value

    return AfterValidator(check)
K8sName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="a Kubernetes object name (lower case, digits, '-' and '.')",
    ),
]
# Label values reach PromQL; anything is allowed here, the metric source escapes it.
LabelValue = Annotated[str, Field(min_length=1, max_length=256)]
HttpUrl = Annotated[str, Field(pattern=r"^https?://[^\s]+$", description="an http(s) URL")]


class Model(BaseModel):
    """Base for every policy block: unknown keys are errors, values are immutable."""

    # allow_inf_nan=False: `.inf` or `.nan` in any float field is a validation error, never a
    # value that breaks every tick later (a ZeroDivisionError, an infinite Poisson rate).
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True,
                              allow_inf_nan=False)


@functools.cache
def model_names() -> frozenset[str]:
    """The class names of every policy block. Pydantic puts union branch labels (a class name)
    into error paths; the loader drops them to show the user's own field path. Called after every
    block module is imported (lazily, at the first error)."""
    names: set[str] = set()
    todo: list[type] = [Model]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return frozenset(names)
