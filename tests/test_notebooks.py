"""The tutorial notebooks run top to bottom, offline with tiny models, and draw their figures.

Each notebook is executed in memory by a fresh ``python3`` kernel started in ``notebooks/``
(as Jupyter does); the kernel inherits this process's environment, so ``HF_HUB_OFFLINE`` and
the session's ``LRSVQA_CACHE`` (tests/conftest.py) apply. The stored files are never written:
they are kept without outputs.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("01_quickstart.ipynb", "02_benchmark.ipynb", "03_pruning.ipynb")
CELL_TIMEOUT_S = 300


def execute(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Run ``nb`` in place, in memory, in a python3 kernel whose working folder is notebooks/."""
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()  # raises CellExecutionError (cell source + traceback) on any error
    return nb


def _outputs(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]


def test_kernel_inherits_the_test_environment() -> None:
    source = "import os, pathlib\nprint(os.environ.get('LRSVQA_CACHE'))\nprint(pathlib.Path.cwd())"
    nb = execute(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)]))
    cache, cwd = "".join(o.get("text", "") for o in _outputs(nb)).splitlines()
    assert cache == os.environ["LRSVQA_CACHE"]  # tiny models land in the session's temp cache
    assert Path(cwd).resolve() == NOTEBOOKS.resolve()


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_clean(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, f"{name} has no code"
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code), (
        f"{name} is stored with outputs; clear them before committing"
    )
    assert 'os.environ["HF_HUB_OFFLINE"] = "1"' in code[0].source


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name: str) -> None:
    path = NOTEBOOKS / name
    stored = path.read_bytes()
    files_before = sorted(p.name for p in NOTEBOOKS.iterdir())
    nb = execute(nbformat.reads(stored.decode("utf-8"), as_version=4))
    outputs = _outputs(nb)
    errors = [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]
    assert not errors, f"{name}: {errors}"
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert figures, f"{name} produced no image/png output (its figures)"
    assert path.read_bytes() == stored, f"{name} was modified by its own run"
    assert sorted(p.name for p in NOTEBOOKS.iterdir()) == files_before, (
        f"{name} wrote files into {NOTEBOOKS}; write into a temporary folder instead"
    )
