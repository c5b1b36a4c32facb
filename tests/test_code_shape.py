"""The shape the codebase keeps (issue 23): functions short enough to read in one screen."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "embres"
MAX_LINES = 80  # a function's lines from ``def`` to its last line, docstring included


def function_lengths(path: Path):
    """(name, first line, lines from ``def`` to the end) of every function in ``path``."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            yield node.name, node.lineno, node.end_lineno - first + 1


def test_no_function_in_embres_is_longer_than_80_lines():
    long = [
        f"{path.relative_to(PACKAGE.parent)}:{line} {name} ({n} lines)"
        for path in sorted(PACKAGE.rglob("*.py"))
        for name, line, n in function_lengths(path)
        if n > MAX_LINES
    ]
    assert not long, "split these into named steps:\n" + "\n".join(long)


def test_the_measure_counts_what_it_should(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(75))
    source = f'@decorator\ndef f():\n    """Doc.\n\n    More.\n    """\n{body}\n'
    (tmp_path / "m.py").write_text(source)
    # decorator + def line + 4 docstring lines + 75 statements
    assert list(function_lengths(tmp_path / "m.py")) == [("f", 2, 81)]
