"""Execute both notebooks with their default parameters, as a user would open them: the
working directory is notebooks/, so the postmortem opens the shipped example store
(notebooks/data/example.db) and the tuning notebook ../policies/local-simulated.yaml. Executed
copies go to out/notebooks/ (the repository's notebooks stay without outputs); the figures go
where each notebook's OUT_DIR says (notebooks/postmortem-out, notebooks/tuning-out; ignored by
git).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "out" / "notebooks"


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    work = REPO / "notebooks"
    for name in ("postmortem.ipynb", "policy-tuning.ipynb"):
        started = time.monotonic()
        print(f"executing notebooks/{name} ...", flush=True)
        nb = nbformat.read(work / name, as_version=4)
        NotebookClient(nb, kernel_name="python3", timeout=1800,
                       resources={"metadata": {"path": str(work)}}).execute()
        nbformat.write(nb, OUT / name)
        figures = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                      if "image/png" in o.get("data", {}))
        print(f"  done in {time.monotonic() - started:.0f}s: {figures} figures; executed copy "
              f"{(OUT / name).relative_to(REPO)}")
    print(f"figures and reports: {work.relative_to(REPO)}/postmortem-out, "
          f"{work.relative_to(REPO)}/tuning-out; open the notebooks with "
          f"`.venv/bin/jupyter lab notebooks/`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
