"""Run a real Prometheus locally: the test suite, the demo, benchmarks and SRE tools use this.

- `PrometheusServer(data_dir, scrape_configs=None).start()` starts the Prometheus binary (the
  Debian package's `/usr/bin/prometheus`, or `$PROMETHEUS_BINARY`, or `prometheus` on PATH) on a
  free loopback port, waits until `/-/ready` answers, and `.stop()` ends it (SIGTERM, then
  SIGKILL). `.url` is its base URL. Usable as a context manager. `.restart()` keeps the port.
- `OpenMetricsWriter` builds OpenMetrics text from explicit (timestamp, value) points.
- `backfill(openmetrics_text, data_dir)` writes that text into TSDB blocks with
  `promtool tsdb create-blocks-from openmetrics`. Backfill into a data dir before starting the
  server (or restart it afterwards); use timestamps a few hours in the past so the blocks do not
  overlap the head block. The server runs with `--storage.tsdb.retention.time=100y` so old
  test data is not deleted.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import requests
import yaml

__all__ = [
    "OpenMetricsWriter",
    "PrometheusError",
    "PrometheusServer",
    "backfill",
    "find_binary",
    "free_port",
]


class PrometheusError(RuntimeError):
    """The binary is missing, would not start, or promtool rejected the data."""


def find_binary(name: str) -> str | None:
    """Path of `prometheus` or `promtool`: $PROMETHEUS_BINARY / $PROMTOOL_BINARY, PATH, /usr/bin."""
    env = os.environ.get(f"{name.upper()}_BINARY")
    if env and os.access(env, os.X_OK):
        return env
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/bin", "/usr/local/bin", "/bin"):
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusServer:
    """One Prometheus process on a loopback port with its own data dir and config.

    `scrape_configs` is the list put under `scrape_configs:` in prometheus.yml (None: scrape
    nothing, serve what is in the data dir). `scrape_interval` sets the global interval.
    The process's output goes to `<data_dir>/prometheus.log` (shown in start errors).
    """

    def __init__(
        self,
        data_dir: str | Path,
        scrape_configs: Sequence[Mapping[str, Any]] | None = None,
        *,
        port: int | None = None,
        scrape_interval: str = "15s",
        retention: str = "100y",
        binary: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.scrape_configs = list(scrape_configs or [])
        self.scrape_interval = scrape_interval
        self.retention = retention
        self.binary = binary
        self.extra_args = tuple(extra_args)
        self._port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    # ------------------------------------------------------------------ properties
    @property
    def port(self) -> int:
        if self._port is None:
            raise PrometheusError("the server has no port yet: call start() first")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "prometheus.log"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "prometheus.yml"

    # ------------------------------------------------------------------ lifecycle
    def write_config(self) -> Path:
        cfg = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": "15s"},
            "scrape_configs": self.scrape_configs,
        }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        return self.config_path

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        """Start and wait until ready. A port taken meanwhile is retried on another port."""
        if self.running:
            return self
        binary = self.binary or find_binary("prometheus")
        if binary is None:
            raise PrometheusError(
                "prometheus binary not found: install it (Debian: apt-get install -y prometheus) "
                "or set PROMETHEUS_BINARY"
            )
        self.write_config()
        fixed_port = self._port is not None
        attempts = 1 if fixed_port else 3
        last = ""
        for _ in range(attempts):
            if not fixed_port:
                self._port = free_port()
            self._spawn(binary)
            ok, last = self._wait_ready(timeout)
            if ok:
                return self
            self.stop()
            if "address already in use" not in last:
                break
        raise PrometheusError(f"prometheus did not become ready on {self.url}: {last}")

    def _spawn(self, binary: str) -> None:
        args = [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir / 'data'}",
            f"--storage.tsdb.retention.time={self.retention}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
            *self.extra_args,
        ]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self._proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _wait_ready(self, timeout: float) -> tuple[bool, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False, "process exited: " + self._tail_log()
            try:
                r = requests.get(f"{self.url}/-/ready", timeout=1)
                if r.status_code == 200:
                    return True, ""
            except requests.RequestException:
                pass
            time.sleep(0.05)
        return False, f"not ready after {timeout:.0f}s: " + self._tail_log()

    def _tail_log(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Prometheus flushes and releases its lock), SIGKILL after `timeout`."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self, timeout: float = 30.0) -> PrometheusServer:
        """Stop and start again on the same port (same URL for clients)."""
        port = self._port
        self.stop()
        self._port = port
        binary = self.binary or find_binary("prometheus")
        assert binary is not None
        self.write_config()
        self._spawn(binary)
        ok, why = self._wait_ready(timeout)
        if not ok:
            self.stop()
            raise PrometheusError(f"prometheus did not come back on {self.url}: {why}")
        return self

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# ---------------------------------------------------------------------- OpenMetrics + backfill


def _escape_label_value(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if float(v).is_integer() and abs(v) < 2**53:
        return str(int(v))
    return repr(float(v))


class OpenMetricsWriter:
    """Collects series as explicit points and renders OpenMetrics text for `backfill`.

    Each metric name is written as one family of type `unknown`, so any name (`*_total`,
    `*_bucket`, `*_count`, `nginx_ingress_controller_requests`) is stored exactly as given.
    Timestamps are seconds since the epoch.
    """

    def __init__(self) -> None:
        self._series: dict[str, list[tuple[dict[str, str], list[tuple[float, float]]]]] = {}

    def add(
        self, name: str, labels: Mapping[str, str], points: Iterable[tuple[float, float]]
    ) -> None:
        pts = sorted(points)
        self._series.setdefault(name, []).append((dict(labels), pts))

    def text(self) -> str:
        out: list[str] = []
        for name, series in self._series.items():
            out.append(f"# TYPE {name} unknown")
            for labels, pts in series:
                lab = ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in labels.items())
                sel = f"{name}{{{lab}}}" if lab else name
                for ts, val in pts:
                    out.append(f"{sel} {_format_value(val)} {_format_value(ts)}")
        out.append("# EOF")
        return "\n".join(out) + "\n"


def backfill(openmetrics_text: str, data_dir: str | Path, *, promtool: str | None = None) -> None:
    """Write OpenMetrics text into TSDB blocks under `<data_dir>/data` (the server's TSDB path)."""
    tool = promtool or find_binary("promtool")
    if tool is None:
        raise PrometheusError(
            "promtool not found: install the prometheus package or set PROMTOOL_BINARY"
        )
    tsdb = Path(data_dir) / "data"
    tsdb.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".om", delete=False, encoding="utf-8") as f:
        f.write(openmetrics_text)
        src = f.name
    try:
        proc = subprocess.run(
            [tool, "tsdb", "create-blocks-from", "openmetrics", src, str(tsdb)],
            capture_output=True, text=True, timeout=300, check=False,
        )
    finally:
        os.unlink(src)
    if proc.returncode != 0:
        raise PrometheusError(
            f"promtool create-blocks-from openmetrics failed ({proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
        )
