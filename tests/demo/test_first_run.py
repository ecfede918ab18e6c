"""The first `make demo` installs the venv (issue 22, item 9): it says so before it starts and
lets pip show its progress; the README says it takes minutes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support import requires

REPO = Path(__file__).resolve().parents[2]


def test_first_make_demo_announces_the_install_and_shows_pip_progress(tmp_path: Path) -> None:
    make = requires.binary("make")
    venv = tmp_path / "venv"  # not there: make plans the install first
    res = subprocess.run([make, "-n", "demo", f"VENV={venv}"], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True)
    lines = res.stdout.splitlines()
    install = next(i for i, ln in enumerate(lines) if "pip install" in ln and ".[test]" in ln)
    assert "--quiet" not in lines[install] and " -q" not in lines[install]
    assert "--progress-bar on" in lines[install]
    announce = next(i for i, ln in enumerate(lines) if ln.startswith("echo") and
                    "several minutes" in ln)
    assert announce < install
    assert lines.index(f"{venv}/bin/canary demo") > install


def test_readme_says_the_first_demo_installs_for_minutes() -> None:
    readme = (REPO / "README.md").read_text()
    try_it = readme[readme.index("## Try it first"):readme.index("## Why")]
    assert "about a minute and a half" in try_it
    assert "first `make demo`" in try_it and "several minutes" in try_it
