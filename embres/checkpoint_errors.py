"""What can go wrong when a checkpoint is read, how it is told, and what proves it corrupt.

A restore ends in one of four ways (:class:`embres.checkpointing.Checkpointer`): verified,
not verified, *corrupt* (proven broken: moved aside, the previous step tried) or
*unreadable* (:class:`CheckpointReadError`, left in place); a checkpoint of other shapes
stops the run with :class:`CheckpointShapeError`.

What counts as **proof of corruption** (:func:`corruption_reason`), and nothing else:

1. The arrays were read and differ from the saved fingerprint
   (:func:`embres.checkpoint_fingerprint.fingerprint_problems`).
2. ``json.JSONDecodeError`` (or ``UnicodeDecodeError``) while reading the step: a JSON file
   Orbax wrote and committed (``data``, ``meta``, the state's ``_METADATA`` or array
   metadata) no longer parses, so its bytes are truncated or overwritten.
3. A TensorStore error (Orbax reads arrays through TensorStore, which raises ``ValueError``
   whose message starts with the absl status code) that speaks of the stored bytes:
   ``DATA_LOSS`` (the bytes fail TensorStore's checks), ``OUT_OF_RANGE`` on a byte range (a
   file is shorter than the index that points into it: truncated), "Error decoding"
   (compressed chunks or b-tree nodes do not decode), or "Invalid JSON" (a stored JSON file
   such as ``_sharding`` does not parse).

``NOT_FOUND`` and every ``OSError`` are deliberately not proof: a missing or unreadable file
on a network file system may be back on the next try, and moving the newest checkpoint
aside would silently throw away training.

An abandoned read of a corrupt step leaves debris (collected coroutines, asyncio tasks) that
:func:`install_read_debris_filter` sends to the debug log.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from embres.arrays import path_name

log = logging.getLogger(__name__)


class CorruptCheckpointError(RuntimeError):
    """A checkpoint whose arrays do not match the fingerprint saved with them."""


class CheckpointShapeError(ValueError):
    """A readable checkpoint written for other shapes than the run's (a changed config)."""


class CheckpointReadError(RuntimeError):
    """A checkpoint that could not be restored, with no proof that it is corrupt.

    It is left in place; the message names the step, the directory and the cause.
    """


_TENSORSTORE_PROOF = (
    (re.compile(r"^DATA_LOSS:"), "the stored bytes fail TensorStore's checks (DATA_LOSS)"),
    (
        re.compile(r"^OUT_OF_RANGE:.*byte range", re.IGNORECASE | re.DOTALL),
        "a file is shorter than its index says (truncated)",
    ),
    (re.compile(r"Error decoding"), "stored bytes do not decode"),
    (re.compile(r"Invalid JSON"), "a stored JSON file does not parse"),
)


def corruption_reason(error: BaseException) -> str | None:
    """Why ``error`` (raised while reading a step) proves the step's files broken, or None.

    Looks through the exception and the chain Python would print under it (its cause, or
    else its context), and exception groups; see the module docstring for the list and the
    reasons behind it.
    """
    seen, todo = set(), [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, CorruptCheckpointError):
            return str(e)
        if isinstance(e, json.JSONDecodeError):
            return f"a JSON file in it does not parse (truncated or overwritten: {e})"
        if isinstance(e, UnicodeDecodeError):
            return f"a text file in it is not valid UTF-8 (overwritten: {e})"
        if isinstance(e, ValueError):
            message = str(e)
            for pattern, reason in _TENSORSTORE_PROOF:
                if pattern.search(message):
                    return f"{reason}: {shorten(message)}"
        # As Python shows them: the explicit cause, else the context unless suppressed.
        inner = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
        todo += [inner, *getattr(e, "exceptions", ())]
    return None


def shorten(message: str, limit: int = 240) -> str:
    """``message`` on one line, cut at a word boundary (with "...") when over ``limit``."""
    text = " ".join(message.split())
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " ..."


def _from_aborted_read(exc: BaseException | None, obj: Any) -> bool:
    """Whether an unraisable error is the debris of an Orbax read abandoned after a failure."""
    where = getattr(getattr(obj, "cr_code", None), "co_filename", "") or repr(obj)
    return "orbax" in where or (
        isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc)
    )


def _orbax_task_debris(record: logging.LogRecord) -> bool:
    """Logging filter: an abandoned checkpoint-read task, garbage-collected, goes to the
    debug log.

    asyncio reports a task whose exception nobody awaited ("Task exception was never
    retrieved") through its own logger when the task is collected, not through
    ``sys.unraisablehook``; for a read abandoned after a corrupt array, that is the same
    debris. Such a task runs an Orbax coroutine, or asyncio's wrapper around a TensorStore
    future (then only its exception tells: one that :func:`corruption_reason` takes as proof
    of corruption, the error already reported). Returns ``False`` (drop) for exactly those
    records, ``True`` for all others.
    """
    message = record.getMessage()
    if "exception was never retrieved" not in message:
        return True
    error = record.exc_info[1] if record.exc_info else None
    if "orbax" in message or (error is not None and corruption_reason(error) is not None):
        log.debug("after an aborted checkpoint read: %s", message.splitlines()[0])
        return False
    return True


