"""The GitOps flow on the real API server: a RolloutPolicy with a Deployment canaryRef, image
changes start rollouts, `kubectl get` and Events show them, `kubectl canary` gates act exactly
once, deleting the policy leaves traffic on stable, a second image mid-rollout restarts the
analysis, and the promoted version becomes the stable one.

Everything runs as deploy/'s ServiceAccount (impersonated), so deploy/'s RBAC is what these
flows prove sufficient. Time is simulated (tests/kube_controller/conftest.py)."""

from __future__ import annotations

from analyzer.core.rollout import Phase
from analyzer.daemon.controller import COMMAND_ANNOTATION
from tests.kube_controller.conftest import (
    INTERVAL,
    RP,
    ControllerHarness,
    rollout_policy,
    wait_for,
)


def test_new_image_starts_a_rollout_within_one_interval(harness: ControllerHarness) -> None:
    h = harness
    h.setup()
    st = h.status()
    # first sight: the version the canary Deployment runs is the stable one; nothing starts
    assert (st["phase"], st["stable"], st.get("canary")) == ("Waiting", "v1", None)
    assert h.policy()["metadata"]["finalizers"] == ["canary-analyzer.io/finalizer"]
    ready = {c["type"]: c for c in st["conditions"]}
    assert ready["Ready"]["status"] == "True" and ready["Progressing"]["status"] == "False"
    assert h.store.list_rollouts() == []

    h.set_image("v2")
    changed_at = h.now
    h.sync()
    run = h.run()
    assert (run.stable_version, run.canary_version, run.phase) == ("v1", "v2", Phase.PENDING)
    h.tick()  # the scheduler's first tick of a new rollout is immediate
    run = h.run()
    assert run.phase is Phase.PROGRESSING and run.state.weight == 20
    assert run.state.step_started_at is not None
    assert run.state.step_started_at - changed_at < INTERVAL  # within one interval
    assert h.replicas() == (8, 2)

    h.sync()
    got = h.kubectl_canary("get").stdout  # the plugin's table
    assert "Progressing" in got and "20%" in got and "v2" in got
    table = h.cluster.kubectl("get", "rolloutpolicies", "-n", h.namespace).stdout
    header, row = table.strip().splitlines()
    assert header.split()[:6] == ["NAME", "PHASE", "WEIGHT", "STEP", "CANARY", "LAST"]
    assert row.split()[:5] == ["api", "Progressing", "20", "1/3", "v2"]
    st = h.status()
    assert st["lastDecision"] == "rollout started" and st["observedGeneration"] == 1
    reasons = [e["reason"] for e in h.events()]
    assert reasons == ["RolloutStarted", "CanaryStep"]


def test_promotion_makes_the_version_stable_and_decisions_are_events(
        harness: ControllerHarness) -> None:
    h = harness
    h.setup()
    h.set_image("v2")
    h.sync()
    h.tick_until(lambda r: r.phase is Phase.SUCCEEDED)
    h.sync()
    st = h.status()
    assert (st["phase"], st["canary"], st["stable"], st["weight"]) == (
        "Succeeded", "v2", "v2", 100)
    assert "v2 is now the stable version" in st["message"]
    promoted = {c["type"]: c for c in st["conditions"]}["Promoted"]
    assert promoted["status"] == "True" and promoted["reason"] == "Succeeded"
    assert h.replicas() == (0, 10)
    # one Event per decision of the decision log, on the RolloutPolicy
    changed = [t for t in h.store.ticks(h.run().id) if (t.phase_before, t.step_before,
               t.weight_before) != (t.phase_after, t.step_after, t.weight_after)]
    events = [e for e in h.events() if e["reason"].startswith("Canary")]
    assert len(events) == len(changed) == 4
    assert [e["reason"] for e in events] == ["CanaryStep", "CanaryPromote", "CanaryPromote",
                                             "CanarySucceeded"]
    assert all(e["involvedObject"]["uid"] == h.policy()["metadata"]["uid"] for e in events)
    described = h.cluster.kubectl("describe", "rolloutpolicy", "api", "-n",
                                  h.namespace).stdout
    assert "CanarySucceeded" in described.split("Events:", 1)[1]

    # the next version rolls out against the promoted one (not the first stable, v1)
    h.set_image("v3")
    h.sync()
    run = h.run()
    assert (run.generation, run.stable_version, run.canary_version) == (2, "v2", "v3")
    h.tick()
    h.sync()
    st = h.status()
    assert (st["stable"], st["canary"], st["phase"], st["run"]) == ("v2", "v3", "Progressing", 2)
    # another pass sends no Event twice
    before = len(h.events())
    h.sync()
    assert len(h.events()) == before


