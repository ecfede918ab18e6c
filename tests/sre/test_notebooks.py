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
    assert "first change at interval" in text


def test_policy_tuning_notebook(tmp_path: Path) -> None:
    nb = run_notebook("policy-tuning.ipynb", {
        "POLICY": str(REPO / "policies" / "local-simulated.yaml"), "RPS": 4000,
        "BASE_ERROR_RATE": 0.02, "REGRESSION": "error-rate=3x", "RUNS": 4, "SEED": 1,
        "GRID": {"alpha": [0.01, 0.1], "tolerance": [0.25, 0.5]},
        "MAX_FALSE_ROLLBACK": 0.5, "MIN_DETECTION": 0.5, "OUT_DIR": str(tmp_path / "tune"),
    }, tmp_path)
    assert images(nb) >= 2
    for png in ("tradeoff", "detection-and-promotion"):
        assert (tmp_path / "tune" / f"{png}.png").stat().st_size > 1000
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "settings:" in text or "no setting" in text
