"""`canary validate` and `canary --help` load only what they use: no numpy, scipy, SQLAlchemy,
FastAPI, matplotlib or the Kubernetes client (which made them take a second of CPU). A module
set, not a timing: the figure itself is in the README's "What we measured"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "scipy", "sqlalchemy", "fastapi", "uvicorn", "matplotlib", "kubernetes",
         "prometheus_api_client", "apscheduler")

PROBE = f"""
import sys
from analyzer.cli.app import main
sys.argv = ["canary", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
print("HEAVY:" + ",".join(loaded), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["validate", str(REPO / "policies" / "istio-canary.yaml")],
                                  ["--help"], ["validate", "--help"], ["schema"]])
def test_light_commands_do_not_import_heavy_libraries(args: list[str]) -> None:
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                         cwd=REPO, timeout=60, check=False)
    line = next(x for x in out.stderr.splitlines() if x.startswith("HEAVY:"))
    assert line == "HEAVY:", f"canary {' '.join(args)} imported {line[6:]}"
