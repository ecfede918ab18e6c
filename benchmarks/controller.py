"""The RolloutPolicy controller against a real kube-apiserver: what a pass costs for N policies,
and how the status writer coalesces.

For each N: N RolloutPolicies (explicit versions, dry-run router) in a fresh namespace of the
tests' real API server (tests/support/kube_cluster.py), one Controller on a SQLite store. We
time the first pass (it adds N finalizers, starts N rollouts and hands N statuses to the
writer), the time until the writer has written them all, and steady passes (nothing changed:
the store is read, no status is written). Then every rollout is ticked once and ten passes run
back to back (as the loop does when events keep arriving): the table shows how many statuses
were submitted and how many reached the server.

    .venv/bin/python benchmarks/controller.py [--sizes 10,50,200]

Writes benchmarks/results/controller.md and its section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analyzer.daemon.controller import Controller  # noqa: E402
from analyzer.daemon.engine import Engine  # noqa: E402
from analyzer.daemon.store import Store  # noqa: E402
from benchmarks.dq_report import machine, replace_section  # noqa: E402
from tests.kube_controller.conftest import CRD_FILE, rollout_policy  # noqa: E402
from tests.support.kube_cluster import KubeCluster  # noqa: E402
from tests.support.kube_objects import ClusterObjects  # noqa: E402

RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
RESULTS_DIR = ROOT / "benchmarks" / "results"
NOW = datetime(2026, 3, 1, 10, tzinfo=UTC)


def measure(cluster: KubeCluster, n: int, tmp: Path) -> dict[str, float]:
    ns = cluster.create_namespace(f"bench-controller-{n}")
    objects = ClusterObjects(cluster, ns)
    for i in range(n):
        objects.seed(rollout_policy(f"p{i}", target={"service": "api", "stable": "v1",
                                                     "canary": "v2"},
                                    router={"provider": "dry-run"}))
    store = Store(f"sqlite:///{tmp / f'bench-{n}.db'}")
    c = Controller(store, cluster.api_client(), namespace=ns, status_interval=2.0,
                   watch_timeout=60, clock=lambda: NOW).start(loop=False)
    try:
        deadline = time.monotonic() + 60
        while len(c.objects) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        t0 = time.perf_counter()
        c.reconcile(NOW)
        first = time.perf_counter() - t0
        c.writer.flush(120)
        written = time.perf_counter() - t0
        steady = []
        for _ in range(5):
            t0 = time.perf_counter()
            c.reconcile(NOW)
            steady.append(time.perf_counter() - t0)
        engine = Engine(store)
        for r in store.list_rollouts(active_only=True):
            engine.tick(r.id, NOW)
        writes0, coalesced0 = c.writer.writes, c.writer.coalesced
        for _ in range(10):
            c.reconcile(NOW)
        c.writer.flush(120)
        return {"n": n, "first_pass_s": first, "all_written_s": written,
                "steady_pass_ms": statistics.median(steady) * 1000,
                "submits": 10 * n, "writes": c.writer.writes - writes0,
                "coalesced": c.writer.coalesced - coalesced0, "runs": len(store.list_rollouts())}
    finally:
        c.stop()
        store.dispose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10,50,200")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as d, KubeCluster() as cluster:
        cluster.install_crds(CRD_FILE)
        for n in sizes:
            rows.append(measure(cluster, n, Path(d)))
            print(rows[-1], flush=True)
    body = [
        "## RolloutPolicy controller",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}; kube-apiserver "
        f"{cluster.version} (the tests' cluster), SQLite store, one controller, "
        "`--status-interval` 2 s.",
        "",
        "| policies | first pass (s) | all statuses written (s) | steady pass (ms, median of 5) "
        "| statuses submitted in 10 passes | written | coalesced | runs started |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        body.append(f"| {r['n']} | {r['first_pass_s']:.2f} | {r['all_written_s']:.2f} | "
                    f"{r['steady_pass_ms']:.1f} | {r['submits']} | {r['writes']} | "
                    f"{r['coalesced']} | {r['runs']} |")
    text = "\n".join(body) + "\n"
    print(text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "controller.md").write_text("# RolloutPolicy controller\n\n" +
                                               text.split("\n", 2)[2])
    replace_section(RESULTS_MD, "controller", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
