"""The test suite's clock: every test's data is placed at fixed instants, never at "now".

`EPOCH` is a fixed, hour-aligned instant long past (so Prometheus blocks backfilled there never
overlap a live head block). `CANARY_TEST_CLOCK_SHIFT` (a duration such as `7h` or `13h30m`)
moves it, and with it every fixture's start time: the `simulate` source seeds its random
stream from the window's times, so a shifted run draws other traffic. A test that passes only
for some draws is a test that depends on luck; tests/test_clock_shift.py runs the
time-dependent tiers under several shifts to catch exactly that.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from analyzer.util.times import parse_duration

BASE_EPOCH = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
SHIFT_ENV = "CANARY_TEST_CLOCK_SHIFT"


def clock_shift() -> str:
    return os.environ.get(SHIFT_ENV, "0s")


EPOCH = BASE_EPOCH + parse_duration(clock_shift())
