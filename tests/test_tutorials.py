"""Every tutorial notebook runs from top to bottom in smoke mode (``CI`` set: tiny sizes, seconds).

Each notebook is executed on a copy in a temporary folder, so the outputs saved in the
repository are never touched and files a notebook writes land in the temporary folder. The
kernel inherits this process's environment: ``CI=1`` selects smoke mode and
``JUPYTER_PLATFORM_DIRS=1`` opts in to Jupyter's platformdirs paths (which silences the
DeprecationWarning jupyter_core raises about the migration). A cell error fails the test, and
so does a warning printed by a cell: a tutorial should read cleanly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
CELL_TIMEOUT_S = 300  # smoke mode takes seconds; this only stops a hung kernel


def test_tutorials_exist():
    assert NOTEBOOKS, f"no notebooks in {TUTORIALS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_tutorial_runs_in_smoke_mode(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CI", "1")
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny smoke sizes: a second thread only adds contention
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    nb = nbformat.read(copy, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and the traceback, on any error

    warned = [
        (i, out["text"])
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream" and out.get("name") == "stderr" and "Warning" in out["text"]
    ]
    assert not warned, f"{path.name}: cells printed warnings: {warned}"
