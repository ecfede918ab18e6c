"""Fenced router writes (analyzer/routers/fence.py) on the real API server and a real nginx.

Every Kubernetes router carries the fencing token in the annotation `canary-analyzer.io/fence`
of each object it writes: a write under an older epoch of the same store is refused (nothing
written), also when the newer owner wrote between the stale writer's read and its write (the
resourceVersion precondition makes the server answer 409, the re-read shows the newer token);
a lost lease writes nothing at all; tokens of another store, and the CLI's unfenced writes,
never block. The local nginx router keeps the token in a file beside the upstream file and
checks it under a file lock: the same refusals, and a writer stalled inside the lock delays
the next writer instead of landing after it.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from analyzer.routers import fence as fencing
from analyzer.routers.base import Router, RouterError
from analyzer.routers.fence import ANNOTATION, Fence, FencedOut, FenceToken, LeaseLost, token_of
from analyzer.routers.nginx_file import NginxLocalRouter, render_upstream
from tests.routers.conftest import (
    DESTINATION_RULE,
    GATEWAY,
    HTTP_ROUTE,
    ISTIO,
    KNATIVE,
    KNATIVE_SERVICE,
    KUBERNETES,
    NGINX_INGRESS,
    SELDON,
    SELDON_DEPLOYMENT,
    SMI,
    STABLE_INGRESS,
    TRAFFIC_SPLIT,
    VIRTUAL_SERVICE,
    Kube,
    deployment,
    make_policy,
)
from tests.support import requires

STORE = "5eed5eed5eed5eed"

# provider: (spec.router, seed objects, the routed objects the token must be on)
PROVIDERS: dict[str, tuple[dict[str, Any], list[dict[str, Any]], list[tuple[str, str, str]]]] = {
    "istio": (ISTIO, [VIRTUAL_SERVICE, DESTINATION_RULE],
              [("networking.istio.io/v1", "VirtualService", "checkout")]),
    "nginx-ingress": ({**NGINX_INGRESS, "service": "frontend"}, [STABLE_INGRESS],
                      [("networking.k8s.io/v1", "Ingress", "frontend-canary")]),
    "knative": (KNATIVE, [KNATIVE_SERVICE], [("serving.knative.dev/v1", "Service", "hello")]),
    "seldon": (SELDON, [SELDON_DEPLOYMENT],
               [("machinelearning.seldon.io/v1", "SeldonDeployment", "iris")]),
    "kubernetes": (KUBERNETES, [deployment("api-v1", "v1", 8), deployment("api-v2", "v2", 2)],
                   [("apps/v1", "Deployment", "api-v1"), ("apps/v1", "Deployment", "api-v2")]),
    "gateway-api": (GATEWAY, [HTTP_ROUTE],
                    [("gateway.networking.k8s.io/v1", "HTTPRoute", "store")]),
    "smi": (SMI, [TRAFFIC_SPLIT], [("split.smi-spec.io/v1alpha4", "TrafficSplit", "podinfo")]),
}


def fence(epoch: int, *, store: str = STORE, lease: Callable[[], bool] = lambda: True,
          replica: str = "test") -> Fence:
    return Fence(FenceToken(store, epoch, epoch * 10, f"{replica}-{epoch}"), lease)


def plain_router(kube: Kube, cfg: dict[str, Any]) -> Router:
    """The router of `cfg` ("service": the policy's target service, where it matters)."""
    cfg = dict(cfg)
    service = cfg.pop("service", "checkout")
    return kube.router(cfg, service=service)


def fenced_router(kube: Kube, cfg: dict[str, Any], f: Fence | None) -> Router:
    router = plain_router(kube, cfg)
    router.fence = f  # type: ignore[attr-defined]
    return router


def routed(kube: Kube, refs: list[tuple[str, str, str]]) -> list[dict[str, Any] | None]:
    return [kube.get(*ref) for ref in refs]


@pytest.fixture(params=sorted(PROVIDERS))
def provider(request: pytest.FixtureRequest, kube: Kube) -> Iterator[tuple[Kube, str]]:
    for obj in PROVIDERS[request.param][1]:
        kube.seed(obj)
    yield kube, request.param


def test_a_later_owners_token_refuses_a_former_owners_write(provider: tuple[Kube, str]) -> None:
    kube, name = provider
    cfg, _, refs = PROVIDERS[name]
    fenced_router(kube, cfg, fence(5)).set_weight(30)
    after_owner = routed(kube, refs)
    for obj in after_owner:
        assert obj is not None and token_of(obj) == fence(5).token, obj
    stale = fenced_router(kube, cfg, fence(4))
    with pytest.raises(FencedOut, match=r"later owner, epoch 5 .*holds epoch 4"):
        stale.set_weight(70)
    with pytest.raises(FencedOut):
        stale.reset()
    assert routed(kube, refs) == after_owner  # not a byte written (same resourceVersion)
    # A later owner writes; a token of another store (a recreated database) never blocks.
    fenced_router(kube, cfg, fence(6)).set_weight(10)
    fenced_router(kube, cfg, fence(1, store="0therst0re000000")).set_weight(0)
    assert plain_router(kube, cfg).get_weight().canary_weight == 0
    # `canary route` (no fence) writes and leaves the token as it was.
    plain_router(kube, cfg).set_weight(100 if name != "nginx-ingress" else 40)
    for obj in routed(kube, refs):
        assert obj is not None and token_of(obj) == fence(1, store="0therst0re000000").token


def test_a_takeover_between_lease_check_and_write_is_refused_by_the_token(
        provider: tuple[Kube, str]) -> None:
    """The stale owner passes its lease check and stalls before its write (a GC pause); the new
    owner writes meanwhile. The stale write carries the resourceVersion it read: 409, read
    again, the new owner's token refuses it."""
    kube, name = provider
    cfg, _, refs = PROVIDERS[name]
    fenced_router(kube, cfg, fence(1)).set_weight(20)
    taken_over: list[bool] = []

    def lease_then_takeover() -> bool:
        if not taken_over:
            taken_over.append(True)
            fenced_router(kube, cfg, fence(2)).reset()  # the new owner, during the stall
        return True

    stale = fenced_router(kube, cfg, fence(1, lease=lease_then_takeover))
    with pytest.raises(FencedOut):
        stale.set_weight(80)
    assert taken_over
    assert plain_router(kube, cfg).get_weight().canary_weight == 0  # the new owner's write stands
    for obj in routed(kube, refs):
        assert obj is not None and token_of(obj) == fence(2).token
    # The stale write reached the server and was refused by the precondition, then the token.
    assert any(m == "PATCH" and status == 409 for m, _, status in kube.writes()), kube.writes()


def test_a_lost_lease_writes_nothing(provider: tuple[Kube, str]) -> None:
    kube, name = provider
    cfg, _, refs = PROVIDERS[name]
    before = routed(kube, refs)
    with pytest.raises(LeaseLost, match="no longer owns"):
        fenced_router(kube, cfg, fence(3, lease=lambda: False)).set_weight(50)
    with pytest.raises(LeaseLost, match="cannot check"):
        fenced_router(kube, cfg, fence(3, lease=lambda: 1 / 0 > 0)).set_weight(50)
    assert not kube.writes()
    assert routed(kube, refs) == before


def test_fencing_needs_only_the_verbs_deploy_grants(kube: Kube, kube_engine_rbac: Any) -> None:
    """The annotation is written with the same patch as the weights: deploy/'s ServiceAccount
    needs no other verb."""
    kube.seed(VIRTUAL_SERVICE)
    kube.seed(DESTINATION_RULE)
    router = kube.router(ISTIO, user=kube_engine_rbac.user)
    router.fence = fence(7)  # type: ignore[attr-defined]
    router.set_weight(25)
    vs = kube.get("networking.istio.io/v1", "VirtualService", "checkout")
    assert vs is not None and vs["metadata"]["annotations"][ANNOTATION] == fence(7).token.encode()
    # Other annotations are kept.
    assert vs["metadata"]["annotations"]["ops.example.com/ticket"] == "OPS-1234"


# ------------------------------------------------------------------------- local nginx


@pytest.fixture
def nginx_policy(tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    """A real nginx serving the upstream file (the router's `nginx -t` and reload are real)."""
    requires.binary("nginx")
    from analyzer.demo.local_nginx import LocalNginx

    upstream = tmp_path / "upstream.conf"
    upstream.write_text(render_upstream("shop", "127.0.0.1:9", "127.0.0.1:10", 0))
    nginx = LocalNginx(tmp_path / "nginx", upstream, "shop").start()
    policy = make_policy({"provider": "nginx", "upstreamFile": str(upstream),
                          "upstreamName": "shop", "stableServer": "127.0.0.1:9",
                          "canaryServer": "127.0.0.1:10",
                          "nginxConfig": str(nginx.config_path)})
    try:
        yield policy, upstream
    finally:
        nginx.stop()


def nginx_router(policy: Any, f: Fence | None) -> NginxLocalRouter:
    router = NginxLocalRouter(policy)
    router.fence = f
    return router


def test_nginx_token_file_refuses_a_former_owner(nginx_policy: tuple[Any, Path]) -> None:
    policy, upstream = nginx_policy
    nginx_router(policy, fence(5)).set_weight(30)
    assert fencing.token_path(upstream).read_text().strip() == fence(5).token.encode()
    assert f"# fence: {fence(5).token.encode()}" in upstream.read_text()
    content = upstream.read_text()
    with pytest.raises(FencedOut, match="later owner"):
        nginx_router(policy, fence(4)).set_weight(70)
    with pytest.raises(LeaseLost):
        nginx_router(policy, fence(6, lease=lambda: False)).set_weight(70)
    assert upstream.read_text() == content
    assert fencing.token_path(upstream).read_text().strip() == fence(5).token.encode()
    nginx_router(policy, fence(6)).set_weight(50)
    assert nginx_router(policy, None).get_weight().canary_weight == 50


def test_nginx_writer_stalled_inside_the_lock_lands_before_the_next_owner(
        nginx_policy: tuple[Any, Path]) -> None:
    """A former owner that passed its checks and stalls inside the lock delays the new owner;
    it can never land after the new owner's write."""
    policy, upstream = nginx_policy
    nginx_router(policy, fence(1)).set_weight(20)
    stalled, resume = threading.Event(), threading.Event()

    def stall_after_lease() -> bool:
        stalled.set()
        resume.wait(10)
        return True

    errors: list[BaseException] = []

    def old_owner() -> None:
        try:
            nginx_router(policy, fence(1, lease=stall_after_lease)).set_weight(80)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=old_owner)
    t.start()
    assert stalled.wait(10)
    new_done = threading.Event()

    def new_owner() -> None:
        nginx_router(policy, fence(2)).reset()
        new_done.set()

    n = threading.Thread(target=new_owner)
    n.start()
    time.sleep(0.5)
    assert not new_done.is_set()  # waiting for the lock the stalled writer holds
    resume.set()
    t.join(10)
    n.join(10)
    assert not errors and new_done.is_set()
    # The new owner's write came last and stands; its token is in both files.
    assert nginx_router(policy, None).get_weight().canary_weight == 0
    assert fencing.token_path(upstream).read_text().strip() == fence(2).token.encode()
    assert f"# fence: {fence(2).token.encode()}" in upstream.read_text()


def test_nginx_lock_held_too_long_is_a_clear_refusal(nginx_policy: tuple[Any, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    policy, upstream = nginx_policy
    monkeypatch.setattr(fencing, "FILE_LOCK_TIMEOUT", 0.3)
    with fencing.locked(upstream):  # another writer (a stopped process) holds the lock
        started = time.monotonic()
        with pytest.raises(RouterError, match=r"being written by another process .*try again"):
            nginx_router(policy, fence(3)).set_weight(40)
        assert time.monotonic() - started < 5
    nginx_router(policy, fence(3)).set_weight(40)


def test_token_encoding_round_trips_and_ignores_foreign_values() -> None:
    token = FenceToken(STORE, 12, 345, "host:1")
    assert FenceToken.decode(token.encode()) == token
    for junk in (None, "", "{", "[]", '{"epoch": "x"}', 7):
        assert FenceToken.decode(junk) is None
    assert token_of({"metadata": {"annotations": {ANNOTATION: token.encode()}}}) == token
    assert token_of({"metadata": {"annotations": None}}) is None
    assert token_of({"metadata": "x"}) is None
    assert FenceToken(STORE, 13, 0, "b").outranks(token)
    assert not token.outranks(token)
    assert not FenceToken("other", 99, 0, "b").outranks(token)
    obj: dict[str, Any] = {"metadata": {"annotations": {"keep": "me"}}}
    wanted = copy.deepcopy(obj)
    Fence(token).stamp_object("x", obj, wanted)
    assert wanted["metadata"]["annotations"] == {"keep": "me", ANNOTATION: token.encode()}
