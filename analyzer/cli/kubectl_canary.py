"""`kubectl canary get|status|history|promote|abort|pause|resume NAME [-n NS]`: the kubectl plugin
(console script `kubectl-canary`), working on RolloutPolicy objects through the API server only:
no database, no engine URL.

- get / status read the objects and their status (what the controller writes);
- history lists the Events the controller records on the RolloutPolicy, one per decision (the
  whole decision log, with samples and verdicts: `canary history NS.NAME --server URL`);
- promote / abort / pause / resume write the command annotation (`canary-analyzer.io/command`,
  a JSON object with a fresh request id), guarded by the object's resourceVersion and refused
  while another command waits; the controller queues it exactly once, records the outcome in
  status.lastCommand and removes the annotation. `--wait` (default) waits for that outcome.

Kubernetes credentials as kubectl finds them: --kubeconfig, $KUBECONFIG, ~/.kube/config, or
in-cluster; the namespace from -n, else the context's, else `default`.
"""

from __future__ import annotations

import getpass
import secrets
import time
from datetime import UTC, datetime
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from analyzer.cli.tables import Column, print_table, stdout_console
from analyzer.core.rollout import Command

app = typer.Typer(name="kubectl canary", help="Canary Analyzer's RolloutPolicies from kubectl: "
                  "where they stand, their decisions, and manual gates.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
out = stdout_console()
err = Console(stderr=True, highlight=False, soft_wrap=True)

NS_OPTION = typer.Option(None, "--namespace", "-n", help="namespace (default: the context's)")
KUBECONFIG_OPTION = typer.Option(None, "--kubeconfig", help="kubeconfig file")
CONTEXT_OPTION = typer.Option(None, "--context", help="kubeconfig context")


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error[/red] {escape(message)}")
    raise typer.Exit(code)


class Cluster:
    """The RolloutPolicy calls of this plugin, on one ApiClient."""

    def __init__(self, kubeconfig: str | None, context: str | None,
                 namespace: str | None) -> None:
        from kubernetes import client, config

        from analyzer.routers.base import RouterError
        from analyzer.routers.kube.objects import api_client_from_config

        try:
            self.api = api_client_from_config(kubeconfig, context)
        except RouterError as e:
            _fail(str(e))
        self.namespace = namespace or _context_namespace(kubeconfig, context, config)
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        from analyzer.routers.kube.objects import _api_message

        try:
            return fn(*args, _request_timeout=30, **kwargs)
        except ApiException as e:
            _fail(f"{what}: {e.status}: {_api_message(e)}")
        except Exception as e:
            _fail(f"{what}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")

    def get(self, name: str) -> dict[str, Any]:
        from analyzer.policy.crd import GROUP, PLURAL, VERSION

        return dict(self.call(f"RolloutPolicy {self.namespace}/{name}",
                              self.custom.get_namespaced_custom_object, GROUP, VERSION,
                              self.namespace, PLURAL, name))

    def list(self, all_namespaces: bool) -> list[dict[str, Any]]:
        from analyzer.policy.crd import GROUP, PLURAL, VERSION

        if all_namespaces:
            data = self.call("RolloutPolicies", self.custom.list_cluster_custom_object, GROUP,
                             VERSION, PLURAL)
        else:
            data = self.call(f"RolloutPolicies in {self.namespace}",
                             self.custom.list_namespaced_custom_object, GROUP, VERSION,
                             self.namespace, PLURAL)
        return list(data.get("items") or [])

    def annotate(self, obj: dict[str, Any], key: str, value: str) -> None:
        from analyzer.policy.crd import GROUP, PLURAL, VERSION

        meta = obj["metadata"]
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"],
                              "annotations": {key: value}}}
        self.call(f"RolloutPolicy {self.namespace}/{meta['name']}",
                  self.custom.patch_namespaced_custom_object, GROUP, VERSION, self.namespace,
                  PLURAL, meta["name"], patch, _content_type="application/merge-patch+json")

    def events(self, name: str) -> list[dict[str, Any]]:
        from analyzer.policy import KIND

        data = self.call(f"Events of RolloutPolicy {self.namespace}/{name}",
                         self.core.list_namespaced_event, self.namespace,
                         field_selector=f"involvedObject.kind={KIND},involvedObject.name={name}")
        return [self.api.sanitize_for_serialization(e) for e in data.items]


