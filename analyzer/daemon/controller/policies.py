"""One RolloutPolicy object as the engine sees it (pure: no I/O).

- `store_name(namespace, name)`: the rollouts of a RolloutPolicy are stored as
  `<namespace>.<name>` (the store's names are global, RolloutPolicy names per namespace);
- `parse(obj)`: the object's spec validated with the policy model (`canary validate`'s words
  on failure), its target namespace the object's own (a RolloutPolicy moves traffic in its own
  namespace only: the engine's ClusterRoles must not let a namespace's users reach others);
- `resolve(policy, stable, canary)`: the policy a run stores: the versions the controller
  decided, as metric labels and as identities (`IDENTITY_LABELS` in the snapshot's labels);
- the command annotation's format (what `kubectl canary promote` writes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from analyzer.core.rollout import Command
from analyzer.daemon.store import RolloutRecord
from analyzer.policy import API_VERSION, KIND, Policy, PolicyError, validate_policy

FINALIZER = "canary-analyzer.io/finalizer"
COMMAND_ANNOTATION = "canary-analyzer.io/command"
CANARY_LABEL = "canary-analyzer.io/canary-version"
STABLE_LABEL = "canary-analyzer.io/stable-version"

Obj = dict[str, Any]


def store_name(namespace: str, name: str) -> str:
    return f"{namespace}.{name}"


def key_of(obj: Obj) -> str:
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}"


def parse(obj: Obj) -> tuple[Policy | None, str | None]:
    """The object's policy (named `store_name`), or None and every problem in one message."""
    meta = obj["metadata"]
    ns, name = meta["namespace"], meta["name"]
    spec = json.loads(json.dumps(obj.get("spec") or {}))
    target = spec.get("target")
    if isinstance(target, dict):
        given = target.get("namespace")
        if given not in (None, ns):
            return None, (f"spec.target.namespace: {given!r}: a RolloutPolicy moves traffic in "
                          f"its own namespace only ({ns}); remove the field or create the "
                          f"RolloutPolicy in {given}")
        target["namespace"] = ns
    full = store_name(ns, name)
    if len(full) > 253:
        return None, (f"metadata.name: <namespace>.<name> must fit 253 characters (the "
                      f"engine's rollout name); {len(full)} here")
    raw = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": full}, "spec": spec}
    try:
        return validate_policy(raw, f"RolloutPolicy {ns}/{name}"), None
    except PolicyError as e:
        return None, "; ".join(f"{p.path or '(spec)'}: {p.message}" for p in e.problems)


def labels_for(policy: Policy, stable: str, canary: str) -> tuple[str, str]:
    """(stable, canary) as the metric labels / router names of a run: the policy's own when it
    names them (Seldon predictors, fixed Deployments' labels), else the versions."""
    target = policy.spec.target
    if target.canary is not None:
        return target.stable or stable, target.canary
    return stable, canary


def resolve(policy: Policy, stable: str, canary: str) -> Policy:
    """The policy a run of `stable -> canary` stores."""
    stable_label, canary_label = labels_for(policy, stable, canary)
    return policy.with_versions(stable=stable_label, canary=canary_label,
                                labels={STABLE_LABEL: stable, CANARY_LABEL: canary})


def identity(run: RolloutRecord, which: str) -> str:
    """A run's canary or stable version (its identity, else its label)."""
    labels = (run.policy.get("metadata") or {}).get("labels") or {}
    if which == "canary":
        return str(labels.get(CANARY_LABEL) or run.canary_version)
    return str(labels.get(STABLE_LABEL) or run.stable_version)


def same_spec(a: Policy, b: Policy) -> bool:
    """Equal but for the versions and labels a run's snapshot carries."""
    def strip(p: Policy) -> Obj:
        d = p.model_dump(mode="json")
        d["metadata"].pop("labels", None)
        d["spec"]["target"].pop("stable", None)
        d["spec"]["target"].pop("canary", None)
        return d
    return strip(a) == strip(b)


@dataclass(frozen=True)
class CommandRequest:
    """The command annotation: `{"command": "promote", "id": "...", "actor": "..."}`."""

    command: Command
    id: str
    actor: str

    def to_annotation(self) -> str:
        return json.dumps({"command": str(self.command), "id": self.id, "actor": self.actor},
                          sort_keys=True)

    @classmethod
    def parse(cls, value: str) -> CommandRequest:
        """ValueError naming what is wrong."""
        try:
            data = json.loads(value)
        except ValueError:
            raise ValueError(f"annotation {COMMAND_ANNOTATION} is not JSON") from None
        if not isinstance(data, dict):
            raise ValueError(f"annotation {COMMAND_ANNOTATION} must be a JSON object")
        try:
            command = Command(str(data.get("command")))
        except ValueError:
            raise ValueError(f"annotation {COMMAND_ANNOTATION}: command must be one of "
                             f"{', '.join(c.value for c in Command)}") from None
        rid = str(data.get("id") or "")
        if not rid or len(rid) > 64:
            raise ValueError(f"annotation {COMMAND_ANNOTATION}: id must be 1 to 64 characters")
        return cls(command, rid, str(data.get("actor") or "kubectl")[:80])
