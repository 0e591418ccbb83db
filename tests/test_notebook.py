"""notebooks/quickstart.ipynb executes top to bottom at smoke scale."""

import os

import pytest

import nbformat
from nbclient import NotebookClient

from conftest import REPO_ROOT, mbii_train_dir

pytestmark = pytest.mark.slow


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
  monkeypatch.setenv("HGRAD_MBII_DIR", mbii_train_dir())
  path = os.path.join(REPO_ROOT, "notebooks", "quickstart.ipynb")
  notebook = nbformat.read(path, as_version=4)
  NotebookClient(notebook, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
  assert not [o for o in outputs if o.output_type == "error"]
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) >= 4, "gallery, curve, samples and predictions are shown"
