"""Both notebooks run end to end (nbclient, the venv's ipykernel) on a rollout recorded by the
engine, and draw their figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

from tests.sre.conftest import REPO, Recorded


def run_notebook(name: str, params: dict[str, Any], cwd: Path) -> Any:
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert all(f"{k} =" in cell.source for k in params)  # only known parameters are set
    cell.source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    # kernel "python3" is the venv's ipykernel (jupyter_client starts it with sys.executable)
    NotebookClient(nb, kernel_name="python3", timeout=180,
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def images(nb: Any) -> int:
    return sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if "image/png" in o.get("data", {}))


def test_postmortem_notebook(recorded: Recorded, tmp_path: Path) -> None:
    store = recorded.store()
    checks = {v["name"] for t in store.ticks(recorded.regressed_id) for v in t.verdicts}
    nb = run_notebook("postmortem.ipynb", {
        "STORE": recorded.url, "ROLLOUT": "web-regressed",
        "WHAT_IF": {"tolerance": 3.0}, "OUT_DIR": str(tmp_path / "pm"),
    }, tmp_path)
    # weight, error rate, latency, one per check, and the what-if comparison
    assert images(nb) >= 3 + len(checks) + 1
    for png in ("weight", "error-rate", "latency", "check-error-rate", "what-if"):
        assert (tmp_path / "pm" / f"{png}.png").stat().st_size > 1000
    assert (tmp_path / "pm" / "report" / "index.html").is_file()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "0 tick(s) differ from the record" in text  # its own policy reproduces the record
    assert "first change at tick" in text
    # the tick numbers are canary history's: the rollback's, and the last tick's
    ticks = store.ticks(recorded.regressed_id)
    rollback = next(t for t in ticks if t.action == "rollback")
    assert f"recorded policy replayed: rolled_back at tick {rollback.seq} (" in text
    assert f"rolled_back at weight 0% at tick {ticks[-1].seq}\n" in text


def test_policy_tuning_notebook(tmp_path: Path) -> None:
    nb = run_notebook("policy-tuning.ipynb", {
        "POLICY": str(REPO / "policies" / "local-simulated.yaml"), "RPS": 4000,
        "BASE_ERROR_RATE": 0.02, "REGRESSION": "error-rate=3x", "RUNS": 4, "SEED": 1,
        "GRID": {"alpha": [0.01, 0.1], "tolerance": [0.25, 0.5]},
        "HEAVY": False, "HEAVY_GRID": {"alpha": [0.01], "tolerance": [0.25]},
        "MAX_FALSE_ROLLBACK": 0.5, "MIN_DETECTION": 0.5, "OUT_DIR": str(tmp_path / "tune"),
    }, tmp_path)
    assert images(nb) >= 2
    for png in ("tradeoff", "detection-and-promotion"):
        assert (tmp_path / "tune" / f"{png}.png").stat().st_size > 1000
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "settings:" in text or "no setting" in text
    # the progress bar, updated in place to its end: 4 runs x 2 scenarios x 4 settings
    bars = [o["data"]["text/plain"] for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if "simulating [" in o.get("data", {}).get(
                "text/plain", "")]
    assert len(bars) == 1 and "] 32/32 runs" in bars[0], bars


def test_policy_tuning_notebook_heavy_settings_are_an_option() -> None:
    """The defaults stay light (about a minute on 2 cores); HEAVY switches to 200 runs over
    HEAVY_GRID in the cell that runs the simulation."""
    nb = nbformat.read(REPO / "notebooks" / "policy-tuning.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    scope: dict[str, Any] = {}
    exec(params.source, scope)  # plain assignments
    assert scope["RUNS"] <= 25 and not scope["HEAVY"]
    assert len(scope["GRID"]["alpha"]) * len(scope["GRID"]["tolerance"]) <= 4
    assert len(scope["HEAVY_GRID"]["alpha"]) * len(scope["HEAVY_GRID"]["tolerance"]) == 9
    run = next(c for c in nb.cells if "simulate_grid(" in c.source)
    assert "if HEAVY:\n    RUNS, GRID = 200, HEAVY_GRID" in run.source


def test_postmortem_notebook_runs_out_of_the_box(tmp_path: Path) -> None:
    """With its default parameters, from notebooks/ (where Jupyter starts it), the postmortem
    opens the shipped example store and draws its figures."""
    nb = nbformat.read(REPO / "notebooks" / "postmortem.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = cell.source.replace('OUT_DIR = "postmortem-out"',
                                      f"OUT_DIR = {str(tmp_path / 'pm')!r}")
    assert str(tmp_path) in cell.source  # only the output directory was changed
    NotebookClient(nb, kernel_name="python3", timeout=180,
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    assert images(nb) >= 5
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "rollout checkout#1: v1 -> v2, rolled_back" in text


def test_shipped_example_store_is_what_the_script_records(tmp_path: Path) -> None:
    """notebooks/data/example.db is made by scripts/record_example_rollouts.py from the engine,
    not by hand: a fresh recording gives the same ticks and decisions (when the engine's
    decisions change, rerun the script)."""
    import importlib.util

    from analyzer.daemon.store import Store

    spec = importlib.util.spec_from_file_location(
        "record_example_rollouts", REPO / "scripts" / "record_example_rollouts.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    fresh = tmp_path / "fresh.db"
    assert script.record(fresh) == {"checkout": "rolled_back", "checkout-healthy": "succeeded"}

    def decisions(path: Path) -> dict[str, list[tuple[object, ...]]]:
        store = Store(f"sqlite:///{path}", migrate=False)
        try:
            return {r.name: [(t.seq, t.action, t.decision, t.weight_after, t.reason)
                             for t in store.ticks(r.id)] for r in store.list_rollouts()}
        finally:
            store.dispose()

    shipped = decisions(REPO / "notebooks" / "data" / "example.db")
    assert shipped == decisions(fresh), (
        "notebooks/data/example.db is stale: run .venv/bin/python "
        "scripts/record_example_rollouts.py")