def _context_namespace(kubeconfig: str | None, context: str | None, config: Any) -> str:
    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        chosen = next((c for c in contexts if c["name"] == context), active) if context \
            else active
        return str((chosen or {}).get("context", {}).get("namespace") or "default")
    except Exception:
        return "default"


def _age(stamp: str | None) -> str:
    if not stamp:
        return "-"
    seconds = (datetime.now(UTC) - datetime.fromisoformat(stamp.replace("Z", "+00:00"))
               ).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"


@app.command()
def get(name: str | None = typer.Argument(None, help="one RolloutPolicy (default: all)"),
        namespace: str | None = NS_OPTION,
        all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A"),
        kubeconfig: str | None = KUBECONFIG_OPTION,
        context: str | None = CONTEXT_OPTION) -> None:
    """RolloutPolicies: phase, weight, step, versions, last decision."""
    cluster = Cluster(kubeconfig, context, namespace)
    items = [cluster.get(name)] if name else cluster.list(all_namespaces)
    if not items:
        out.print(f"no RolloutPolicies in {'the cluster' if all_namespaces else cluster.namespace}")
        return
    cols = (["NAMESPACE"] if all_namespaces else []) + [
        "NAME", "PHASE", "WEIGHT", "STEP", "CANARY", "STABLE", "LAST DECISION", "AGE"]
    rows = []
    for o in items:
        st = o.get("status") or {}
        rows.append(([o["metadata"]["namespace"]] if all_namespaces else []) + [
            o["metadata"]["name"], str(st.get("phase", "-")),
            f"{st['weight']}%" if "weight" in st else "-", str(st.get("step", "-")),
            str(st.get("canary", "-")), str(st.get("stable", "-")),
            str(st.get("lastDecision", "-")), _age(o["metadata"].get("creationTimestamp"))])
    print_table(out, [Column(c, text=c == "LAST DECISION") for c in cols], rows, box=None,
                pad_edge=False)


@app.command()
def status(name: str = typer.Argument(..., help="the RolloutPolicy"),
           namespace: str | None = NS_OPTION, kubeconfig: str | None = KUBECONFIG_OPTION,
           context: str | None = CONTEXT_OPTION) -> None:
    """One RolloutPolicy in detail: versions, weight, step, conditions, last command."""
    cluster = Cluster(kubeconfig, context, namespace)
    obj = cluster.get(name)
    st = obj.get("status") or {}
    meta = obj["metadata"]
    for label, value in (
        ("policy", f"{meta['namespace']}/{meta['name']} (generation {meta.get('generation')}, "
                   f"observed {st.get('observedGeneration', '-')})"),
        ("phase", st.get("phase", "- (no status yet: is `canary run --kubernetes` running?)")),
        ("versions", f"{st.get('stable', '-')} -> {st.get('canary', '-')}"),
        ("weight", f"{st['weight']}%" if "weight" in st else "-"),
        ("step", st.get("step", "-")),
        ("run", st.get("run", "-")),
        ("decision", st.get("lastDecision", "-")),
        ("message", st.get("message", "-")),
        ("queued", st.get("queuedVersion", "-")),
        ("command", _command_line(st.get("lastCommand"))),
        ("pending", (meta.get("annotations") or {}).get("canary-analyzer.io/command", "-")),
        ("owner", st.get("controller", "-")),
    ):
        out.print(f"{label + ':':<10}{escape(str(value))}")
    print_table(out, [Column(c) for c in ("CONDITION", "STATUS", "REASON", "SINCE")],
                [[c["type"], c["status"], c.get("reason", ""), _age(c.get("lastTransitionTime"))]
                 for c in st.get("conditions") or []], box=None, pad_edge=False)


