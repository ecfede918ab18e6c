"""Fixtures for the demo tests: run `canary demo` as a real process and find what it left."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from analyzer.demo.stack import missing_binaries

REPO = Path(__file__).resolve().parents[2]
CANARY = str(Path(sys.executable).with_name("canary"))
MARK_VAR = "CANARY_DEMO_TEST_MARK"


@pytest.fixture
def real_stack() -> None:
    missing = missing_binaries()
    if missing:
        pytest.fail(f"{', '.join(missing)} required for the real demo (make test installs them)")


@pytest.fixture
def mark() -> str:
    """A unique value put in the demo's environment: every process it starts inherits it."""
    return uuid.uuid4().hex


def demo_env(mark: str) -> dict[str, str]:
    env = dict(os.environ)
    env[MARK_VAR] = mark
    env["COLUMNS"] = "160"  # rich reads it: one event per line in the captured output
    return env


def _cmdline(pid: str) -> str:
    return (Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode(
        errors="replace")


def _alive(pid: str) -> bool:
    try:
        return (Path("/proc") / pid / "stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def demo_processes(mark: str, workdir: str | None = None) -> dict[str, str]:
    """Live processes of one demo run (Linux /proc), pid -> command line: those whose
    environment carries `mark` (the demo, the apps, Prometheus), and, since nginx clears its
    environment, the nginx masters whose command line names the run's work dir, with their
    workers."""
    needle = f"{MARK_VAR}={mark}".encode()
    found: dict[str, str] = {}
    for entry in Path("/proc").iterdir():
        pid = entry.name
        if not pid.isdigit():
            continue
        try:
            cmd = _cmdline(pid)
            ours = needle in (entry / "environ").read_bytes().split(b"\0")
            if not ours and workdir and workdir in cmd:
                ours = True
                for child in (entry / "task" / pid / "children").read_text().split():
                    if _alive(child):
                        found[child] = _cmdline(child)
            if ours and _alive(pid):
                found[pid] = cmd
        except OSError:
            continue
    return found


def still_alive(pids: dict[str, str]) -> dict[str, str]:
    """Which of `pids` still run the same command."""
    out = {}
    for pid, cmd in pids.items():
        try:
            if _alive(pid) and _cmdline(pid) == cmd:
                out[pid] = cmd
        except OSError:
            continue
    return out


def workdir_of(stdout: str) -> str | None:
    m = re.search(r"work dir ([^\s)]+)", stdout)
    return m.group(1) if m else None


def stop_demo(proc: subprocess.Popen[str]) -> None:
    """After a failed assertion: let the demo clean up (SIGTERM) before killing it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_demo(args: list[str], mark: str, log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [CANARY, "demo", *args], cwd=REPO, env=demo_env(mark), text=True,
        stdout=subprocess.PIPE, stderr=log.open("w"), bufsize=1,
    )
