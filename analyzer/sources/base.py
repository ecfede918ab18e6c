"""The MetricSource protocol every metric provider implements, and `fetch_windows`, the one way
to read several consecutive windows from any source."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from analyzer.core.types import Samples


@runtime_checkable
class MetricSource(Protocol):
    """Returns per-version counts for a window [t0, t1).

    Never raises for data problems (source down, timeout, bad query, missing series): it
    returns `Samples` with `no_data_reason` set and the queries it ran. It never makes up zeros.
    `canary_weight` is the weight the router was told, passed through for the sample-ratio check.
    A source may also read consecutive windows at once (`fetch_intervals(windows,
    canary_weight)` returning one Samples per window: the Prometheus source, one range query
    per metric); `fetch_windows` uses it when it is there.
    """

    def fetch(self, t0: datetime, t1: datetime, canary_weight: float | None = None) -> Samples: ...


def fetch_windows(source: MetricSource, windows: Sequence[tuple[datetime, datetime]],
                  canary_weight: float | None = None) -> Iterator[Samples]:
    """The samples of each window, in order: all at once when the source can
    (`fetch_intervals`), else one `fetch` at a time, lazily (a caller that stops at a failed
    window asks for no more)."""
    many = getattr(source, "fetch_intervals", None)
    if many is not None:
        yield from many(windows, canary_weight)
        return
    for t0, t1 in windows:
        yield source.fetch(t0, t1, canary_weight=canary_weight)
