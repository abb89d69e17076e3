"""The notebooks run top to bottom on a fresh kernel, and are committed without outputs.

Each notebook is executed with nbclient on a kernel that runs *this*
interpreter (``sys.executable``): the test writes its own kernelspec into a
temporary ``JUPYTER_PATH``, so it works on a machine where no Jupyter kernel
is installed. The kernel's working directory and ``TMPDIR`` are the test's
temporary directory, so everything the notebook writes lands there.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = [
    "01-quickstart.ipynb",
    "02-custom-kernels.ipynb",
    "03-distributed.ipynb",
    "04-reproject-to-s3.ipynb",
]

#: A kernel name no system-wide kernelspec uses, so it can only resolve to ours.
KERNEL_NAME = "rdask-test-python"


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kernelspec for ``sys.executable`` and private Jupyter/IPython dirs; returns the cwd."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python ({sys.executable})",
        "language": "python",
        "metadata": {"debugger": False},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))  # the notebooks' tempfile.mkdtemp() goes here
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    return cwd


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name: str, kernel_env: Path) -> None:
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(kernel_env)}},
    )
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell's traceback, on any error
    seconds = time.perf_counter() - t0
    print(f"{name}: {seconds:.1f} s")
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
    # Notebooks write into a temporary directory only, never into the cwd.
    assert sorted(p.name for p in kernel_env.iterdir()) == []


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stripped(name: str) -> None:
    """Committed notebooks carry no outputs, so diffs show only what changed in the code."""
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{name} has no code cells"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [], f"{name}: cell {i} has outputs; strip them before committing"
        assert cell.execution_count is None, f"{name}: cell {i} has an execution count"
        assert "execution" not in cell.metadata, f"{name}: cell {i} has execution timings"
