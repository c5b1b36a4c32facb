"""One writer at a time: an advisory lock file that names its holder and dies with it.

``FileLock(path)`` takes an exclusive ``fcntl.flock`` on ``path`` and writes the holder (pid,
host, start time, command) into it. The kernel drops the lock when the holder exits, however
it exits (kill -9 included), so a crashed run never blocks the next one: the next holder
takes the file over and says whose it was. A second process asking while the lock is held
gets :class:`LockedError`, naming the holder, at once (no waiting).

The file is removed on release. Because another process may have opened the old file just
before, an acquirer checks after locking that the path still names the file it locked, and
retries otherwise (the usual unlink-safe flock pattern).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from embres.cli import UsageError

log = logging.getLogger(__name__)

try:
    import fcntl
except ImportError:  # Windows: no flock; run unlocked (documented in the README)
    fcntl = None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (leftovers of a live one are kept)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


class LockedError(UsageError):
    """The resource is held by another live process (named in the message)."""


def _holder_text(info: dict) -> str:
    if not info:
        return "another process (holder unknown)"
    started = info.get("started")
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')} (since {since})"


def read_holder(path: str | os.PathLike) -> dict:
    """The holder recorded in a lock file ({} when absent or unreadable)."""
    try:
        return json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}


class FileLock:
    """An exclusive, non-blocking lock on ``path`` (a lock file, created and removed here).

    Args:
      path: the lock file, e.g. ``<workdir>/.lock``.
      what: how messages name the locked thing, e.g. ``"workdir /tmp/w"``.
      hint: what the user can do when it is held (appended to the error).
    """

    def __init__(self, path: str | os.PathLike, what: str, hint: str = ""):
        self.path = Path(path)
        self.what = what
        self.hint = hint
        self._fd: int | None = None
        self.previous: dict = {}

    def acquire(self) -> FileLock:
        """Takes the lock or raises :class:`LockedError` naming the live holder."""
        if fcntl is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            existed = self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    holder = _holder_text(read_holder(self.path))
                    raise LockedError(
                        f"{self.what} is in use by {holder}; lock file {self.path}"
                        + (f". {self.hint}" if self.hint else "")
                    ) from None
                # A file system without flock (some network mounts): say so, go on unlocked,
                # and leave no lock file that would look held to a reader.
                log.warning("cannot lock %s (%s); running without a lock", self.path, e)
                if not existed:
                    self.path.unlink(missing_ok=True)
                return self
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file between our open and flock
                os.close(fd)
                continue
            self.previous = read_holder(self.path)
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.time(),
                "command": " ".join(sys.argv),
            }
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(info).encode())
            os.fsync(fd)
            self._fd = fd
            return self

    def release(self) -> None:
        """Removes the lock file and drops the lock (a no-op when not held)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def took_over(self) -> str | None:
        """A sentence about the dead holder whose lock file this one replaced, if any."""
        if not self.previous:
            return None
        return f"took over the lock left by {_holder_text(self.previous)}, which no longer runs"

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
