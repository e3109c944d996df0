"""Every notebook is a jupytext pair in sync, committed without outputs, with a kernelspec."""

import json
from pathlib import Path

import jupytext
import pytest
from jupytext.compare import compare_notebooks

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PY_FILES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
IPYNB_FILES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert PY_FILES, "no notebooks/NN_topic.py found"


@pytest.mark.parametrize("py", PY_FILES, ids=lambda p: p.name)
def test_pair_exists_and_is_in_sync(py):
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.exists(), f"{py.name} has no paired {ipynb.name}; run `jupytext --sync {py}`"
    compare_notebooks(jupytext.read(ipynb), jupytext.read(py), fmt="py:percent")  # raises when they differ


@pytest.mark.parametrize("ipynb", IPYNB_FILES, ids=lambda p: p.name)
def test_ipynb_has_py_no_outputs_and_kernelspec(ipynb):
    assert ipynb.with_suffix(".py").exists(), f"{ipynb.name} has no paired .py"
    nb = json.loads(ipynb.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{ipynb.name}: cells {dirty} carry outputs; strip them before committing"
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{ipynb.name}: needs exactly one cell tagged 'parameters'"


def test_compare_detects_a_difference(tmp_path):
    """The sync check itself can fail: an edited .py no longer matches its .ipynb."""
    py = PY_FILES[0]
    edited = tmp_path / py.name
    edited.write_text(py.read_text() + "\n# %%\nprint('drift')\n")
    with pytest.raises(Exception):
        compare_notebooks(jupytext.read(py.with_suffix(".ipynb")), jupytext.read(edited), fmt="py:percent")
