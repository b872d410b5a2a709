"""The three notebooks run top to bottom, headless, in FAST mode, on the sample in data/."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def parameter_cell(notebook):
    cells = [c for c in notebook.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "each notebook has exactly one cell tagged 'parameters'"
    return cells[0]


def test_there_are_three_notebooks():
    assert [n.name for n in NOTEBOOKS] == ["01_cats_vs_dogs.ipynb", "02_cifar10.ipynb",
                                          "03_export_and_deploy.ipynb"]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_fast_mode(path, tmp_path, monkeypatch):
    notebook = nbformat.read(path, as_version=4)
    cell = parameter_cell(notebook)
    cell.source = cell.source.replace("FAST = False", "FAST = True")
    assert "FAST = True" in cell.source
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    # A copy of the notebook in notebooks/ keeps its relative paths; runs go to notebooks/runs/.
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO / "notebooks")}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any({"image/png", "image/jpeg"} & set(o.get("data", {})) for o in outputs), "figures are shown inline"
