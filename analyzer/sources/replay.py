"""Recorded intervals: the replay JSONL format read into `Samples`, and a source that serves them.

One JSON object per line, one line per interval, oldest first (docs/statistics.md):

    {"t": "2026-03-01T10:00:00Z", "canary_weight": 5,
     "stable": {"requests": 11873, "errors": 12, "latency": {"le": [0.05, ..., "+Inf"],
                                                            "counts": [9120, ..., 11873]}},
     "canary": {"requests": 618, "errors": 2}}

`t` is the end of the interval (an optional `t0` gives its start; otherwise the previous line's
`t`, and for the first line `t` minus the gap to the second line). Counts are for that interval
only; latency counts are cumulative by `le` as Prometheus reports them, the `+Inf` count equal to
`requests`. `stable`/`canary` may be null (no series) and `no_data_reason` may say why a tick
had no usable data. An optional `tick` is the engine's tick number of the interval (`canary
export` writes it; `canary history` shows the same number); tools name an interval by it, and by
its position in the file (1, 2, ...) when it is absent. Blank lines and lines starting with `#`
are skipped.

Optional baseline lines, before the first analysed line, carry the stable version's traffic
before the rollout, one per analysis interval (what the engine reads over
`analysis.baselineWindow`, and `canary export` writes); they are not ticks:

    {"baseline": true, "t0": "2026-03-01T09:50:00Z", "t": "2026-03-01T09:50:30Z",
     "stable": {"requests": 11873, "errors": 12, "latency": {...}}}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from analyzer.core.types import Histogram, Samples, VersionSample
from analyzer.util.times import iso, parse_timestamp

DEFAULT_INTERVAL = timedelta(seconds=30)
#: The shortest interval a line may cover: the engine's shortest `analysis.interval`.
MIN_INTERVAL = timedelta(seconds=1)


class ReplayError(Exception):
    """A bad replay file: names the file, the line and what is wrong."""

    def __init__(self, file: str, line: int | None, message: str) -> None:
        self.file = file
        self.line = line
        self.message = message
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class ReplayLine:
    """One interval: its line in the file, its counts, and the engine's tick number when the
    file says (`canary export` writes it); `baseline`: the stable's traffic before the rollout
    (no canary, not a tick)."""

    line: int
    samples: Samples
    tick: int | None = None
    baseline: bool = False


def baseline_line(samples: Samples) -> dict[str, Any]:
    """A baseline line for the stable traffic of one pre-rollout interval."""
    data = samples.to_json()
    return {"baseline": True, "t0": data["t0"], "t": data["t"], "stable": data["stable"]}


def _count(obj: dict[str, Any], key: str, where: str) -> int:
    if key not in obj:
        raise ValueError(f"{where}.{key} is missing")
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
            or v < 0 or v != int(v):
        raise ValueError(f"{where}.{key} must be a non-negative integer count, got {v!r}")
    return int(v)


def _version(obj: Any, where: str) -> VersionSample | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ValueError(f"{where} must be an object with requests and errors, or null")
    unknown = set(obj) - {"requests", "errors", "latency"}
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {sorted(unknown)}")
    requests = _count(obj, "requests", where)
    errors = _count(obj, "errors", where)
    if errors > requests:
        raise ValueError(f"{where}.errors ({errors}) exceeds {where}.requests ({requests})")
    latency = None
    lat = obj.get("latency")
    if lat is not None:
        if not isinstance(lat, dict) or "le" not in lat or "counts" not in lat:
            raise ValueError(f"{where}.latency must be an object with le and counts")
        if not isinstance(lat["le"], list) or not isinstance(lat["counts"], list):
            raise ValueError(f"{where}.latency.le and .counts must be lists")
        try:
            latency = Histogram.from_json(lat)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}.latency: {e}") from None
        if latency.total != requests:
            raise ValueError(
                f"{where}.latency +Inf count ({latency.total}) must equal {where}.requests "
                f"({requests})"
            )
    return VersionSample(requests, errors, latency)


def tick_number(obj: dict[str, Any]) -> int | None:
    """The line's `tick` (the engine's tick number), or None when it has none."""
    tick = obj.get("tick")
    if tick is None:
        return None
    if isinstance(tick, bool) or not isinstance(tick, int) or tick < 1:
        raise ValueError(f"tick must be a positive integer (the engine's tick number), got "
                         f"{tick!r}")
    return tick


def parse_line(
    obj: Any, prev_t: datetime | None
) -> tuple[datetime | None, datetime, dict[str, Any]]:
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    unknown = set(obj) - {"t", "t0", "tick", "canary_weight", "stable", "canary",
                          "no_data_reason", "baseline"}
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}")
    tick_number(obj)
    baseline = obj.get("baseline", False)
    if not isinstance(baseline, bool):
        raise ValueError(f"baseline must be true or false, got {baseline!r}")
    if baseline and (obj.get("canary") is not None or obj.get("canary_weight")
                     or obj.get("stable") is None or obj.get("tick") is not None):
        raise ValueError("a baseline line (before the rollout) has the stable version's counts "
                         "and no canary, canary_weight or tick")
    if "t" not in obj:
        raise ValueError("field t (the interval's end time) is missing")
    t1 = parse_timestamp(obj["t"], "t")
    t0 = parse_timestamp(obj["t0"], "t0") if obj.get("t0") is not None else prev_t
    if prev_t is not None and t1 <= prev_t:
        raise ValueError(
            f"t {obj['t']} is not after the previous line's t; lines must be oldest first"
        )
    if t0 is not None and t0 >= t1:
        raise ValueError("t0 must be before t")
    if prev_t is not None and t0 is not None and t0 < prev_t:
        raise ValueError(
            f"t0 {iso(t0)} is before the previous line's t {iso(prev_t)}: intervals must not "
            "overlap (each request is counted once)")
    if t0 is not None and (t1 - t0) < MIN_INTERVAL:
        raise ValueError(
            f"the interval {iso(t0)}..{iso(t1)} is shorter than {MIN_INTERVAL.total_seconds():g}s "
            "(the engine's shortest interval): repeated or split intervals would count the same "
            "traffic as new evidence")
    w = obj.get("canary_weight")
    bad_weight = isinstance(w, bool) or not isinstance(w, int | float) or not 0 <= w <= 100
    if w is not None and bad_weight:
        raise ValueError(f"canary_weight must be a number from 0 to 100, got {w!r}")
    reason = obj.get("no_data_reason")
    if reason is not None and not isinstance(reason, str):
        raise ValueError("no_data_reason must be a string or null")
    fields = {
        "stable": _version(obj.get("stable"), "stable"),
        "canary": _version(obj.get("canary"), "canary"),
        "canary_weight": None if w is None else float(w),
        "no_data_reason": reason,
    }
    return t0, t1, fields


def is_baseline(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("baseline") is True


def read_replay(path: str | Path) -> list[ReplayLine]:
    """Read a replay file; raise ReplayError naming the file and line of the first problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReplayError(str(p), None, "file not found") from None
    except IsADirectoryError:
        raise ReplayError(str(p), None, "is a directory, expected a JSONL file") from None
    except UnicodeDecodeError as e:
        raise ReplayError(str(p), None, f"not UTF-8 text: {e.reason}") from None
    except OSError as e:
        raise ReplayError(str(p), None, f"cannot read: {e.strerror}") from None
    parsed: list[tuple[int, datetime | None, datetime, dict[str, Any], int | None, bool]] = []
    prev: datetime | None = None
    prev_tick = 0
    analysed = False
    for no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ReplayError(str(p), no, f"invalid JSON: {e.msg} (column {e.colno})") from None
        try:
            t0, t1, fields = parse_line(obj, prev)
            tick = tick_number(obj)
            if tick is not None and tick <= prev_tick:
                raise ValueError(f"tick {tick} is not after the previous line's tick "
                                 f"{prev_tick}; lines must be oldest first")
        except ValueError as e:
            raise ReplayError(str(p), no, str(e)) from None
        baseline = is_baseline(obj)
        if baseline and analysed:
            raise ReplayError(str(p), no, "baseline lines (the stable's traffic before the "
                              "rollout) must come before the first analysed interval")
        analysed = analysed or not baseline
        parsed.append((no, t0, t1, fields, tick, baseline))
        prev = t1
        prev_tick = tick or prev_tick
    if not parsed:
        raise ReplayError(str(p), None, "no intervals: expected one JSON object per line")
    if not analysed:
        raise ReplayError(str(p), None, "only baseline lines: no interval of the rollout to "
                          "analyse after them")
    out = []
    for i, (no, t0, t1, fields, tick, baseline) in enumerate(parsed):
        if t0 is None:
            gap = parsed[i + 1][2] - t1 if i + 1 < len(parsed) else DEFAULT_INTERVAL
            t0 = t1 - max(gap, MIN_INTERVAL)
        out.append(ReplayLine(no, Samples(t0=t0, t1=t1, **fields), tick, baseline))
    return out


