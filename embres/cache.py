"""Compute once, cache atomically: the one helper every cached artefact goes through.

:func:`build_once` builds an artefact (a file or a folder) on process 0 only, into a
temporary sibling that is renamed onto the target when complete, and records beside it the
key it was built for (what it depends on: file digests, settings, versions) and the sizes of
its files. It is reused when the record holds the same key and the files still have their
recorded sizes; otherwise (a different key, a truncated or unreadable artefact, a failed
``check``) the reason is reported and it is rebuilt. Every process waits for process 0
(``jax.experimental.multihost_utils.sync_global_devices``), then checks that the artefact it
is about to read is the one built for its key (so a non-shared filesystem or a failed build
on process 0 is an error naming the path, not a hang or a silent misread).

Keys should name contents, not file sizes or times: :func:`file_digest` (sha256 of a file's
bytes, computed once per file version) and :func:`digest` (sha256 of JSON facts) serve
that; :func:`keyed_path` names a file by its key, so artefacts of different keys coexist.

Example::

    key = {"corpus": file_digest(corpus), "max_length": 64, "version": 2}
    path = build_once(cache_dir / "targets", key, lambda tmp: write_targets(tmp),
                      process_index=jax.process_index(), process_count=jax.process_count())
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from embres.locking import pid_alive

RECORD = ".embres-cache.json"  # inside a folder artefact; a file's record is a sibling
RECORD_VERSION = 1


def digest(facts: Any) -> str:
    """sha256 hex of JSON facts (sorted keys)."""
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """sha256 hex of a file's bytes, computed once per version (path, size, mtime) of it."""
    path = Path(path).expanduser().resolve()
    stat = path.stat()
    version = (str(path), stat.st_size, stat.st_mtime_ns)
    if version not in _DIGESTS:
        sha = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
        _DIGESTS[version] = sha.hexdigest()
    return _DIGESTS[version]


def keyed_path(directory: str | os.PathLike, name: str, key: Any, suffix: str = "") -> Path:
    """``directory/<name>-<first 16 hex of digest(key)><suffix>``."""
    return Path(directory).expanduser() / f"{name}-{digest(key)[:16]}{suffix}"


def record_path(path: Path) -> Path:
    """Where the record of the artefact at ``path`` is kept (inside a folder, beside a file)."""
    return path / RECORD if path.is_dir() else path.with_name(f".{path.name}{RECORD}")


def _sizes(path: Path) -> dict[str, int]:
    if not path.is_dir():
        return {"": path.stat().st_size}
    return {
        str(p.relative_to(path)): p.stat().st_size
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != RECORD
    }


def _normalised(key: Any) -> Any:
    try:
        return json.loads(json.dumps(key, sort_keys=True))
    except TypeError as e:
        raise TypeError(f"a cache key must be JSON-serialisable: {e}") from None


def stale_reason(path: str | os.PathLike, key: Any, check: Callable[[Path], None] | None = None):
    """None when ``path`` holds the artefact built for ``key``, else why not (one line)."""
    path = Path(path)
    if not path.exists():
        return "absent"
    try:
        record = json.loads(record_path(path).read_text())
    except (OSError, ValueError):
        return "no record of what it was built from"
    if record.get("version") != RECORD_VERSION or record.get("key") != _normalised(key):
        return "built for another key (its inputs changed)"
    try:
        sizes = _sizes(path)
    except OSError as e:
        return f"unreadable ({e})"
    if sizes != record.get("files"):
        return f"files changed since it was built (sizes {sizes} != recorded {record.get('files')})"
    if check is not None:
        try:
            check(path)
        except (OSError, ValueError) as e:
            return f"corrupt ({e})"
    return None


def _sibling(path: Path, tag: str) -> Path:
    """``<stem>.<tag><suffix>`` beside ``path``: the suffix kept (``np.save`` goes by it)."""
    return path.with_name(f"{path.stem}.{tag}{path.suffix}")


