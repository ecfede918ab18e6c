#!/usr/bin/env bash
# Start the tests' real Kubernetes API server (etcd + kube-apiserver, loopback only) by hand,
# for debugging and for checks outside pytest. Same setup as the `kube_cluster` pytest fixture
# (tests/support/kube_cluster.py): verified TLS, an admin token, RBAC, ServiceAccount keys and
# the CRDs from ../shared/schemas.
#
#   scripts/kube-test-cluster.sh start [--no-crds]   start it (kept running; state dir below)
#   eval "$(scripts/kube-test-cluster.sh env)"       KUBECONFIG (and kubectl on PATH) for it
#   scripts/kube-test-cluster.sh status              URL, pids, memory, log files (JSON)
#   scripts/kube-test-cluster.sh stop                stop it and remove its state dir
#
# State dir: ${XDG_RUNTIME_DIR:-/tmp}/canary-kube-test-cluster-$UID (--state-dir DIR overrides).
# Needs etcd and the kube-apiserver/kubectl that scripts/sysdeps.sh (`make test`) provides.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
[ -x "$python" ] || python=python3
cd "$repo"
exec "$python" -m tests.support.kube_cluster "$@"
