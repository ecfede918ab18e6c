"""build_router: every reference policy in policies/ gets a router of its provider."""

from __future__ import annotations

from pathlib import Path

import pytest

from analyzer.policy import load_policy
from analyzer.routers.base import Router, RouterError
from analyzer.routers.factory import KUBE_ROUTERS, build_router

POLICIES = sorted((Path(__file__).resolve().parents[2] / "policies").glob("*.yaml"))


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.name)
def test_reference_policies_build_a_router(path):
    policy = load_policy(path)
    provider = policy.spec.router.provider
    try:
        router = build_router(policy, current_object=[])
    except RouterError as e:
        assert provider == "dry-run" and "dry_run.py" in str(e)
        return
    assert isinstance(router, Router)
    if provider in KUBE_ROUTERS:
        assert type(router).__name__ == KUBE_ROUTERS[provider][1]
        # Offline with no objects: a clear error naming the object, never a crash.
        with pytest.raises(RouterError, match="not in the --current file"):
            router.get_weight()
