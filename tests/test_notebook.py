"""The shipped notebook runs top to bottom on the tiny model (so it cannot rot)."""

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import ROOT



@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path):
    notebook = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    source = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    assert "USE_REAL_MODEL = False" in source  # CI runs the tiny model
    NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = "\n".join(str(o.get("text", "")) for cell in notebook.cells for o in cell.get("outputs", []))
    assert "best validation accuracy" in outputs and "accuracy:" in outputs
    assert (ROOT / "outputs" / "notebook" / "submission.csv").is_file()
    assert (ROOT / "outputs" / "notebook" / "merged" / "model.safetensors").is_file()
    assert not any(o.get("output_type") == "error" for cell in notebook.cells for o in cell.get("outputs", []))
