"""Local nginx router with a real nginx on loopback in front of two local HTTP backends."""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from scipy.stats import binomtest
from typer.testing import CliRunner

from analyzer.cli.app import app
from analyzer.demo.local_nginx import LocalNginx
from analyzer.routers.base import RouterError
from analyzer.routers.factory import build_router
from analyzer.routers.nginx_file import parse_upstream, render_upstream
from tests.routers.conftest import make_policy
from tests.support import requires

pytestmark = [pytest.mark.nginx]


@pytest.fixture(autouse=True)
def _nginx_installed() -> None:
    requires.binary("nginx")


def backend(name: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = name.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


class Setup:
    def __init__(self, tmp: Path, stable: int, canary: int) -> None:
        self.upstream = tmp / "upstream.conf"
        self.stable = f"127.0.0.1:{stable}"
        self.canary = f"127.0.0.1:{canary}"
        self.upstream.write_text(render_upstream("shop", self.stable, self.canary, 0))
        self.nginx = LocalNginx(tmp / "nginx", self.upstream, "shop")
        self.router_cfg = {"provider": "nginx", "upstreamFile": str(self.upstream),
                           "upstreamName": "shop", "stableServer": self.stable,
                           "canaryServer": self.canary,
                           "nginxConfig": str(self.nginx.config_path)}
        self.policy_file = tmp / "policy.yaml"
        import yaml

        self.policy_file.write_text(yaml.safe_dump({
            "apiVersion": "canary-analyzer.io/v1alpha1", "kind": "RolloutPolicy",
            "metadata": {"name": "shop"},
            "spec": {"target": {"service": "shop", "stable": "v1", "canary": "v2"},
                     "router": self.router_cfg, "strategy": {"steps": [20, 50]},
                     "metrics": {"source": "prometheus"}}}))  # not queried by `canary route`

    def get(self, headers: dict[str, str] | None = None) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.nginx.port, timeout=5)
        try:
            conn.request("GET", "/", headers={"Connection": "close", **(headers or {})})
            return conn.getresponse().read().decode()
        finally:
            conn.close()



@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    stable, canary = backend("stable"), backend("canary")
    s = Setup(tmp_path, stable.server_address[1], canary.server_address[1])
    s.nginx.start()
    try:
        yield s
    finally:
        s.nginx.stop()
        stable.shutdown()
        canary.shutdown()


def test_weight_20_splits_20_80_through_real_nginx(setup: Setup):
    assert {setup.get() for _ in range(20)} == {"stable"}
    old = setup.nginx.workers()
    result = CliRunner().invoke(app, ["route", str(setup.policy_file), "--weight", "20"])
    assert result.exit_code == 0, result.output
    assert "canary 20%" in result.output
    setup.nginx.wait_reloaded(old)
    n = 1000
    counts = Counter(setup.get() for _ in range(n))
    assert set(counts) <= {"stable", "canary"}
    test = binomtest(counts["canary"], n, 0.2)
    assert test.pvalue > 1e-3, counts
    assert abs(counts["canary"] / n - 0.2) < 0.05, counts


def test_header_route_and_read_back(setup: Setup):
    router = build_router(make_policy(setup.router_cfg))
    old = setup.nginx.workers()
    router.set_header_route({"header": "X-Canary", "value": "always"})
    setup.nginx.wait_reloaded(old)
    assert {setup.get({"X-Canary": "always"}) for _ in range(20)} == {"canary"}
    assert {setup.get() for _ in range(20)} == {"stable"}  # weight still 0
    split = router.get_weight()
    assert (split.canary_weight, split.header_route) == (0, {"header": "x-canary",
                                                             "value": "always"})
    router.reset()
    assert router.get_weight().header_route is None


def test_failed_nginx_test_keeps_the_old_file(setup: Setup):
    good = setup.upstream.read_text()
    bad_cfg = {**setup.router_cfg, "canaryServer": "127.0.0.1:99999"}  # invalid port
    router = build_router(make_policy(bad_cfg))
    with pytest.raises(RouterError, match=r"nginx -t.*previous file is back.*invalid port"):
        router.set_weight(50)
    assert setup.upstream.read_text() == good
    assert {setup.get() for _ in range(10)} == {"stable"}  # still serving the old config


def test_same_weight_is_a_noop_and_dry_run_writes_nothing(setup: Setup):
    router = build_router(make_policy(setup.router_cfg))
    router.set_weight(0)
    assert router.last_applied == []
    before = setup.upstream.read_text()
    dry = build_router(make_policy(setup.router_cfg), dry_run=True)
    dry.set_weight(30)
    assert setup.upstream.read_text() == before
    assert "weight=30" in dry.last_applied[0]["content"]


@pytest.mark.parametrize("weight", [0, 1, 20, 50, 99, 100])
def test_render_parse_roundtrip(weight: int):
    text = render_upstream("up", "a:1", "b:2", weight, {"cookie": "beta"})
    split = parse_upstream(text, "up", "a:1", "b:2")
    assert (split.canary_weight, split.header_route) == (weight, {"cookie": "beta"})
