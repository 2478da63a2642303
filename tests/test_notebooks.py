"""Every notebook executes top to bottom without error, and the committed notebooks are what notebooks/build.py
writes.

The notebooks run one after another in one kernel (nbclient, the test interpreter's): a kernel and torch's
imports cost ~8 s each, the notebooks themselves a few seconds. Each notebook starts from an empty namespace
(`%reset -f`) in its own folder, so none can lean on another's variables; only imported modules and the
analyses' model cache carry over, as in a user's session."""

import glob
import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
NAMES = [os.path.basename(p) for p in NOTEBOOKS]


def test_committed_notebooks_equal_a_rebuild(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("nb_build", os.path.join(ROOT, "notebooks", "build.py"))
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    build.build(str(tmp_path))
    built = sorted(os.listdir(tmp_path))
    assert built == NAMES, "run python notebooks/build.py and commit"
    for name in built:
        with open(tmp_path / name) as f, open(os.path.join(ROOT, "notebooks", name)) as g:
            assert f.read() == g.read(), f"{name} differs from a rebuild: run python notebooks/build.py and commit"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """{notebook: its code cells after execution}: all notebooks in one kernel, errors recorded, not raised."""
    root = tmp_path_factory.mktemp("notebooks")
    combined, spans = nbformat.v4.new_notebook(), {}
    for path, name in zip(NOTEBOOKS, NAMES):
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{name}: store it without outputs"
        folder = root / name.removesuffix(".ipynb")
        folder.mkdir()
        combined.cells.append(nbformat.v4.new_code_cell(f"%reset -f\nimport os\nos.chdir({str(folder)!r})\ndel os"))
        start = len(combined.cells)
        combined.cells += [c for c in nb.cells if c.cell_type == "code"]
        spans[name] = (start, len(combined.cells))
    os.environ["HF_HUB_OFFLINE"] = "1"  # the kernel inherits the environment (and this interpreter's venv)
    client = NotebookClient(combined, timeout=300, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(root)}})
    client.execute()
    return {name: combined.cells[a:b] for name, (a, b) in spans.items()}


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(executed, name):
    cells = executed[name]
    assert cells and all(c.get("execution_count") for c in cells), f"{name}: a cell did not run"
    errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{name}: {errors[0]['ename']}: {errors[0]['evalue']}\n" + "\n".join(errors[0]["traceback"])
