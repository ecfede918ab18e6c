"""Time in one place: durations (`30s`, `1h30m`), points in time (RFC 3339, Unix seconds,
`now`, `now-10m`, `-10m`) and their ISO 8601 text.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any, overload

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
#: No duration anywhere in this tool is longer than a year (timedelta itself overflows at
#: 999999999 days); fields with tighter limits check them in the policy model.
MAX_DURATION = timedelta(days=366)


def parse_duration(value: Any) -> timedelta:
    """Read `30s`, `5m`, `1h30m`, `250ms`, or a number of seconds."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m or 1h, got a boolean")
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("expected a duration like 30s, 5m or 1h, got an empty string")
        if text.startswith("-"):
            raise ValueError(f"duration must not be negative, got {value!r}")
        pos, seconds = 0, 0.0
        for m in _DURATION_PART.finditer(text):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
        if pos != len(text) or pos == 0:
            raise ValueError(
                f"expected a duration like 30s, 5m, 1h or 1h30m (units ms, s, m, h, d), "
                f"got {value!r}"
            )
    else:
        raise ValueError(f"expected a duration like 30s, 5m or 1h, got {type(value).__name__}")
    if not math.isfinite(seconds):
        raise ValueError(f"duration must be finite, got {value!r}")
    if seconds < 0:
        raise ValueError(f"duration must not be negative, got {value!r}")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"duration {value!r} is too long: at most {MAX_DURATION.days}d")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    if seconds and seconds == int(seconds):
        s = int(seconds)
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if s % size == 0:
                return f"{s // size}{unit}"
        return f"{s}s"
    return f"{round(seconds * 1000)}ms"


# --------------------------------------------------------------------------- points in time

_RELATIVE = re.compile(r"^(now)?\s*-\s*(.+)$")


@overload
def as_utc(t: datetime) -> datetime: ...
@overload
def as_utc(t: None) -> None: ...
def as_utc(t: datetime | None) -> datetime | None:
    """The same instant in UTC; a naive time is taken to be UTC already (SQLite returns naive
    datetimes, and this tool only ever stores UTC). None stays None."""
    if t is None:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def iso(t: datetime | None) -> str | None:
    """RFC 3339 text in UTC with a `Z` (`2026-03-01T10:00:00Z`); None stays None."""
    return None if t is None else as_utc(t).isoformat().replace("+00:00", "Z")


def parse_timestamp(value: Any, what: str = "time") -> datetime:
    """An RFC 3339 / ISO 8601 timestamp string (`2026-03-01T10:00:00Z`); naive means UTC.
    Raises ValueError naming `what` (a field) on anything else."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be an ISO 8601 timestamp string like 2026-03-01T10:00:00Z")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{what} {value!r} is not an ISO 8601 timestamp (e.g. 2026-03-01T10:00:00Z)"
        ) from None
    return as_utc(t)


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """A point in time as people type it on a command line: RFC 3339
    (`2026-03-01T10:00:00Z`), Unix seconds, `now`, or relative to now: `now-10m`, `-10m`."""
    s = text.strip()
    base = now if now is not None else datetime.now(UTC)
    if s == "now":
        return base
    m = _RELATIVE.match(s)
    if m:
        try:
            return base - parse_duration(m.group(2).strip())
        except ValueError as e:
            raise ValueError(f"{text!r}: {e}") from None
    try:
        seconds = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"{text!r} is not a time")
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"{text!r} is out of range as Unix seconds") from None
    try:
        return parse_timestamp(s)
    except ValueError:
        raise ValueError(
            f"cannot read time {text!r}: use RFC 3339 (2026-03-01T10:00:00Z), Unix seconds, "
            "now, or now-10m / -10m"
        ) from None
