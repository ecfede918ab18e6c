"""Fixtures for the deploy/ tests: overlays rendered by `kubectl kustomize` exactly as a user
runs it (no extra flags), and paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.kube_deploy import COMPONENTS, KUSTOMIZE, kubectl_kustomize, scratch_overlay

REPO = KUSTOMIZE.parents[1]
OVERLAYS = sorted(p.name for p in (KUSTOMIZE / "overlays").iterdir() if p.is_dir())
__all__ = ["COMPONENTS", "KUSTOMIZE", "OVERLAYS", "REPO", "kubectl_kustomize"]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {o: kubectl_kustomize(KUSTOMIZE / "overlays" / o) for o in OVERLAYS}


@pytest.fixture(scope="session")
def component_overlays(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One scratch overlay per provider component: the base plus that component."""
    root = tmp_path_factory.mktemp("components")
    return {c: scratch_overlay(root / c, [c]) for c in COMPONENTS}
