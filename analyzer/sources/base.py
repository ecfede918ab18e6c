"""The MetricSource protocol every metric provider implements."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from analyzer.core.types import Samples


@runtime_checkable
class MetricSource(Protocol):
    """Returns per-version counts for a window [t0, t1).

    Never raises for data problems (source down, timeout, bad query, missing series): it
    returns `Samples` with `no_data_reason` set and the queries it ran. It never makes up zeros.
    `canary_weight` is the weight the router was told, passed through for the sample-ratio check.
    """

    def fetch(self, t0: datetime, t1: datetime, canary_weight: float | None = None) -> Samples: ...