class ReplaySource:
    """A MetricSource over recorded intervals: `fetch(t0, t1)` sums the intervals ending in
    (t0, t1]; none there is a no-data answer, never invented zeros."""

    def __init__(self, lines: list[ReplayLine]) -> None:
        self.samples = [ln.samples for ln in lines]

    def fetch(self, t0: datetime, t1: datetime, canary_weight: float | None = None) -> Samples:
        hits = [s for s in self.samples if t0 < s.t1 <= t1]
        if not hits:
            return Samples(t0, t1, None, None, canary_weight, "no recorded interval in this window")
        if len(hits) == 1:
            s = hits[0]
            return Samples(t0, t1, s.stable, s.canary,
                           canary_weight if canary_weight is not None else s.canary_weight,
                           s.no_data_reason)
        from analyzer.core.stats.latency import add_histograms

        def total(vs: list[VersionSample | None]) -> VersionSample | None:
            if any(v is None for v in vs):
                return None
            lat = None
            if all(v is not None and v.latency is not None for v in vs):
                for v in vs:
                    assert v is not None
                    lat = v.latency if lat is None else add_histograms(lat, v.latency)
            return VersionSample(sum(v.requests for v in vs if v), sum(v.errors for v in vs if v),
                                 lat)

        reason = next((s.no_data_reason for s in hits if s.no_data_reason), None)
        return Samples(t0, t1, total([s.stable for s in hits]), total([s.canary for s in hits]),
                       canary_weight if canary_weight is not None else hits[-1].canary_weight,
                       reason)
