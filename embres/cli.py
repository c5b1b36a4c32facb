"""How every embres command line ends a user's mistake: one line on stderr, exit code 2.

A mistake the user can fix (a missing file, a typo in a config key, a bad model name, a
malformed data line) is reported as ``<prog>: error: <message>`` on one line, with no
traceback; ``--verbose`` on the command line or ``EMBRES_VERBOSE=1`` in the environment
brings the traceback back. Anything else (a bug) keeps Python's traceback and exit code 1.

Usage in a command's entry point::

    from embres import cli

    if __name__ == "__main__":
        sys.exit(cli.run(main, prog="embres.evaluate"))
"""

from __future__ import annotations

import argparse
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
    if isinstance(error, (UsageError, *FILE_ERRORS)):
        return True
    return isinstance(error, user_errors) and raised_by_embres(error)


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
        # A UsageError is complete in itself; elsewhere the traceback may help a bug report.
        hint = "" if isinstance(e, UsageError) else f" (traceback: --verbose or {VERBOSE_ENV}=1)"
        fail(prog, one_line(e) + hint)
        return USAGE_EXIT
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return 130
