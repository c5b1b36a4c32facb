"""Executes every notebook top to bottom, each under a time limit, as a user would.

    python .ci/run_notebooks.py [--timeout 300] [--output-dir DIR] [notebooks/01_quickstart.ipynb ...]

Each notebook runs through ``jupyter nbconvert --to notebook --execute`` (the README's
command) in its own process group, with ``--timeout`` seconds for the whole notebook (the
group is killed when it runs over) and the same as nbconvert's per-cell limit. Executed
copies go to ``--output-dir`` (default: a new temporary directory), never back into the
repository. Prints ``notebook <name>: ok in <s> s`` per notebook; on an error, the failing
cell's traceback; exits 1 if any notebook failed or ran over.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_one(path: Path, out_dir: Path, timeout: int) -> tuple[bool, float, str]:
    """(ok, seconds, log tail) of executing ``path`` into ``out_dir``."""
    cmd = [
        sys.executable,
        "-m",
        "nbconvert",
        "--to",
        "notebook",
        "--execute",
        f"--ExecutePreprocessor.timeout={timeout}",
        "--output-dir",
        str(out_dir),
        str(path),
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the kernel is nbconvert's child: kill the whole group
    )
    try:
        log, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        return False, time.perf_counter() - start, f"timed out after {timeout} s\n{log[-4000:]}"
    return proc.returncode == 0, time.perf_counter() - start, log[-8000:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per notebook")
    parser.add_argument("--output-dir", type=Path, help="default: a new temporary directory")
    args = parser.parse_args(argv)
    paths = args.paths or sorted((REPO / "notebooks").glob("*.ipynb"))
    if not paths:
        print("run_notebooks: no notebooks found", file=sys.stderr)
        return 1
    out_dir = args.output_dir or Path(tempfile.mkdtemp(prefix="embres_notebooks_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    if out_dir.resolve() == (REPO / "notebooks").resolve():
        print("run_notebooks: --output-dir must not be notebooks/ itself", file=sys.stderr)
        return 1
    print(f"executing {len(paths)} notebooks into {out_dir} ({args.timeout} s limit each)")
    failed = []
    for path in paths:
        ok, seconds, log = run_one(path.resolve(), out_dir, args.timeout)
        print(f"notebook {path.name}: {'ok' if ok else 'FAILED'} in {seconds:.0f} s", flush=True)
        if not ok:
            failed.append(path.name)
            print(log, flush=True)
    if failed:
        print(f"run_notebooks: {len(failed)} failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
