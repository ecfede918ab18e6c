"""`canary run --kubernetes` as a real process against the real API server, as deploy/'s
ServiceAccount: `kubectl apply -f` of a RolloutPolicy is all it takes to start a rollout; the
plugin's `kubectl canary abort` (waiting for the controller's answer) rolls it back; deleting
the policy lets it go. Real time with liveness bounds (several times the normal seconds), no
timing assertions."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.engine.conftest import Daemon, daemon_env
from tests.kube_controller.conftest import RP, ControllerHarness, rollout_policy, wait_for
from tests.support.kube_deploy import ENGINE_NAMESPACE, ENGINE_SERVICE_ACCOUNT


def test_canary_run_kubernetes_drives_an_applied_policy(harness: ControllerHarness,
                                                        tmp_path: Path) -> None:
    h = harness
    h.controller.stop()  # the process under test is the only controller here
    # a real token of deploy/'s ServiceAccount (TokenRequest), as the pod would have it
    token = h.cluster.service_account_token(ENGINE_NAMESPACE, ENGINE_SERVICE_ACCOUNT)
    kubeconfig = h.cluster.write_kubeconfig(tmp_path / "engine.kubeconfig", token=token)
    daemon = Daemon(["--kubernetes", "--namespace", h.namespace, "--kubeconfig",
                     str(kubeconfig), "--db", f"sqlite:///{tmp_path / 'canary.db'}",
                     "--no-api", "--sync-interval", "0.2", "--status-interval", "0.2"],
                    daemon_env(), tmp_path / "daemon.log")
    try:
        policy = rollout_policy(
            target={"service": "api", "stable": "v1", "canary": "v2"},
            router={"provider": "dry-run"},
            analysis={"interval": "1s", "minStepDuration": "1h", "maxStepDuration": "2h"})
        (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
        h.cluster.kubectl("apply", "-n", h.namespace, "-f", str(tmp_path / "policy.yaml"))

        def status() -> dict:
            return dict((h.objects.get(*RP, "api") or {}).get("status") or {})

        wait_for("the rollout runs at its first step", lambda: (
            status().get("phase") == "Progressing" and status().get("weight") == 20), 60)
        table = h.cluster.kubectl("get", "rolloutpolicies", "-n", h.namespace).stdout
        assert "Progressing" in table and " 20 " in table
        aborted = h.kubectl_canary("abort", "api", "--timeout", "60")
        assert "abort: queued for run 1" in aborted.stdout
        wait_for("the rollback", lambda: status().get("phase") == "RolledBack", 60)
        events = {e["reason"] for e in h.events()}
        assert {"RolloutStarted", "CanaryStep", "CommandQueued", "CanaryRollback"} <= events
        h.cluster.kubectl("delete", "rolloutpolicy", "api", "-n", h.namespace,
                          "--timeout=60s")
        assert h.objects.get(*RP, "api") is None
    finally:
        code = daemon.stop()
    assert code == 0, (tmp_path / "daemon.log").read_text()[-3000:]
    assert "Traceback" not in (tmp_path / "daemon.log").read_text()
    assert daemon.info["api"] is None
