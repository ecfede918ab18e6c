"""Static checks of deploy/Dockerfile (no container engine here to build it)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def _args() -> dict[str, str]:
    return dict(rest.split("=", 1) for op, rest in _instructions() if op == "ARG" and "=" in rest)


def test_base_images_are_pinned_slim_python() -> None:
    args = _args()
    froms = [rest.split()[0] for op, rest in _instructions() if op == "FROM"]
    assert len(froms) >= 1
    for f in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], f)
        name, _, tag = image.partition(":")
        assert name in ("python", "docker.io/library/python"), image
        assert tag and tag != "latest" and "slim" in tag, image
        major, minor = map(int, re.match(r"(\d+)\.(\d+)", tag).groups())
        assert (major, minor) >= (3, 11), image


def test_runs_as_numeric_non_root_user() -> None:
    users = [rest for op, rest in _instructions() if op == "USER"]
    assert users, "no USER instruction: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0, users[-1]
    # the manifests run the same UID
    deployment = (REPO / "deploy" / "kustomize" / "base" / "deployment.yaml").read_text()
    assert f"runAsUser: {uid}" in deployment


def test_entrypoint_and_port() -> None:
    ins = _instructions()
    entry = [json.loads(rest) for op, rest in ins if op == "ENTRYPOINT"]
    assert entry[-1] == ["canary", "run"]
    cmd = json.loads([rest for op, rest in ins if op == "CMD"][-1])
    assert cmd[cmd.index("--listen") + 1] == "0.0.0.0:8080"
    assert "8080" in [rest for op, rest in ins if op == "EXPOSE"][-1].split()
    health = [rest for op, rest in ins if op == "HEALTHCHECK"]
    assert health and "/healthz" in health[-1]
    # the console script exists in the package
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "canary" in scripts


def test_installs_with_pip_only_and_copies_existing_files() -> None:
    ins = _instructions()
    runs = " ".join(rest for op, rest in ins if op == "RUN")
    assert "pip " in runs
    for tool in ("curl ", "wget ", "apt-get", "git "):
        assert tool not in runs, f"{tool.strip()} in RUN: only pip may use the network"
    assert "--no-index" in runs  # the runtime stage installs the wheels built before
    for op, rest in ins:
        if op == "COPY" and "--from" not in rest:
            *sources, _dest = rest.split()
            for s in sources:
                assert (REPO / s).exists(), f"COPY source {s} is missing from the repository"


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in lines  # allowlist
    allowed = {x[1:] for x in lines if x.startswith("!")}
    copied = set()
    for op, rest in _instructions():
        if op == "COPY" and "--from" not in rest:
            copied |= set(rest.split()[:-1])
    assert copied <= allowed, f"COPY needs {copied - allowed} allowed in .dockerignore"
    assert ".venv" not in allowed and ".git" not in allowed


def test_writable_paths_are_volumes_in_the_manifests() -> None:
    """Read-only root: the image's HOME/caches point at /tmp, the store at /var/lib/canary."""
    envs = " ".join(rest for op, rest in _instructions() if op == "ENV")
    assert "HOME=/tmp" in envs and "MPLCONFIGDIR=/tmp/" in envs
    assert "PYTHONDONTWRITEBYTECODE=1" in envs
    assert "CANARY_DB=sqlite:////var/lib/canary/" in envs


def test_entrypoint_flags_exist_in_the_cli() -> None:
    """`canary run` accepts the flags the image and the manifests pass."""
    from typer.testing import CliRunner

    from analyzer.cli.app import app

    result = CliRunner().invoke(app, ["run", "--help"])
    assert result.exit_code == 0, result.output
    for flag in ("--policies", "--listen"):
        assert flag in result.output, f"`canary run` has no {flag} option"
    # the manifests configure the store and the API token through these variables
    text = " ".join(result.output.split())
    for env in ("CANARY_DB", "CANARY_API_TOKEN"):
        assert env in text, f"`canary run --help` does not mention {env}"
