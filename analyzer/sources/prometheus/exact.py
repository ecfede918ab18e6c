"""Exact integer counts from counter samples: deltas, counter resets, series that appear or
vanish inside a window (see source.py's docstring for the method and its limits).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

LOOKBACK_MS = 5 * 60 * 1000  # Prometheus' default lookback delta: what an instant query sees



def label_text(group: Sequence[str], key: tuple[str, ...]) -> str:
    return "{" + ", ".join(f'{g}="{v}"' for g, v in zip(group, key, strict=True)) + "}"


def as_int(x: float) -> int | None:
    n = round(x)
    return n if abs(x - n) <= 1e-6 * max(1.0, abs(x)) else None


def parse_le(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return None if math.isnan(v) else v


def exact_from_raw(
    series: Sequence[Mapping[str, Any]], group: Sequence[str], t0s: int, t1s: int
) -> tuple[dict[tuple[str, ...], int], str | None]:
    """Per-series increments in (t0, t1]: deltas, post-reset values after a reset."""
    counts: dict[tuple[str, ...], int] = {}
    lookback_start = t0s - LOOKBACK_MS / 1000
    for s in series:
        labels = s.get("metric", {})
        key = tuple(labels.get(g, "") for g in group)
        pts = sorted((float(ts), float(v)) for ts, v in s.get("values", []))
        if any(math.isnan(v) or math.isinf(v) for _, v in pts):
            return {}, f"NaN/Inf sample in series {dict(labels)}"
        before = [v for ts, v in pts if ts <= t0s]
        inside = [v for ts, v in pts if t0s < ts <= t1s]
        recent = any(ts > lookback_start for ts, _ in pts)
        if not recent:
            continue  # the series had stopped before the window: not part of it
        prev: float | None = before[-1] if before else None
        total = 0.0
        for v in inside:
            if prev is None or v < prev:
                total += v  # new series, or a reset: the counter restarted from 0
            else:
                total += v - prev
            prev = v
        n = as_int(total)
        if n is None:
            return {}, f"counter increments {total} are not integers in series {dict(labels)}"
        counts[key] = counts.get(key, 0) + n
    return counts, None
