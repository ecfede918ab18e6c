"""A throwaway PostgreSQL cluster on a free loopback port, for tests and benchmarks (not for
production): `initdb` into a temporary directory, `pg_ctl start`/`stop`, and its processes'
CPU time. The fault suite stops and starts it without touching a shared server; the scale-out
benchmark measures the database's load on it alone.

    cluster = LocalPostgres()        # initdb (as the `postgres` user when run as root)
    cluster.start(); cluster.url     # postgresql://postgres@127.0.0.1:PORT/postgres
    cluster.cpu_seconds()            # user + system CPU of the postmaster and its children
    cluster.destroy()
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from analyzer.demo.local_prometheus import free_port


class PostgresMissing(RuntimeError):
    """The PostgreSQL server binaries are not installed."""


class LocalPostgres:
    def __init__(self, *, prefix: str = "canary-pg-") -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins:
            raise PostgresMissing("the PostgreSQL server binaries (initdb, pg_ctl) are not "
                                  "under /usr/lib/postgresql/*/bin: apt-get install postgresql")
        self.bindir = Path(bins[-1]).parent
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.data = self.root / "data"
        self.port = free_port()
        self._user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        proc = subprocess.run([*self._user, str(self.bindir / tool), *args],
                              capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise AssertionError(f"{tool} failed: {proc.stderr or proc.stdout}")

    def start(self, *settings: str) -> None:
        """Start it; `settings` are extra `-c name=value` server settings."""
        extra = "".join(f" -c {s}" for s in settings)
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "pg.log"), "-w",
                  "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                  f"-c fsync=off -c synchronous_commit=off{extra}", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the whole cluster (Linux /proc): the postmaster's own,
        its live children's, and those of the children it has reaped (backends of closed
        connections)."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            return float("nan")
        total = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        for child in children:
            with contextlib.suppress(OSError, IndexError, ValueError):
                f = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
                total += sum(int(x) for x in f[11:15])
        return total / os.sysconf("SC_CLK_TCK")

    def destroy(self) -> None:
        with contextlib.suppress(AssertionError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
