"""Every notebook executes top to bottom without error (nbclient, the test interpreter's kernel)."""

import glob
import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))


def test_committed_notebooks_equal_a_rebuild(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("nb_build", os.path.join(ROOT, "notebooks", "build.py"))
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    build.build(str(tmp_path))
    built = sorted(os.listdir(tmp_path))
    assert built == [os.path.basename(p) for p in NOTEBOOKS], "run python notebooks/build.py and commit"
    for name in built:
        with open(tmp_path / name) as f, open(os.path.join(ROOT, "notebooks", name)) as g:
            assert f.read() == g.read(), f"{name} differs from a rebuild: run python notebooks/build.py and commit"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "store notebooks without outputs"
    os.environ["HF_HUB_OFFLINE"] = "1"  # the kernel inherits the environment (and this interpreter's venv)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
