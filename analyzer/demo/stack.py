"""The demo's local stack: per rollout, the stable and canary sample service (one process
each), a real nginx whose upstream file the `nginx` router rewrites, and one Prometheus
scraping every app; all on free loopback ports, all stopped on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from analyzer.demo.local_nginx import LocalNginx
from analyzer.demo.local_prometheus import PrometheusError, PrometheusServer, find_binary, free_port
from analyzer.demo.scenario import DemoRollout, VersionProfile, localize_policy
from analyzer.policy import Policy
from analyzer.routers.base import RouterError
from analyzer.routers.nginx_file import render_upstream

# --------------------------------------------------------------------------- the local stack


def missing_binaries() -> list[str]:
    """System programs the real demo needs and this machine lacks."""
    missing = []
    if find_binary("prometheus") is None:
        missing.append("prometheus")
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        missing.append("nginx")
    return missing


class DemoError(RuntimeError):
    """The local stack could not be set up (the message says which part and why)."""


class AppProcess:
    """One version of the sample service in its own process group."""

    def __init__(self, version: str, profile: VersionProfile, log: Path, seed: int) -> None:
        self.version = version
        self.port = free_port()
        self.log_path = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "analyzer.demo.app", "--port", str(self.port),
             "--version", version, "--error-rate", str(profile.error_rate),
             "--latency-median", str(profile.latency_median),
             "--latency-p99", str(profile.latency_p99), "--seed", str(seed),
             "--parent-pid", str(os.getpid())],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: a terminal's Ctrl-C does not race our stop
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DemoError(f"sample service {self.version} exited at start: "
                                f"{self.log_path.read_text(errors='replace')[-500:]}")
            try:
                if requests.get(f"http://{self.address}/healthz", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise DemoError(f"sample service {self.version} did not answer on {self.address}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


@dataclass
class StackRollout:
    """What the stack runs for one rollout."""

    policy: Policy
    stable: AppProcess
    canary: AppProcess
    nginx: LocalNginx


class LocalStack:
    """Sample services, one nginx per rollout and one Prometheus, all on loopback.

    `start()` brings everything up (or raises DemoError after stopping what it started);
    `stop()` is idempotent and stops in reverse order.
    """

    def __init__(self, workdir: Path, rollouts: Sequence[tuple[Policy, DemoRollout]]) -> None:
        self.workdir = workdir
        self.rollouts = list(rollouts)
        self.parts: list[StackRollout] = []
        self.apps: list[AppProcess] = []
        self.nginxes: list[LocalNginx] = []
        self.prometheus: PrometheusServer | None = None
        self.policies: list[Policy] = []

    def start(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        deadline = time.monotonic() + 20
        for i, (policy, r) in enumerate(self.rollouts):
            t = policy.spec.target
            for role, version, profile in (("stable", t.stable, r.stable),
                                           ("canary", t.canary, r.canary)):
                self.apps.append(AppProcess(
                    version, profile, self.workdir / f"{t.service}-{role}-{version}.log",
                    seed=1000 * i + len(self.apps)))
        for app in self.apps:
            app.wait_ready(deadline)
        scrape = []
        for i, (policy, _r) in enumerate(self.rollouts):
            t = policy.spec.target
            stable, canary = self.apps[2 * i], self.apps[2 * i + 1]
            router = policy.spec.router
            name = getattr(router, "upstreamName", f"{t.service}_backend")
            upstream = self.workdir / f"{t.service}-upstream.conf"
            # The router owns this file from the first tick on; before, all traffic to stable.
            upstream.write_text(render_upstream(name, stable.address, canary.address, 0))
            ndir = self.workdir / f"nginx-{t.service}"
            ndir.mkdir(parents=True, exist_ok=True)
            nginx = LocalNginx(ndir, upstream, name)
            try:
                nginx.start()
            except RouterError as e:
                raise DemoError(f"nginx for {t.service}: {e}") from None
            self.nginxes.append(nginx)
            self.parts.append(StackRollout(policy, stable, canary, nginx))
            scrape.append({
                "job_name": f"{t.service}",
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "static_configs": [{
                    "targets": [stable.address, canary.address],
                    # As a Kubernetes service discovery would: the target says which service.
                    "labels": {"service": t.service, "namespace": t.namespace},
                }],
            })
        self.prometheus = PrometheusServer(self.workdir / "prometheus", scrape,
                                           scrape_interval="1s")
        try:
            self.prometheus.start()
        except PrometheusError as e:
            raise DemoError(str(e)) from None
        for part in self.parts:
            part.policy = localize_policy(
                part.policy, upstream_file=part.nginx.upstream_file,
                nginx_config=part.nginx.config_path, stable_server=part.stable.address,
                canary_server=part.canary.address, prometheus_url=self.prometheus.url)
        self.policies = [p.policy for p in self.parts]

    def wait_scraped(self, timeout: float = 20.0) -> None:
        """Until Prometheus has every app's request counter (the judge needs both versions)."""
        assert self.prometheus is not None
        want = {(p.policy.spec.target.service, v) for p in self.parts
                for v in (p.policy.spec.target.stable, p.policy.spec.target.canary)}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                r = requests.get(f"{self.prometheus.url}/api/v1/query", timeout=2, params={
                    "query": "count by (service, version) (http_requests_total)"})
                have = {(s["metric"].get("service"), s["metric"].get("version"))
                        for s in r.json()["data"]["result"]}
                if want <= have:
                    return
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.25)
        raise DemoError(f"Prometheus at {self.prometheus.url} did not scrape every sample "
                        f"service within {timeout:g}s (see {self.workdir}/prometheus)")

    def stop(self) -> None:
        for nginx in reversed(self.nginxes):
            nginx.stop()
        self.nginxes.clear()
        if self.prometheus is not None:
            self.prometheus.stop()
            self.prometheus = None
        for app in reversed(self.apps):
            app.stop()
        self.apps.clear()

    def describe(self) -> str:
        parts = [f"{p.policy.spec.target.service} via nginx :{p.nginx.port}" for p in self.parts]
        prom = f"Prometheus :{self.prometheus.port}" if self.prometheus else "Prometheus"
        return "real nginx + Prometheus on loopback: " + ", ".join(parts) + f", {prom}"
