"""JSON as the store writes it: strict (PostgreSQL rejects NaN and Infinity), compact, sorted.
"""

from __future__ import annotations

import json
import math
from typing import Any


def dumps(value: Any) -> str | None:
    """Strict JSON (PostgreSQL rejects NaN/Infinity): non-finite floats become strings."""
    if value is None:
        return None
    try:  # the common case, in C: no NaN or infinity anywhere
        return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)
    except (ValueError, TypeError):  # NaN/infinity, or keys json cannot sort or write
        return json.dumps(_finite(value), separators=(",", ":"), sort_keys=True)


def loads(value: str | None) -> Any:
    return json.loads(value) if value else None


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
