"""The Kubernetes-native engine: RolloutPolicy objects in, rollouts, status and Events out.

- controller.py: the controller (`canary run --kubernetes`): threads, watches, ownership;
- reconcile.py: one policy's pass (finalizer, commands, spec changes, versions, status);
- policies.py: one RolloutPolicy as the engine sees it (parse, versions, the command
  annotation);
- versions.py: the version a canaryRef workload runs;
- status.py: status and Events from the store;
- writer.py: the background status and Event writer;
- watch.py: list-then-watch loops (resourceVersion, 410 Gone, bookmarks);
- kube.py: the API calls and the permissions they need.
"""

from analyzer.daemon.controller.controller import Controller, PgPolicyOwnership
from analyzer.daemon.controller.policies import (
    COMMAND_ANNOTATION,
    FINALIZER,
    CommandRequest,
    store_name,
)

__all__ = ["COMMAND_ANNOTATION", "FINALIZER", "CommandRequest", "Controller",
           "PgPolicyOwnership", "store_name"]