def _command_line(cmd: dict[str, Any] | None) -> str:
    if not cmd:
        return "-"
    return f"{cmd.get('command')} ({cmd.get('id')}): {cmd.get('result')}"


@app.command()
def history(name: str = typer.Argument(..., help="the RolloutPolicy"),
            namespace: str | None = NS_OPTION, kubeconfig: str | None = KUBECONFIG_OPTION,
            context: str | None = CONTEXT_OPTION) -> None:
    """The decisions recorded as Events on the RolloutPolicy, oldest first (Events expire
    after the API server's event TTL, one hour by default)."""
    cluster = Cluster(kubeconfig, context, namespace)
    events = sorted(cluster.events(name), key=lambda e: (
        e.get("lastTimestamp") or e.get("eventTime") or "",
        int(e["metadata"].get("resourceVersion") or 0)))
    if not events:
        out.print(f"no Events on RolloutPolicy {cluster.namespace}/{name} (expired, or no "
                  "decision yet)")
        return
    print_table(out, [Column(c) for c in ("TIME", "TYPE", "REASON")] + [
        Column("MESSAGE", text=True)],
        [[str(e.get("lastTimestamp") or "-"), str(e.get("type")), str(e.get("reason")),
          str(e.get("message"))] for e in events], box=None, pad_edge=False)


def _command(command: Command, name: str, namespace: str | None, kubeconfig: str | None,
             context: str | None, wait: bool, timeout: float) -> None:
    from analyzer.daemon.controller.policies import COMMAND_ANNOTATION, CommandRequest

    cluster = Cluster(kubeconfig, context, namespace)
    obj = cluster.get(name)
    pending = (obj["metadata"].get("annotations") or {}).get(COMMAND_ANNOTATION)
    if pending:
        _fail(f"RolloutPolicy {cluster.namespace}/{name} has a command the controller has not "
              f"taken yet ({pending}); wait for it (kubectl canary status {name}) or remove "
              f"the annotation {COMMAND_ANNOTATION}")
    try:
        actor = f"kubectl ({getpass.getuser()})"
    except Exception:
        actor = "kubectl"
    req = CommandRequest(command, secrets.token_hex(8), actor)
    cluster.annotate(obj, COMMAND_ANNOTATION, req.to_annotation())
    out.print(f"{command} requested for RolloutPolicy {cluster.namespace}/{name} "
              f"(request {req.id})")
    if not wait:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = (cluster.get(name).get("status") or {}).get("lastCommand") or {}
        if last.get("id") == req.id:
            out.print(f"{command}: {last.get('result')}")
            if str(last.get("result", "")).startswith("refused"):
                raise typer.Exit(1)
            return
        time.sleep(0.5)
    _fail(f"the controller did not take request {req.id} within {timeout:g} s: is `canary run "
          "--kubernetes` running and allowed to patch RolloutPolicies? (the annotation stays; "
          "it is applied once the controller sees it)")


def _command_cmd(command: Command, doc: str) -> None:
    def cmd(name: str = typer.Argument(..., help="the RolloutPolicy"),
            namespace: str | None = NS_OPTION, kubeconfig: str | None = KUBECONFIG_OPTION,
            context: str | None = CONTEXT_OPTION,
            wait: bool = typer.Option(True, "--wait/--no-wait", help="wait until the "
                                      "controller has taken the command"),
            timeout: float = typer.Option(30.0, "--timeout", min=1, help="seconds to wait")
            ) -> None:
        _command(command, name, namespace, kubeconfig, context, wait, timeout)

    cmd.__doc__ = doc
    app.command(name=str(command))(cmd)


for _cmd, _doc in ((Command.PROMOTE, "Skip the rest of the current step (or pause)."),
                   (Command.ABORT, "Roll back: all traffic to stable."),
                   (Command.PAUSE, "Stop deciding; the weight stays where it is."),
                   (Command.RESUME, "Continue a paused rollout (ends a pause step).")):
    _command_cmd(_cmd, _doc)


def main() -> None:
    from analyzer.cli.app import run_app

    run_app(app)


if __name__ == "__main__":
    main()
