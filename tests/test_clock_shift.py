"""The time-dependent tiers give the same result whatever hour the suite runs at.

Every test places its data at the fixed instants of tests/support/clock.py, and the `simulate`
source seeds its traffic from the window's times. Here the sre, stats and engine tiers run
again with the whole clock moved by a few hours (CANARY_TEST_CLOCK_SHIFT), i.e. on other random
draws: a test that passes only for some draws (one that depends on luck, or on the hour, as
issue 24's backtest test did) fails here. The daemon tests read the real clock anyway and are
left out, as are the files that never read the suite's clock (NO_CLOCK), and this file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.clock import SHIFT_ENV

REPO = Path(__file__).resolve().parents[1]
TIERS = ["tests/sre", "tests/stats", "tests/engine"]
REAL_CLOCK = ["tests/engine/test_daemon.py",  # subprocess daemons on the wall clock
              "tests/engine/test_daemon_log.py"]
#: files that never read the suite's clock: Monte Carlo runs on their own fixed epoch and seed,
#: and the statistics' unit and property tests on numbers only; the shift cannot change them
NO_CLOCK = ["tests/sre/test_simulate.py", "tests/sre/test_simulate_verdict.py",
            "tests/stats/test_properties.py", "tests/stats/test_counts.py",
            "tests/stats/test_evalues.py", "tests/stats/test_classic.py",
            "tests/stats/test_latency_srm.py"]
SHIFTS = ["7h", "13h", "19h30m"]


@pytest.mark.slow
@pytest.mark.timeout(960)  # the inner run's own limit is 900 s
@pytest.mark.parametrize("shift", SHIFTS)
def test_time_dependent_tiers_pass_with_the_clock_moved(shift: str, tmp_path: Path) -> None:
    if os.environ.get(SHIFT_ENV):
        pytest.fail(f"{SHIFT_ENV} is already set: run this file without it", pytrace=False)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
           f"--basetemp={tmp_path / 'inner'}", *TIERS,
           *(f"--deselect={t}" for t in REAL_CLOCK), *(f"--ignore={t}" for t in NO_CLOCK),
           "--ignore=tests/test_clock_shift.py"]
    env = {**os.environ, SHIFT_ENV: shift}
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
                         check=False)
    summary = "\n".join(line for line in out.stdout.splitlines()
                        if line.startswith(("FAILED", "ERROR")) or " passed" in line
                        or " failed" in line)
    print(f"{SHIFT_ENV}={shift}: {summary.splitlines()[-1] if summary else out.stdout[-300:]}")
    assert out.returncode == 0, (
        f"with the clock moved by {shift} ({SHIFT_ENV}={shift}) these tests fail; their "
        f"outcome depends on the random draw or the hour:\n{summary}\n{out.stderr[-2000:]}")