def test_kubectl_canary_promote_and_abort_act_exactly_once(harness: ControllerHarness) -> None:
    h = harness
    h.setup()
    h.set_image("v2")
    h.sync()
    h.tick()
    assert h.run().state.weight == 20

    out = h.kubectl_canary("promote", "api", "--no-wait").stdout
    assert "promote requested" in out
    request = h.policy()["metadata"]["annotations"][COMMAND_ANNOTATION]
    h.sync()
    h.sync()  # a second pass (and the annotation's removal event) queues nothing more
    assert COMMAND_ANNOTATION not in (h.policy()["metadata"].get("annotations") or {})
    pending = h.store.pending_commands(h.run().id)
    assert [str(c.command) for c in pending] == ["promote"]
    assert h.status()["lastCommand"]["id"] in request
    h.tick()
    assert h.run().state.weight == 50
    # a request the controller sees again (a crash before the annotation was removed) is not
    # queued again: the same annotation written back by hand
    h.objects.modify(*RP, "api", lambda o: o["metadata"].setdefault("annotations", {}).update(
        {COMMAND_ANNOTATION: request}))
    h.sync()
    assert h.store.pending_commands(h.run().id) == []

    proc = h.kubectl_canary("abort", "api", "--no-wait")
    assert proc.returncode == 0, proc.stderr
    h.sync()
    h.tick()
    run = h.run()
    assert run.phase is Phase.ROLLED_BACK and h.replicas() == (10, 0)
    commanded = [t.command for t in h.store.ticks(run.id) if t.command]
    assert commanded == ["promote", "abort"]  # each applied exactly once
    h.sync()
    st = h.status()
    assert st["phase"] == "RolledBack" and st["lastCommand"]["command"] == "abort"
    assert {c["type"]: c["status"] for c in st["conditions"]}["RolledBack"] == "True"
    # a command with nothing to act on is refused, said in the status, and waits no more
    h.kubectl_canary("pause", "api", "--no-wait")
    h.sync()
    assert h.status()["lastCommand"]["result"].startswith("refused: no active rollout")
    assert h.store.pending_commands(run.id) == []
    assert any(e["reason"] == "CommandRefused" for e in h.events())


def test_deleting_the_policy_leaves_traffic_on_stable(harness: ControllerHarness) -> None:
    h = harness
    h.setup()
    h.set_image("v2")
    h.sync()
    h.tick()
    h.tick_until(lambda r: r.state.weight == 50)
    assert h.replicas() == (5, 5)
    h.cluster.kubectl("delete", "rolloutpolicy", "api", "-n", h.namespace, "--wait=false")
    obj = h.policy()
    assert obj is not None and obj["metadata"].get("deletionTimestamp")  # held by our finalizer
    h.sync()
    assert h.status()["phase"] == "Deleting"
    h.tick()  # the owning engine applies the abort: router reset first
    assert h.run().phase is Phase.ROLLED_BACK
    assert h.replicas() == (10, 0)
    h.sync()  # the run has ended: the finalizer goes, and with it the object
    assert h.policy() is None
    assert h.replicas() == (10, 0)
    aborts = [t for t in h.store.ticks(h.run().id) if t.command == "abort"]
    assert len(aborts) == 1 and "RolloutPolicy deleted" in aborts[0].reason


def test_second_image_mid_rollout_restarts_the_analysis(harness: ControllerHarness) -> None:
    h = harness
    h.setup()
    h.set_image("v2")
    h.sync()
    h.tick()
    h.tick_until(lambda r: r.state.weight == 50)
    h.set_image("v3")
    h.sync()  # restart: the v2 run is aborted first (traffic back to stable)
    h.tick()
    first = h.store.run(h.run().name, 1)
    assert first.phase is Phase.ROLLED_BACK and first.canary_version == "v2"
    h.sync()  # then v3 starts from the first step, against the same stable
    run = h.run()
    assert (run.generation, run.stable_version, run.canary_version) == (2, "v1", "v3")
    h.tick()
    assert h.run().state.weight == 20 and h.replicas() == (8, 2)
    h.sync()
    st = h.status()
    assert (st["canary"], st["stable"], st["run"]) == ("v3", "v1", 2)
    reasons = [e["reason"] for e in h.events()]
    assert "AbortRequested" in reasons and reasons.count("RolloutStarted") == 2


