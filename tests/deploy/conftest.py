"""Fixtures for the deploy/ tests: overlays rendered by `kubectl kustomize` exactly as a user
runs it (no extra flags), and paths."""

from __future__ import annotations

import copy
import functools
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kube_cluster import kubectl_binary

REPO = Path(__file__).resolve().parents[2]
KUSTOMIZE = REPO / "deploy" / "kustomize"
OVERLAYS = sorted(p.name for p in (KUSTOMIZE / "overlays").iterdir() if p.is_dir())
COMPONENTS = sorted(p.name for p in (KUSTOMIZE / "components").iterdir() if p.is_dir())


def kubectl_kustomize(directory: Path) -> list[dict[str, Any]]:
    return copy.deepcopy(_kubectl_kustomize(Path(directory)))


@functools.cache  # several tests render the same directory; kubectl takes ~0.3 s a run
def _kubectl_kustomize(directory: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(kubectl_binary()), "kustomize", str(directory)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, f"kubectl kustomize {directory} failed:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {o: kubectl_kustomize(KUSTOMIZE / "overlays" / o) for o in OVERLAYS}


@pytest.fixture(scope="session")
def component_overlays(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One scratch overlay per provider component: the base plus that component."""
    root = tmp_path_factory.mktemp("components")
    out = {}
    for c in COMPONENTS:
        d = root / c
        d.mkdir()
        (d / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "namespace": "canary-analyzer",
            # kustomize refuses absolute paths
            "resources": [os.path.relpath(KUSTOMIZE / "base", d)],
            "components": [os.path.relpath(KUSTOMIZE / "components" / c, d)],
        }))
        out[c] = d
    return out
