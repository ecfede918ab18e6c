"""Numbers as people read them in decisions, tables and logs: 2.3, 0.046, 412, 1.2e+04; 4.5%;
90s, 12m, 1.5h. One home, so every tool prints the same number the same way.
"""

from __future__ import annotations

import math


def fmt_num(x: float | None) -> str:
    """Short human number: 2.3, 0.046, 412, 1.2e+04."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    ax = abs(x)
    if ax >= 1e4:
        return f"{x:.2g}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 1:
        return f"{x:.3g}"
    return f"{x:.2g}"


def fmt_pct(x: float) -> str:
    return f"{fmt_num(100 * x)}%"


def fmt_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.1f}h"


def fmt_tolerance(tolerance: float) -> str:
    """A check's tolerance as the policy writes it, with the ratio it allows:
    "1 + tolerance 0.25 = 1.25" (a user searching the policy finds the 0.25)."""
    return f"1 + tolerance {tolerance:.6g} = {1 + tolerance:.6g}"  # as written: 0.125, not 0.12
