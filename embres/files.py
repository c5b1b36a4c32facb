"""Writing files so that nothing half-written is ever read, with the user's permissions.

Every writer in embres that replaces a file a reader may open (reports, plots, caches,
metrics, exports) goes through :func:`atomic_path`: it writes a temporary file of its own
next to the target and renames it over the target only when the write finished. A reader,
or a run killed mid-write, sees the old file or the new one, and a failed write leaves no
temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary path beside ``path``, renamed onto it when the block succeeds.

    The temporary name is unique per call (pid and random hex), so concurrent writers never
    share one; it keeps ``path``'s suffix (``np.save`` and ``savefig`` go by it). On an
    exception the temporary file is removed and ``path`` is untouched.

    Example::

        with atomic_path(out / "targets.npy") as tmp:
            np.save(tmp, targets)
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` through :func:`atomic_path`; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def umask() -> int:
    """The process's umask, read without changing it where Linux reports it (/proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def apply_umask(folder: str | os.PathLike) -> None:
    """Gives every file and folder under ``folder`` the mode a plain ``open()``/``mkdir`` would.

    Libraries that write through private temporary files (safetensors: mode 0600) and copies
    (which keep their source's mode) otherwise leave files the user cannot share as usual.
    """
    mask = umask()
    for path in Path(folder).rglob("*"):
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def remove(path: str | os.PathLike) -> None:
    """Removes a file, a symlink or a whole folder."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def first_missing(path: str | os.PathLike) -> Path | None:
    """The topmost folder of ``path`` that does not exist yet (what ``mkdir -p`` would create)."""
    missing = None
    for folder in (Path(path), *Path(path).parents):
        if folder.exists():
            break
        missing = folder
    return missing
