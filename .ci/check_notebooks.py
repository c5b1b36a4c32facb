"""Checks that the notebooks are committed with their outputs stripped.

    python .ci/check_notebooks.py            # lists every offending cell, exit 1 if any
    python .ci/check_notebooks.py --strip    # strips outputs and execution counts in place

A code cell must have ``outputs == []`` and ``execution_count is None``, except a cell tagged
``keep-output`` (cell metadata ``"tags": ["keep-output"]``), which may keep image outputs: a
figure we deliberately show on GitHub. Widget state and other run-time notebook metadata are
not allowed either. ``tests/test_notebooks.py`` runs the same check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
KEEP_TAG = "keep-output"
FIGURE_TYPES = {"image/png", "image/svg+xml", "image/jpeg", "text/plain"}
RUNTIME_METADATA = ("widgets",)  # notebook-level keys a run leaves behind


def notebooks(root: Path = REPO) -> list[Path]:
    """The notebooks under ``notebooks/``, sorted, checkpoints excluded."""
    return sorted(
        p for p in (root / "notebooks").glob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
    )


def _kept_figure(cell) -> bool:
    return KEEP_TAG in cell.get("metadata", {}).get("tags", []) and all(
        out.get("output_type") == "display_data" and set(out.get("data", {})) <= FIGURE_TYPES
        for out in cell.get("outputs", [])
    )


def problems(path: Path) -> list[str]:
    """Every reason ``path`` is not a clean, stripped notebook (empty when it is)."""
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as e:  # malformed JSON or schema: report, do not crash the check
        return [f"{path.name}: not a valid notebook ({type(e).__name__}: {e})"]
    found = [f"{path.name}: notebook metadata {k!r}" for k in RUNTIME_METADATA if k in nb.metadata]
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        where = f"{path.name}: cell {index} ({cell.source.splitlines()[0][:40] if cell.source else ''!r})"
        if cell.get("execution_count") is not None:
            found.append(f"{where}: execution_count {cell.execution_count}")
        if cell.get("outputs") and not _kept_figure(cell):
            found.append(f"{where}: {len(cell.outputs)} output(s)")
    return found


def strip(path: Path) -> bool:
    """Strips outputs and counts in place (kept figures stay); returns whether it changed."""
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    for key in RUNTIME_METADATA:
        nb.metadata.pop(key, None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.execution_count = None
            if not _kept_figure(cell):
                cell.outputs = []
    after = nbformat.writes(nb)
    if after != before:
        path.write_text(after + ("" if after.endswith("\n") else "\n"), encoding="utf-8")
    return after != before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strip", action="store_true", help="strip outputs in place")
    parser.add_argument("paths", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    args = parser.parse_args(argv)
    paths = args.paths or notebooks()
    if not paths:
        print("check_notebooks: no notebooks found", file=sys.stderr)
        return 1
    if args.strip:
        for path in paths:
            print(f"{path}: {'stripped' if strip(path) else 'already clean'}")
        return 0
    found = [p for path in paths for p in problems(path)]
    for line in found:
        print(line)
    if found:
        print(
            f"check_notebooks: {len(found)} problem(s); run `python .ci/check_notebooks.py "
            "--strip` (or tag a deliberate figure's cell 'keep-output')",
            file=sys.stderr,
        )
        return 1
    print(f"check_notebooks: {len(paths)} notebooks stripped ({', '.join(p.name for p in paths)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
