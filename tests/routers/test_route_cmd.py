"""`canary route`: offline (--current, the output checked against the upstream schemas, as no
server sees it), dry-run, through a kubeconfig to the real API server, and errors a user sees
(no traceback, exit 1; usage errors exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from analyzer.cli.app import app
from tests.routers.conftest import DESTINATION_RULE, ISTIO, NS, VIRTUAL_SERVICE, Kube
from tests.support.k8s_schemas import errors

VS = ("networking.istio.io/v1", "VirtualService", "checkout")


def policy_file(tmp_path: Path, router: dict = ISTIO, namespace: str = NS) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "canary-analyzer.io/v1alpha1", "kind": "RolloutPolicy",
        "metadata": {"name": "checkout"},
        "spec": {"target": {"namespace": namespace, "service": "checkout", "stable": "v1",
                            "canary": "v2"},
                 "router": router, "strategy": {"steps": [10, 50]},
                 "metrics": {"source": "prometheus"}}}))  # not queried by `canary route`
    return path


def kubeconfig(tmp_path: Path, url: str) -> Path:
    """A kubeconfig for a server nothing verifies (only for the unreachable case)."""
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "nowhere",
        "clusters": [{"name": "nowhere", "cluster": {"server": url}}],
        "users": [{"name": "u", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "nowhere", "context": {"cluster": "nowhere", "user": "u"}}]}))
    return path


def run(*args: str):
    return CliRunner().invoke(app, ["route", *map(str, args)])


def test_offline_dry_run_with_current_file(tmp_path):
    current = tmp_path / "current.yaml"
    current.write_text(yaml.safe_dump_all([VIRTUAL_SERVICE, DESTINATION_RULE]))
    result = run(policy_file(tmp_path), "--weight", "20", "--header", "x-canary=always",
                 "--dry-run", "-o", "yaml", "--current", current)
    assert result.exit_code == 0, result.output
    (obj,) = list(yaml.safe_load_all(result.stdout.split("dry run:")[0]))
    assert errors(obj) == []  # no server saw it: the upstream schema is the check here
    names = [r["name"] for r in obj["spec"]["http"]]
    assert names == ["admin", "canary-analyzer-ab-primary", "primary", "legacy"]
    primary = obj["spec"]["http"][2]
    assert [d["weight"] for d in primary["route"]] == [80, 20]
    assert "would be stable 80% / canary 20%" in result.output


def test_offline_json_output(tmp_path):
    current = tmp_path / "current.json"
    current.write_text(json.dumps({"apiVersion": "v1", "kind": "List",
                                   "items": [VIRTUAL_SERVICE, DESTINATION_RULE]}))
    result = run(policy_file(tmp_path), "--mirror", "25", "--dry-run", "-o", "json",
                 "--current", current)
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout.split("dry run:")[0])
    assert errors(obj) == []
    assert obj["spec"]["http"][1]["mirrorPercentage"] == {"value": 25.0}


def test_through_kubeconfig_to_the_server(tmp_path: Path, kube: Kube) -> None:
    kube.seed(VIRTUAL_SERVICE)
    kube.seed(DESTINATION_RULE)
    kc = kube.cluster.write_kubeconfig(tmp_path / "kubeconfig")  # CA embedded, verified
    policy = policy_file(tmp_path, namespace=kube.ns)
    result = run(policy, "--weight", "30", "--kubeconfig", kc)
    assert result.exit_code == 0, result.output
    assert "stable 70% / canary 30%" in result.output
    primary = kube.get(*VS)["spec"]["http"][1]
    assert [d["weight"] for d in primary["route"]] == [70, 30]
    shown = run(policy, "--kubeconfig", kc)
    assert "stable 70% / canary 30%" in shown.output
    stored = kube.get(*VS)["metadata"]["resourceVersion"]
    again = run(policy, "--weight", "30", "--kubeconfig", kc)
    assert "nothing written" in again.output
    dry = run(policy, "--reset", "--dry-run", "--kubeconfig", kc)
    assert dry.exit_code == 0 and "dry run" in dry.output
    assert [d["weight"] for d in kube.get(*VS)["spec"]["http"][1]["route"]] == [70, 30]
    assert kube.get(*VS)["metadata"]["resourceVersion"] == stored


def test_router_error_is_one_clear_line(tmp_path: Path, kube: Kube) -> None:
    kube.seed(DESTINATION_RULE)
    result = run(policy_file(tmp_path, namespace=kube.ns), "--weight", "10", "--kubeconfig",
                 kube.cluster.write_kubeconfig(tmp_path / "kubeconfig"))
    assert result.exit_code == 1
    assert f"VirtualService {kube.ns}/checkout" in result.output
    assert "does not exist" in result.output and "Traceback" not in result.output


def test_forbidden_is_one_clear_line(tmp_path: Path, kube: Kube) -> None:
    """A ServiceAccount without any binding, with its own token (the `kubernetes` client
    ignores a kubeconfig's `as:` impersonation), gets the 403 as one line naming the object."""
    kube.seed(VIRTUAL_SERVICE)
    kube.seed(DESTINATION_RULE)
    kube.cluster.request("POST", f"/api/v1/namespaces/{kube.ns}/serviceaccounts",
                         {"metadata": {"name": "nobody"}})
    token = kube.cluster.service_account_token(kube.ns, "nobody")
    kc = kube.cluster.write_kubeconfig(tmp_path / "kubeconfig", token=token)
    result = run(policy_file(tmp_path, namespace=kube.ns), "--weight", "10", "--kubeconfig", kc)
    assert result.exit_code == 1
    assert f"cannot read DestinationRule {kube.ns}/checkout" in result.output
    assert "HTTP 403, not allowed" in result.output
    assert f'User "system:serviceaccount:{kube.ns}:nobody" cannot get' in result.output
    assert "Traceback" not in result.output


def test_missing_object_in_current_file(tmp_path):
    current = tmp_path / "current.yaml"
    current.write_text(yaml.safe_dump(VIRTUAL_SERVICE))
    result = run(policy_file(tmp_path), "--weight", "10", "--current", current)
    assert result.exit_code == 1
    assert "DestinationRule shop/checkout" in result.output and "--current" in result.output


def test_bad_policy_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: RolloutPolicy\n")
    result = run(bad, "--weight", "10")
    assert result.exit_code == 1 and "bad.yaml" in result.output


@pytest.mark.parametrize("args", [["--weight", "101"], ["--header", "novalue"],
                                  ["-o", "xml", "--weight", "1"],
                                  ["--header", "a=b", "--cookie", "c"]])
def test_usage_errors_exit_2(tmp_path, args):
    result = run(policy_file(tmp_path), *args)
    assert result.exit_code == 2, result.output


def test_unreachable_api_is_a_clear_error(tmp_path):
    kc = kubeconfig(tmp_path, "http://127.0.0.1:9")  # discard port: nothing listens
    result = run(policy_file(tmp_path), "--weight", "10", "--kubeconfig", kc)
    assert result.exit_code == 1
    assert "unreachable" in result.output and "Traceback" not in result.output
