"""Every notebook runs headless, at small sizes (FLYWHEEL_NOTEBOOK_SMALL=1), without a cell
error, and answers its question in generated prose. Notebooks are committed without outputs.

The kernel is ``python3``: jupyter_client runs it with this interpreter (sys.executable),
so the notebooks see the same installation as the tests.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 1800  # seconds; the critical-mass search is the longest cell


def test_there_is_a_notebook_per_case_family():
    assert len(NOTEBOOKS) >= 6, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebooks_are_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (path.name, cell.source)


def execute(nb, cwd: Path):
    """Run `nb` in a fresh python3 kernel; raise CellExecutionError on the first failing cell.

    The kernel talks over IPC sockets in a private folder, not TCP ports, so parallel kernels
    (or a Dask cluster started by another test) cannot race it for a port.
    """
    from nbclient import NotebookClient
    from traitlets.config import Config

    sockets = Path(tempfile.mkdtemp(prefix="nbk-"))  # short: socket paths are limited
    config = Config()
    config.KernelManager.transport = "ipc"
    config.KernelManager.ip = str(sockets / "k")
    try:
        # The client owns (starts, then shuts down and closes) its kernel manager.
        NotebookClient(
            nb,
            config=config,
            kernel_name="python3",
            timeout=CELL_TIMEOUT,
            resources={"metadata": {"path": str(cwd)}},
        ).execute()
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    return nb


@pytest.mark.slow
def test_the_kernel_is_this_interpreter(kernel_env, tmp_path):
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell("import sys; print(sys.executable)")])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    execute(nb, tmp_path)
    assert nb.cells[0].outputs[0]["text"].strip() == sys.executable


@pytest.fixture
def kernel_env(monkeypatch, tmp_path):
    """What the kernel inherits: small sizes, inline figures, our translation cache."""
    monkeypatch.setenv("FLYWHEEL_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("FLYWHEEL_NOTEBOOK_OUT", str(tmp_path))
    assert os.environ.get("FLYWHEEL_SD_CACHE")  # conftest's: translations stay out of the repo


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_answers_in_prose(path, kernel_env, tmp_path):
    nb = execute(nbformat.read(path, as_version=4), path.parent)
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    errors = [out for out in outputs if out.output_type == "error"]
    assert not errors
    prose = [
        out
        for out in outputs
        if out.output_type in ("display_data", "execute_result")
        and "text/markdown" in out.get("data", {})
    ]
    assert prose, f"{path.name} shows no generated prose"
    figures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert figures, f"{path.name} shows no plot"