def remove_stale(path: Path) -> None:
    """Removes ``<stem>.partial-<host>-<pid><suffix>`` / ``.old-...`` leftovers of dead
    builds on this host (and of this process)."""
    host = socket.gethostname()
    for tag in ("partial", "old"):
        prefix = f"{path.stem}.{tag}-"
        for leftover in path.parent.glob(f"{prefix}*{path.suffix}"):
            middle = leftover.name[len(prefix) : len(leftover.name) - len(path.suffix)]
            owner, _, pid = middle.rpartition("-")
            if (
                owner == host
                and pid.isdigit()
                and (int(pid) == os.getpid() or not pid_alive(int(pid)))
            ):
                _remove(leftover)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def swap_in(built: Path, path: Path, tag: str) -> None:
    """Moves the complete artefact ``built`` to ``path``, replacing what ``path`` held.

    A file is replaced by one rename. A folder cannot be: the old one is moved aside to
    ``<stem>.old-<tag><suffix>`` first, and put back if the second rename fails.
    """
    if not (path.exists() and (path.is_dir() or built.is_dir())):
        os.replace(built, path)
        return
    old = _sibling(path, f"old-{tag}")
    os.replace(path, old)
    try:
        os.replace(built, path)
    except OSError:
        os.replace(old, path)
        raise
    _remove(old)


def _write_record(path: Path, key: Any) -> None:
    from embres.files import atomic_write_text

    record = {"version": RECORD_VERSION, "key": _normalised(key), "files": _sizes(path)}
    atomic_write_text(record_path(path), json.dumps(record, indent=1))


def _build(path: Path, key: Any, build: Callable[[Path], None]) -> None:
    """``build(tmp)`` into a sibling, its record written, swapped onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    tag = f"{socket.gethostname()}-{os.getpid()}"
    tmp = _sibling(path, f"partial-{tag}")
    try:
        build(tmp)
        if not tmp.exists():
            raise RuntimeError(f"the build of {path} wrote nothing at the path it was given")
        if tmp.is_dir():  # the record travels with the folder: one rename publishes both
            _write_record(tmp, key)
        else:  # the old record goes first: a crash never pairs new bytes with an old key
            record_path(path).unlink(missing_ok=True)
        swap_in(tmp, path, tag)
        if not path.is_dir():
            _write_record(path, key)
    finally:
        _remove(tmp)


def _sync(name: str) -> None:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def build_once(
    path: str | os.PathLike,
    key: Any,
    build: Callable[[Path], None],
    *,
    process_index: int = 0,
    process_count: int = 1,
    log: Callable[[str], Any] = print,
    check: Callable[[Path], None] | None = None,
    replaceable: Callable[[Path], bool] | None = None,
) -> Path:
    """The artefact at ``path`` built for ``key``: reused, or built once by process 0.

    Args:
      path: the artefact, a file or a folder (``build`` decides which).
      key: JSON facts the artefact depends on (file digests, settings, a format version).
      build: ``build(tmp)`` writes the whole artefact at ``tmp`` (a file or a folder, absent
        when called; it keeps ``path``'s suffix); run on process 0 only, and only when the
        artefact is absent or stale.
      process_index, process_count: this process and the run's process count; every
        process calls ``build_once`` and waits for process 0.
      log: reports why an existing artefact is rebuilt (on process 0).
      check: ``check(path)`` raises ``OSError``/``ValueError`` on an artefact that must not
        be used (e.g. an array that does not load); it is then rebuilt.
      replaceable: whether an existing folder with no record (not built by this helper) may
        be replaced (it may raise its own ``ValueError`` instead of answering False);
        default: only an empty one. A file with no record is replaced.

    Returns:
      ``path``.

    Raises:
      ValueError: an existing folder with no record that ``replaceable`` refuses.
      RuntimeError: on a process other than 0, when the artefact is not there for ``key``
        after process 0 finished (a failed build there, or no shared filesystem).
      whatever ``build`` raises (on process 0, after the other processes were released).
    """
    path = Path(path).expanduser()
    error: BaseException | None = None
    if process_index == 0:
        try:
            _ensure(path, key, build, log, check, replaceable)
        except BaseException as e:  # the others must still be released from the barrier
            error = e
    if process_count > 1:
        _sync(f"embres_cache_{digest([path.name, _normalised(key)])[:24]}")
    if error is not None:
        raise error
    if process_index != 0 and (reason := stale_reason(path, key)) is not None:
        raise RuntimeError(
            f"process {process_index}: {path} is {reason} after process 0 built it; the cache "
            "must be on a filesystem every process shares (see process 0's log for its error)"
        )
    return path


def _ensure(path, key, build, log, check, replaceable) -> None:
    reason = stale_reason(path, key, check)
    if reason is None:
        return
    if path.is_dir() and not record_path(path).exists():
        allowed = replaceable(path) if replaceable else not any(path.iterdir())
        if not allowed:
            raise ValueError(
                f"{path} exists and holds files this cache did not write; refusing to replace "
                "it (delete it, or choose another cache folder)"
            )
    if reason != "absent":
        log(f"cache {path}: {reason}; rebuilding")
    _build(path, key, build)