def install_read_debris_filter() -> Callable[[], None] | None:
    """Sends what Orbax's aborted reads leave behind to the debug log, not to stderr.

    When TensorStore fails on one array of a corrupt step, Orbax abandons its other pending
    reads: their coroutines and event-loop callbacks die later (often only at exit) and
    Python prints each as an "Exception ignored" traceback (asyncio, for a collected task, as
    "Task exception was never retrieved"), hundreds of lines per corrupt step, interleaved
    with our one-line message. They are consequences of the error already
    judged by :func:`corruption_reason`. The filter logs exactly those at debug level and
    passes every other unraisable error and thread exception on to the hook it wraps.

    It must be in place before the reads start (a thread binds ``threading.excepthook`` when
    it is created). Returns a function that puts the previous hooks back (``None`` when the
    filter was already active): a restore that set nothing aside calls it, while after a
    corrupt step it stays, since the debris may only surface at exit.
    """
    if getattr(sys.unraisablehook, "_embres_debris_filter", False):
        return None
    previous_unraisable, previous_thread_hook = sys.unraisablehook, threading.excepthook

    def unraisable(args):
        if _from_aborted_read(args.exc_value, args.object):
            log.debug("after an aborted checkpoint read: %r in %r", args.exc_value, args.object)
        else:
            previous_unraisable(args)

    def thread_hook(args):
        if _from_aborted_read(args.exc_value, args.thread):
            log.debug("after an aborted checkpoint read: %r in %s", args.exc_value, args.thread)
        else:
            previous_thread_hook(args)

    unraisable._embres_debris_filter = True
    sys.unraisablehook, threading.excepthook = unraisable, thread_hook
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.addFilter(_orbax_task_debris)

    def remove() -> None:
        sys.unraisablehook, threading.excepthook = previous_unraisable, previous_thread_hook
        asyncio_log.removeFilter(_orbax_task_debris)

    return remove


def shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """``{path: shape}`` of the arrays of ``tree`` (a state, or Orbax's metadata of one)."""
    # Paths as "a/0/b": the saved metadata turns tuples and named tuples into dicts, whose
    # keys print the same way.
    return {
        path_name(path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
        if hasattr(leaf, "shape")
    }


def shape_error(
    step: int, directory: Path, saved: dict[str, tuple], wanted: dict[str, tuple]
) -> CheckpointShapeError | None:
    """The error for a checkpoint whose ``saved`` shapes are not the run's ``wanted`` ones.

    ``None`` when they agree. The hint tells a vocabulary padded to another multiple (only
    the rows differ) from a changed config.
    """
    differ = [
        f"{k}: saved {saved.get(k)}, this run {v}" for k, v in wanted.items() if saved.get(k) != v
    ]
    differ = [d.replace("saved None", "not in the checkpoint") for d in differ]
    differ += [f"{k}: saved {v}, not in this run" for k, v in saved.items() if k not in wanted]
    if not differ:
        return None
    changed = [k for k, v in wanted.items() if saved.get(k) != v]
    rows_only = set(saved) == set(wanted) and all(saved[k][1:] == wanted[k][1:] for k in changed)
    hint = (
        "Only the vocabulary rows differ: it was written with another "
        "config.pad_vocab_to_multiple_of (1 before padding existed); set that value "
        if rows_only
        else "The config changed since (see train_config.json next to it): resume with that config "
    )
    return CheckpointShapeError(
        f"checkpoint at step {step} in {directory} was written for other shapes "
        f"({len(differ)} arrays differ; {'; '.join(differ[:4])}). {hint}or use "
        "another --workdir; the checkpoint is left as it is"
    )


def read_error(
    step: int, directory: Path, error: BaseException | None, processes: np.ndarray
) -> CheckpointReadError:
    """The error for a step that could not be read, with no proof that it is corrupt."""
    where = f"the checkpoint at step {step} in {directory}"
    if error is not None:
        cause = f"{type(error).__name__}: {shorten(str(error))}"
    else:
        cause = f"process {', '.join(str(i) for i in processes)} could not read it"
    return CheckpointReadError(
        f"could not restore {where} ({cause}). This does not prove it corrupt (a transient "
        "I/O error, a missing file, a layout or sharding this run cannot use), so the "
        "checkpoint was left in place. Fix the cause and rerun; to resume from an older "
        f"checkpoint instead, move {directory / str(step)} out of {directory} by hand"
    )
