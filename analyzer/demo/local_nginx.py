"""A real nginx on a free loopback port, for tests and the demo (not for production).

`LocalNginx` writes a main config whose `http` block includes the local nginx router's upstream
file and proxies every request to `$<upstream>_route` (the weighted upstream, or the canary when
the A/B header/cookie matches), runs `nginx` in the foreground as a child process, and stops it.
Everything it writes (config, pid, logs, temp dirs) lives in one work directory.

    with LocalNginx(workdir, upstream_file, "shop_backend") as nginx:
        requests.get(nginx.url)

The router reloads this nginx with `nginx -c <config_path> -s reload`; point the policy's
`spec.router.nginxConfig` at `LocalNginx.config_path`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from analyzer.routers.base import RouterError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalNginx:
    def __init__(
        self,
        workdir: str | Path,
        upstream_file: str | Path,
        upstream_name: str,
        *,
        port: int | None = None,
        binary: str = "nginx",
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.upstream_file = Path(upstream_file).resolve()
        self.upstream_name = upstream_name
        self.port = port or free_port()
        self.binary = binary
        self.config_path = self.workdir / "nginx.conf"
        self.error_log = self.workdir / "error.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        w = self.workdir
        # As root, workers would drop to `nobody` and could not use the private temp dirs.
        user = "user root;\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
        return (
            f"{user}worker_processes 1;\n"
            "daemon off;\n"
            f"pid {w}/nginx.pid;\n"
            f"error_log {self.error_log} warn;\n"
            "events { worker_connections 512; }\n"
            "http {\n"
            "    access_log off;\n"
            f"    client_body_temp_path {w}/tmp/body;\n"
            f"    proxy_temp_path {w}/tmp/proxy;\n"
            f"    fastcgi_temp_path {w}/tmp/fastcgi;\n"
            f"    uwsgi_temp_path {w}/tmp/uwsgi;\n"
            f"    scgi_temp_path {w}/tmp/scgi;\n"
            f"    include {self.upstream_file};\n"
            "    server {\n"
            f"        listen 127.0.0.1:{self.port};\n"
            "        location / {\n"
            f"            proxy_pass http://${self.upstream_name}_route;\n"
            "            proxy_http_version 1.1;\n"
            '            proxy_set_header Connection "";\n'
            "            proxy_next_upstream off;\n"
            "        }\n"
            "    }\n"
            "}\n"
        )

    def start(self, timeout: float = 10.0) -> LocalNginx:
        if shutil.which(self.binary) is None:
            raise RouterError(f"nginx binary {self.binary!r} not found (apt-get install nginx)")
        if not self.upstream_file.exists():
            raise RouterError(
                f"upstream file {self.upstream_file} does not exist; write it first "
                "(analyzer.routers.nginx_file.render_upstream or the router's reset())"
            )
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text(), encoding="utf-8")
        cmd = [self.binary, "-c", str(self.config_path), "-e", str(self.error_log)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RouterError(f"nginx exited at start: {err.strip() or self._log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RouterError(f"nginx did not listen on port {self.port} within {timeout:g}s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: fast shutdown of master and workers
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()

    def workers(self) -> set[int]:
        """PIDs of the worker processes now (Linux /proc; empty elsewhere)."""
        if self._proc is None:
            return set()
        path = Path(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children")
        try:
            return {int(p) for p in path.read_text().split()}
        except (OSError, ValueError):
            return set()

    def wait_reloaded(self, old_workers: set[int], timeout: float = 10.0) -> None:
        """Wait until the workers from before a reload are gone and new ones serve, so every
        request after this sees the new configuration (a reload is asynchronous)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.workers()
            if now and not now & old_workers:
                return
            time.sleep(0.02)
        raise RouterError(f"nginx did not finish reloading within {timeout:g}s")

    def _log_tail(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")[-500:]
        except OSError:
            return ""

    def __enter__(self) -> LocalNginx:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
