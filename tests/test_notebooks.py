"""Notebooks cannot rot: their cells parse and import names that exist, and the suite runs them.

The slow test executes each notebook top to bottom in a Jupyter kernel of the running interpreter
(``kernel_name="python3"``: ipykernel's own kernel spec, no ``ipykernel install`` needed), from the
notebooks folder as Jupyter would, with ``KDSCENE_ROOT`` in a temporary folder and ``KDSCENE_FAST=1``
(the notebooks' smoke-run switch), and checks that nothing was written next to the notebooks.
"""

import ast
import importlib
import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
EXPECTED = {"attention_maps.ipynb", "distill_your_own_model.ipynb"}


def test_both_notebooks_are_there():
    assert {p.name for p in NOTEBOOKS} >= EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_code_compiles_and_its_kdscene_imports_exist(path):
    nb = json.loads(path.read_text())
    assert nb["nbformat"] == 4
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    assert cells, "a notebook without code"
    for i, source in enumerate(cells):
        tree = ast.parse(source, filename=f"{path.name}[{i}]")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kdscene"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_cells_have_unique_ids_and_no_stored_outputs(path):
    nb = json.loads(path.read_text())
    assert (nb["nbformat"], nb["nbformat_minor"]) >= (4, 5), "cell ids need nbformat 4.5"
    ids = [c.get("id") for c in nb["cells"]]
    assert all(ids) and len(set(ids)) == len(ids), ids
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code), "clear the outputs"


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom_writing_only_under_kdscene_root(path, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    root = tmp_path / "root"
    monkeypatch.setenv("KDSCENE_ROOT", str(root))
    monkeypatch.setenv("KDSCENE_FAST", "1")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    # this interpreter's kernel: no user-level kernel specs (another Python's "python3"), the venv's first
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter_data"))
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "1")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter_runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    before = _listing(path.parent)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(path.parent)}}
    )
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable, end='')"))
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if a cell fails
    assert nb.cells[-1].outputs[0]["text"] == sys.executable, "the kernel ran another interpreter"
    assert _listing(path.parent) == before, "the notebook wrote next to itself"
    assert (root / "logs" / "notebooks").is_dir() and (root / "data" / "synthetic_scenes").is_dir()
