"""A real read-only folder for tests of writes that must fail with EROFS.

Recipe: mount a small tmpfs on a fresh folder under the test's ``tmp_path``, write any files
the test needs into it, remount it read-only (``mount -o remount,ro``), check that a write
there fails with ``errno.EROFS``, and unmount it afterwards. It needs root (or
CAP_SYS_ADMIN) and the ``mount`` command; where either is missing the test is skipped with
the reason. (``/sys`` and ``/proc`` are no substitute: as root, writes there fail with EPERM
or ENOENT, not EROFS.)

Usage::

    from _readonly import readonly_dir

    def test_x(tmp_path):
        with readonly_dir(tmp_path, files={"a.txt": "text"}) as ro:
            ...  # ro is a read-only folder holding a.txt
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


def _skip_unless_ok(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0:
        pytest.skip(f"cannot make a read-only folder ({what}): {proc.stderr.strip()}")


def _check_read_only(folder: Path) -> None:
    """Skips unless creating a file in ``folder`` fails with EROFS."""
    try:
        (folder / ".write_probe").mkdir()
    except OSError as e:
        if e.errno != errno.EROFS:
            pytest.skip(f"writing in the read-only mount {folder} gave {e!r}, not EROFS")
        return
    pytest.skip(f"the read-only mount {folder} accepted a write")


@contextlib.contextmanager
def readonly_dir(parent: Path, files: Mapping[str, str] | None = None) -> Iterator[Path]:
    """A folder ``parent/readonly`` on a read-only tmpfs holding ``files`` (name -> text).

    Skips the test (``pytest.skip`` with the reason) where no such folder can be made.
    """
    if shutil.which("mount") is None or not hasattr(os, "geteuid"):
        pytest.skip("cannot make a read-only folder: no mount command")
    if os.geteuid() != 0:
        pytest.skip("cannot make a read-only folder: mounting a tmpfs needs root")
    folder = Path(parent) / "readonly"
    folder.mkdir(parents=True, exist_ok=False)
    _skip_unless_ok(_mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)), "mount")
    try:
        for name, text in (files or {}).items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text, encoding="utf-8")
        _skip_unless_ok(_mount("-o", "remount,ro", str(folder)), "remount read-only")
        _check_read_only(folder)
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True, timeout=30, check=True)
