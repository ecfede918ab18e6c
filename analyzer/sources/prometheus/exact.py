"""Exact integer counts from counter samples: deltas, counter resets, series that appear or
vanish inside a window: the fast query's text and its answer, and the count from raw samples
(see source.py's docstring for the method and its limits). Pure: no I/O.
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


# ---------------------------------------------------------------------- the fast query

PART_LABEL = "canary_part"  # label marking the parts of the fast query


def _union(selectors: Sequence[str], form: str) -> str:
    """`form` (with `{s}`) applied to each selector, joined by `or`: a metric selected by
    several disjoint alternatives (error matchers) is their union, each series once."""
    parts = [form.format(s=s) for s in selectors]
    return parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"


def fast_query(selectors: Sequence[str], group: Sequence[str], window_ms: int) -> str:
    """One instant query at t1 with five parts per group: the sums at t1 and at t0, the counter
    resets around the window (groups with at least one only), and how many series vanished
    or appeared in it (groups with any only: `count` of an empty set has no row)."""
    by = f"by ({', '.join(group)})"
    now = _union(selectors, "{s}")
    then = _union(selectors, f"{{s}} offset {window_ms}ms")
    resets = _union(selectors, f"resets({{s}}[{window_ms + LOOKBACK_MS}ms])")
    during = _union(selectors, f"last_over_time({{s}}[{window_ms}ms])")

    def part(name: str, expr: str) -> str:
        return f'label_replace({expr}, "{PART_LABEL}", "{name}", "", "")'

    return " or ".join([
        part("t1", f"sum {by} ({now})"),
        part("t0", f"sum {by} ({then})"),
        part("resets", f"sum {by} ({resets}) > 0"),
        part("gone", f"count {by} (({then} or {during}) unless {now})"),
        part("new", f"count {by} ({now} unless {then})"),
    ])


def rows_by_step(series: Sequence[Mapping[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """A range query's answer as the instant answers at each of its steps (by whole second):
    a range query evaluates its expression at every step exactly as an instant query at that
    time would, so each step's rows feed `counts_from_fast` as they are."""
    steps: dict[int, list[dict[str, Any]]] = {}
    for s in series:
        metric = s.get("metric", {})
        for ts, v in s.get("values", ()):
            steps.setdefault(math.floor(float(ts)), []).append({"metric": metric, "value": [ts, v]})
    return steps


def counts_from_fast(
    rows: Sequence[Mapping[str, Any]], group: Sequence[str]
) -> tuple[dict[tuple[str, ...], int] | None, str | None]:
    """Exact counts per group from the fast query's answer: (counts, None); (None, None) when
    resets or series churn need the raw samples; (None, why) for values no counter has."""
    parts: dict[str, dict[tuple[str, ...], float]] = {}
    for row in rows:  # thousands of rows in a shared answer: no copies, no generators
        labels = row.get("metric", {})
        key = tuple([labels.get(g, "") for g in group])
        part = parts.get(labels.get(PART_LABEL, ""))
        if part is None:
            part = parts[labels.get(PART_LABEL, "")] = {}
        part[key] = float(row["value"][1])
    at0, at1 = parts.get("t0", {}), parts.get("t1", {})
    for side in (at0, at1):
        for key, v in side.items():
            if math.isnan(v) or math.isinf(v):
                return None, f"value {v} for {label_text(group, key)}"
    if any(v > 0 for p in ("resets", "gone", "new") for v in parts.get(p, {}).values()):
        return None, None
    counts: dict[tuple[str, ...], int] = {}
    for key in set(at0) | set(at1):
        if key not in at1:
            return None, None  # vanished group: only the raw samples can say what it did
        delta = at1[key] - at0.get(key, 0.0)
        if delta < 0:
            return None, None
        n = as_int(delta)
        if n is None:
            return None, f"counter delta {delta} is not an integer (is this a counter of requests?)"
        counts[key] = n
    return counts, None