def test_queue_waits_for_the_running_rollout(harness: ControllerHarness) -> None:
    h = harness
    h.setup(target={"service": "api", "canaryRef": {
        "kind": "Deployment", "name": "api-canary", "onNewVersion": "queue"}})
    h.set_image("v2")
    h.sync()
    h.tick()
    h.set_image("v3")
    h.sync()
    assert h.status()["queuedVersion"] == "v3" and h.run().canary_version == "v2"
    h.tick_until(lambda r: r.phase is Phase.SUCCEEDED)
    h.sync()
    run = h.run()
    assert (run.generation, run.stable_version, run.canary_version) == (2, "v2", "v3")


def test_a_changed_spec_applies_from_the_next_step(harness: ControllerHarness) -> None:
    h = harness
    h.setup()
    h.set_image("v2")
    h.sync()
    h.tick()
    assert h.run().state.weight == 20

    def steps(o: dict) -> None:
        o["spec"]["strategy"]["steps"] = [20, 40, 100]
    h.objects.modify(*RP, "api", steps)
    h.sync()
    h.tick()  # the current step continues as it was
    assert h.run().state.weight == 20
    h.tick_until(lambda r: r.state.weight != 20)
    assert h.run().state.weight == 40  # the new plan's next step
    assert h.status()["observedGeneration"] == 2
    assert any(e["reason"] == "SpecChanged" for e in h.events())


def test_an_invalid_spec_only_the_controller_can_see(harness: ControllerHarness) -> None:
    """Steps that do not increase pass the CRD (CEL cannot see the untyped steps): the
    controller refuses them with `canary validate`'s words, and starts nothing."""
    h = harness
    h.objects.seed(rollout_policy(strategy={"steps": [50, 20, 100]}))
    h.sync()
    st = h.status()
    assert st["phase"] == "Invalid"
    assert "weights in steps must increase strictly" in st["message"]
    ready = {c["type"]: c for c in st["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert [e["reason"] for e in h.events()] == ["InvalidSpec"]
    assert h.store.list_rollouts() == []


def test_a_policy_may_not_reach_another_namespace(harness: ControllerHarness) -> None:
    h = harness
    h.objects.seed(rollout_policy(target={"namespace": "kube-system", "service": "api",
                                          "stable": "v1", "canary": "v2"}))
    h.sync()
    st = h.status()
    assert st["phase"] == "Invalid" and "in its own namespace only" in st["message"]


def test_a_knative_service_s_new_revision_starts_a_rollout(harness: ControllerHarness) -> None:
    """canaryRef kind Service (serving.knative.dev/v1): the version is the latest created
    revision, which Knative writes to the status (here: we do, no Knative controller runs)."""
    h = harness
    ksvc = {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "hello"},
            "spec": {"template": {"spec": {"containers": [
                {"image": "ghcr.io/knative/helloworld-go:latest"}]}}}}
    h.objects.seed(ksvc)

    def revision(name: str) -> None:
        path = h.objects.path("serving.knative.dev/v1", "Service", "hello") + "/status"
        h.cluster.request("PATCH", path, {"status": {"latestCreatedRevisionName": name}},
                          content_type="application/merge-patch+json")

    revision("hello-00001")
    h.objects.seed(rollout_policy(target={"service": "hello", "canaryRef": {
        "kind": "Service", "name": "hello"}}, router={"provider": "dry-run"}))
    key = f"{h.namespace}/api"
    h.sync()
    wait_for("the Knative Service's revision", lambda: h.controller.seen_version(key)
             == "hello-00001")
    h.sync()
    assert (h.status()["phase"], h.status()["stable"]) == ("Waiting", "hello-00001")
    revision("hello-00002")
    wait_for("the new revision", lambda: h.controller.seen_version(key) == "hello-00002")
    h.sync()
    run = h.run()
    assert (run.stable_version, run.canary_version) == ("hello-00001", "hello-00002")
