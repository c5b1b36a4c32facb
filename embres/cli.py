"""How every embres command line ends a user's mistake: one line on stderr, exit code 2.

A mistake the user can fix (a missing file, a typo in a config key, a bad model name, a
malformed data line, a write the file system refuses: read-only, full, no permission, a
file where a folder belongs) is reported as ``<prog>: error: <message>`` on one line, with no
traceback; ``--verbose`` on the command line or ``EMBRES_VERBOSE=1`` in the environment
brings the traceback back. Anything else (a bug) keeps Python's traceback and exit code 1.

Usage in a command's entry point::

    from embres import cli

    if __name__ == "__main__":
        sys.exit(cli.run(main, prog="embres.evaluate"))
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

VERBOSE_ENV = "EMBRES_VERBOSE"
OFF = ("0", "false", "no")  # values of --verbose= / $EMBRES_VERBOSE that mean "no"
USAGE_EXIT = 2


class UsageError(ValueError):
    """A mistake in what the user asked for: reported in one line, never with a traceback."""


# What a user can cause and fix: embres raises these with a message written for the user
# (UnknownModelError, data format errors, config checks, the NaN stop naming its step).
# They count as the user's only when raised by embres's own code (see is_user_error): the
# same types raised inside a library on embres's behalf are bugs and keep their traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, FloatingPointError)

# Files the user named that are missing or unreadable: the user's wherever they are raised.
FILE_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)

# A write the file system refused, wherever it was raised (pathlib, Orbax, matplotlib): the
# user chose the path, so the path is named in one line with what to do. (EACCES, EPERM and
# ENOTDIR are PermissionError / NotADirectoryError, in FILE_ERRORS: reads raise them too.)
WRITE_ERRNOS = {
    errno.EROFS: "cannot write there: read-only file system; choose a writable path",
    errno.ENOSPC: "cannot write there: no space left on the device; free some or choose "
    "another path",
    errno.EDQUOT: "cannot write there: disk quota exceeded; free some space or choose another path",
    errno.EEXIST: "already exists, where a folder or a new name was expected; choose another "
    "path or remove it",
}

_PACKAGE = Path(__file__).resolve().parent


def raised_by_embres(error: BaseException) -> bool:
    """Whether the innermost frame of ``error``'s traceback is in embres's own code."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE)


def is_user_error(error: BaseException, user_errors=USER_ERRORS) -> bool:
    """A UsageError, a file error, or one of ``user_errors`` raised by embres itself."""
    if isinstance(error, (UsageError, *FILE_ERRORS)) or is_write_error(error):
        return True
    return isinstance(error, user_errors) and raised_by_embres(error)


def is_write_error(error: BaseException) -> bool:
    """An OSError of :data:`WRITE_ERRNOS` (a refused write) that names its path."""
    return isinstance(error, OSError) and error.errno in WRITE_ERRNOS and error.filename is not None


def write_error_line(error: OSError) -> str:
    """``<path>: <what went wrong; what to do> [Errno N]``, on one line."""
    paths = " -> ".join(str(p) for p in (error.filename, error.filename2) if p is not None)
    return f"{paths}: {WRITE_ERRNOS[error.errno]} [Errno {error.errno}]"


def writable_problem(path: str | os.PathLike, what: str) -> str | None:
    """Why a folder cannot be made or written at ``path`` (checked without writing), or None.

    For a check before long work: ``path`` (an existing folder, or a path to create) is
    refused when it or its nearest existing ancestor is a file, or that ancestor is on a
    read-only file system or not writable by this user. ``what`` names the value in the
    message, e.g. ``"--out runs/x"``. A full disk shows only when written
    (:func:`run` reports that in one line too).
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        return f"{what}: {path} is a file; expected a folder (or a path that does not exist)"
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{what}: {existing} is a file, so no folder can be made at {path}"
    if os.access(existing, os.W_OK | os.X_OK):
        return None
    read_only = hasattr(os, "statvfs") and os.statvfs(existing).f_flag & os.ST_RDONLY
    why = "is on a read-only file system" if read_only else "is not writable by this user"
    return f"{what}: cannot write in {existing}: it {why}; expected a writable folder"


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one stderr line (``<error_prog>: error: ...``), exit 2.

    argparse prints the whole usage block before its error line; the usage adds nothing to
    "unknown tasks ['x']" and buries it, so the line points to --help instead. Subcommand
    parsers (``add_subparsers``) are of this class too.

    Args:
      error_prog: how error lines start (default: ``prog``).
    """

    def __init__(self, *args, error_prog: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.error_prog = error_prog

    def add_subparsers(self, **kwargs):
        action = super().add_subparsers(**kwargs)
        add_parser = action.add_parser

        def add_with_error_prog(name, **options):
            options.setdefault("error_prog", self.error_prog)
            return add_parser(name, **options)

        action.add_parser = add_with_error_prog
        return action

    def error(self, message: str):
        sys.exit(fail(self.error_prog or self.prog, f"{message} (see --help)"))


def verbose_requested(argv: Sequence[str] | None = None) -> bool:
    """True when ``--verbose`` is on the command line or ``$EMBRES_VERBOSE`` is set (not 0)."""
    argv = sys.argv[1:] if argv is None else argv
    env = os.environ.get(VERBOSE_ENV, "").strip().lower()
    flag = any(
        a == "--verbose" or (a.startswith("--verbose=") and a[10:].lower() not in OFF) for a in argv
    )
    return flag or env not in ("", *OFF)


def one_line(error: BaseException) -> str:
    """The error's message on one line: its lines joined by ' | ', a KeyError's quotes undone."""
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        text = error.args[0]  # str(KeyError) repr()s its message: undo that
    else:
        text = str(error)
    if (
        isinstance(error, OSError)
        and error.filename is not None
        and str(error.filename) not in text
    ):
        text = f"{text}: {error.filename}"
    return join_lines(text) or type(error).__name__


def join_lines(text: str) -> str:
    """``text``'s non-blank lines, stripped and joined by ' | ': one line for a log or table."""
    return " | ".join(line.strip() for line in str(text).splitlines() if line.strip())


def fail(prog: str, message: str) -> int:
    """Prints ``<prog>: error: <message>`` to stderr as one line; returns the usage exit code."""
    print(f"{prog}: error: {join_lines(message)}", file=sys.stderr, flush=True)
    return USAGE_EXIT


def run(
    main: Callable[[], int | None],
    prog: str,
    argv: Sequence[str] | None = None,
    user_errors: tuple[type[BaseException], ...] = USER_ERRORS,
) -> int:
    """Calls ``main()``; a user's mistake becomes one stderr line and exit code 2.

    A mistake is what :func:`is_user_error` says; anything else keeps its traceback (exit 1).
    With ``--verbose`` in ``argv`` (default ``sys.argv[1:]``) or ``$EMBRES_VERBOSE`` set, the
    error propagates with its traceback instead.
    """
    try:
        return int(main() or 0)
    except user_errors as e:
        if verbose_requested(argv) or not is_user_error(e, user_errors):
            raise
        if is_write_error(e):  # the path and what to do are the whole story
            fail(prog, write_error_line(e))
            return USAGE_EXIT
        # A UsageError is complete in itself; elsewhere the traceback may help a bug report.
        hint = "" if isinstance(e, UsageError) else f" (traceback: --verbose or {VERBOSE_ENV}=1)"
        fail(prog, one_line(e) + hint)
        return USAGE_EXIT
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return 130
