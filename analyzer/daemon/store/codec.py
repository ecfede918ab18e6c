"""JSON as the store writes it: strict (PostgreSQL rejects NaN and Infinity), compact, sorted.

orjson does the common case in a fraction of the time the standard library takes (a tick's
26 KB judge state: 64 us against 1.3 ms to encode, 150 us against 710 us to decode). orjson
writes NaN and infinities as null, so its output is used when it holds no null, or when the
value holds no non-finite float; otherwise the standard library writes it, with non-finite
floats as the store always wrote them (NaN as null, infinities as "Infinity" / "-Infinity").
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

_OPTIONS = orjson.OPT_SORT_KEYS


def dumps(value: Any) -> str | None:
    """Strict JSON (PostgreSQL rejects NaN/Infinity): non-finite floats become strings."""
    if value is None:
        return None
    try:
        fast = orjson.dumps(value, option=_OPTIONS)
    except TypeError:  # a type orjson does not write (or keys it cannot sort): the slow way
        fast = b"null"
    if b"null" not in fast or not _nonfinite(value):  # no NaN/infinity written as null
        return fast.decode()
    try:  # in C: no NaN or infinity anywhere
        return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)
    except (ValueError, TypeError):  # NaN/infinity, or keys json cannot sort or write
        return json.dumps(_finite(value), separators=(",", ":"), sort_keys=True)


def loads(value: str | bytes | None) -> Any:
    if not value:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:  # what only the standard library reads (NaN tokens)
        return json.loads(value)


def _nonfinite(value: Any) -> bool:
    """True when a NaN or an infinity is anywhere in `value`."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(map(_nonfinite, value.values()))
    if isinstance(value, list | tuple):
        return any(map(_nonfinite, value))
    return False


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
