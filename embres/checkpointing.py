"""Checkpoints: an Orbax ``CheckpointManager`` holding only what training cannot rebuild.

Each step directory holds ``state`` (adapter params, optimizer state, step), ``data`` (the
source position, JSON) and ``meta`` (config, base model name, a fingerprint of the state,
JSON). Orbax writes into a temporary directory and renames it when complete, so a killed
run leaves either a whole checkpoint or a temporary one that is never read.

**Restore** tries the newest step first and ends in one of four ways:

- *verified*: the arrays match the fingerprint saved with them; the step is used.
- *not verified*: the meta has no (usable) fingerprint, e.g. it was written before
  fingerprints existed; the step is used and ``report`` says it was "not verified".
  Arrays restored in another dtype than saved (Orbax casts silently) are reported the
  same way, since their fingerprint cannot be compared.
- *corrupt*: proven broken (below). It is reported, moved to ``corrupt_checkpoints/``
  next to the checkpoint folder (kept for inspection), and the previous step is tried.
- *unreadable*: any other failure: an ``OSError`` (a transient I/O error, a missing file,
  a file system that is not mounted), a sharding or layout this run cannot use, an
  exception while fingerprinting. The checkpoint is left in place and the run stops with
  :class:`CheckpointReadError`, naming the step and the directory. A whole checkpoint
  whose shapes do not fit the run (another rank, another config) stops the run with
  :class:`CheckpointShapeError`, also leaving it in place.

What counts as **proof of corruption** (:func:`corruption_reason`), and nothing else:

1. The arrays were read and differ from the saved fingerprint (:func:`fingerprint_problems`).
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

**The fingerprint** is, per leaf of the state, its dtype, ``Σx`` and ``Σ|x|`` in float32, and
an exact checksum of its bits: the wrapping uint32 sum of a hash of (bit pattern, global
flat index) over the elements. Integer addition is associative, so the checksum is the same
for every mesh, sharding, process count and backend, and it changes whenever one element
changes (any one change is caught; several at once escape with probability 2^-32). The
float sums can only be compared up to rounding: see :data:`RTOL`.

**Several processes** agree on every decision: process 0 chooses the step to try and
broadcasts it; all processes gather whether they could read it (one process that could
not makes all of them stop; nothing is moved unless the failures prove corruption); the
fingerprint verdict is process 0's, broadcast. Process 0 alone moves a corrupt step, and a
barrier separates that move from every process's ``manager.reload()``.

**Resuming with a changed config** is allowed when the shapes still fit; the trainer
warns with :func:`config_changes`. Changing ``total_steps`` on resume: the step counter
(and the optimizer's count) continues from the saved step; the warmup-cosine schedule is
rebuilt from the new ``total_steps``, so the learning rate jumps to the new schedule's
value at the saved step (past warmup, a larger ``total_steps`` stretches the cosine decay
and raises the rate, a smaller one lowers it; warmup depends on ``warmup_steps`` alone);
a ``total_steps`` at or below the saved step trains no further step and only evaluates
(and exports) the saved state.
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import math
import re
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax import lax
from jax.experimental import multihost_utils

from embres.arrays import path_name

log = logging.getLogger(__name__)

ITEMS = ("state", "data", "meta")

RTOL = 2.0**-10
"""Relative tolerance of the float32 sums, as a fraction of the leaf's ``Σ|x|``.

A float32 sum of ``n`` terms in any order (serial, pairwise, per-device partial sums then
an all-reduce) has an error made of one rounding per addition, each at most
``u = 2**-24`` of a partial sum no larger than ``Σ|x|``; treated as independent they add up
to about ``u·sqrt(n)·Σ|x|`` (Higham & Mary, 2019), and far less for the tree reductions XLA
uses (measured: below 1e-7·Σ|x| for 30,000 x 384 on every 8-device layout). Even a fully
serial sum of 2**24 elements stays near ``2**-12·Σ|x|`` on each side, four times below the
difference ``2**-10·Σ|x|`` allowed. The tolerance scales with ``Σ|x|``, not with ``|Σx|``:
a centred table has ``Σx`` near zero, and cancellation makes its float32 value differ from
mesh to mesh by far more than ``|Σx|`` itself. Being loose costs nothing, because the exact
checksum catches the small changes the sums cannot see; the sums catch gross damage (and
are the only check for fingerprints written before the checksum existed).
"""

TINY = 1e-30
"""Absolute slack of the float comparison, for all-zero leaves (``Σ|x| = 0``)."""


class CorruptCheckpointError(RuntimeError):
    """A checkpoint whose arrays do not match the fingerprint saved with them."""


class CheckpointShapeError(ValueError):
    """A readable checkpoint written for other shapes than the run's (a changed config)."""


class CheckpointReadError(RuntimeError):
    """A checkpoint that could not be restored, with no proof that it is corrupt.

    It is left in place; the message names the step, the directory and the cause.
    """


# ----------------------------------------------------------------------------- config


def config_changes(saved: dict, current: dict) -> list[str]:
    """What differs between two nested config dicts, one sorted line per changed key.

    Lines read ``"optimizer.learning_rate: 0.001 -> 0.0005"`` (values as JSON), and
    ``"data.source: added"`` or ``"data.source: removed"`` for a key only in ``current`` or
    only in ``saved``. Every key is compared, nothing is ignored; ``1`` and ``1.0`` are the
    same value, ``1`` and ``true`` are not.

    Args:
      saved: the config stored with the checkpoint (``meta["config"]``).
      current: this run's, e.g. ``json.loads(config.to_json_best_effort())``.
    """
    lines: list[tuple[str, str]] = []

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in set(a) | set(b):
                name = f"{prefix}{key}"
                if key not in a:
                    lines.append((name, f"{name}: added"))
                elif key not in b:
                    lines.append((name, f"{name}: removed"))
                else:
                    walk(a[key], b[key], name + ".")
        elif not _same(a, b):
            name = prefix[:-1]
            lines.append((name, f"{name}: {_show(a)} -> {_show(b)}"))

    walk(saved, current, "")
    return [line for _, line in sorted(lines)]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) or isinstance(b, dict):
        return False  # a dict and a non-dict (two dicts are walked key by key)
    return a == b


def _show(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        return repr(value)


# ----------------------------------------------------------------------------- fingerprint


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    # Paths as "a/0/b": the saved metadata turns tuples and named tuples into dicts, whose
    # keys print the same way.
    return {
        path_name(path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
        if hasattr(leaf, "shape")
    }


def _mix(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finaliser: a bijection of uint32 that spreads every bit."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _bits(x: jax.Array) -> jax.Array | None:
    """Each element's bit pattern as uint32 (64-bit ones folded), or ``None`` if unsupported."""
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    try:
        if x.dtype.itemsize == 4:
            return lax.bitcast_convert_type(x, jnp.uint32)
        if x.dtype.itemsize == 2:
            return lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
        if x.dtype.itemsize == 1:
            return lax.bitcast_convert_type(x, jnp.uint8).astype(jnp.uint32)
        if x.dtype.itemsize == 8:
            words = lax.bitcast_convert_type(x, jnp.uint32)
            return words[..., 0] ^ _mix(words[..., 1] + np.uint32(0x7F4A7C15))
    except (TypeError, ValueError):  # sub-byte or complex types: no checksum
        pass
    return None


def _checksum(x: jax.Array) -> jax.Array | None:
    bits = _bits(x)
    if bits is None:
        return None
    index = jnp.zeros(x.shape, jnp.uint32)  # the global flat index, wrapping past 2**32
    stride = 1
    for axis in reversed(range(x.ndim)):
        step = np.uint32(stride % 2**32)
        index = index + lax.broadcasted_iota(jnp.uint32, x.shape, axis) * step
        stride *= x.shape[axis]
    # bits ^ (a function of the index) is a bijection of bits, and so is _mix: changing one
    # element always changes its term, hence the wrapping sum.
    terms = _mix(bits ^ _mix(index ^ np.uint32(0x9E3779B9)))
    return jnp.sum(terms, dtype=jnp.uint32)


@jax.jit
def _leaf_stats(leaves: list) -> list:
    out = []
    for x in leaves:
        x = jnp.asarray(x)
        f = x.astype(jnp.float32)
        out.append((jnp.stack([jnp.sum(f), jnp.sum(jnp.abs(f))]), _checksum(x)))
    return out


def _dtype_name(x: Any) -> str:
    return str(jax.dtypes.canonicalize_dtype(np.result_type(x)))


def fingerprint(tree: Any) -> list[dict]:
    """Per leaf: ``{"path", "dtype", "sum", "abs_sum", "checksum"}`` (see the module doc).

    Cheap (one pass, compiled once per state layout) and works on sharded arrays, across
    processes included: the results are replicated scalars.
    """
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    stats = _leaf_stats([leaf for _, leaf in flat])
    entries = []
    for (path, leaf), (sums, checksum) in zip(flat, stats, strict=True):
        total, abs_total = (float(v) for v in np.asarray(sums))
        entries.append(
            {
                "path": path_name(path),
                "dtype": _dtype_name(leaf),
                "sum": total,
                "abs_sum": abs_total,
                "checksum": None if checksum is None else int(np.asarray(checksum)),
            }
        )
    return entries


def _parts(entry: Any) -> dict:
    """A fingerprint entry as a dict; the older form was ``[sum, abs_sum]``."""
    if isinstance(entry, dict):
        return entry
    total, abs_total = entry
    return {"sum": total, "abs_sum": abs_total}


def _close(a: float, b: float, scale: float, rtol: float) -> bool:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return True
    return abs(a - b) <= rtol * scale + TINY  # False for inf or NaN on one side only


def fingerprint_problems(
    saved: list, restored: list, rtol: float = RTOL
) -> tuple[list[str], list[str]]:
    """Compares two fingerprints leaf by leaf: ``(mismatched, unverified)`` leaf names.

    A leaf is *mismatched* when both sides have the same dtype and their checksums differ,
    or ``|Σa − Σb|`` or ``|Σ|a| − Σ|b||`` exceeds ``rtol·max(Σ|a|, Σ|b|) + TINY``. It is
    *unverified* when the dtypes differ (Orbax casts on restore) or the fingerprints cannot
    be lined up (another number of leaves or other paths): a reason to warn, never proof.
    """
    if not isinstance(saved, list) or len(saved) != len(restored):
        n = len(saved) if isinstance(saved, list) else type(saved).__name__
        return [], [f"the saved fingerprint ({n} leaves) does not line up with the state"]
    mismatched, unverified = [], []
    for i, (a, b) in enumerate(zip(saved, restored, strict=True)):
        try:
            a, b = _parts(a), _parts(b)
            name = b.get("path") or a.get("path") or f"leaf {i}"
            if a.get("path") is not None and b.get("path") is not None:
                if a["path"] != b["path"]:
                    unverified.append(f"{name} (saved as {a['path']})")
                    continue
            if a.get("dtype") and b.get("dtype") and a["dtype"] != b["dtype"]:
                unverified.append(f"{name} (saved as {a['dtype']}, restored as {b['dtype']})")
                continue
            scale = max(abs(float(a["abs_sum"])), abs(float(b["abs_sum"])))
            if math.isnan(scale):
                scale = 0.0
            sums_ok = _close(float(a["sum"]), float(b["sum"]), scale, rtol) and _close(
                float(a["abs_sum"]), float(b["abs_sum"]), scale, rtol
            )
            checks = a.get("checksum"), b.get("checksum")
            bits_ok = None in checks or int(checks[0]) == int(checks[1])
        except (TypeError, ValueError, KeyError, AttributeError):
            unverified.append(f"leaf {i} (unreadable fingerprint entry)")
            continue
        if not (sums_ok and bits_ok):
            mismatched.append(name)
    return mismatched, unverified


def fingerprints_match(a: list, b: list, rtol: float = RTOL) -> bool:
    """Whether no leaf is mismatched (see :func:`fingerprint_problems`)."""
    return not fingerprint_problems(a, b, rtol)[0]


# ----------------------------------------------------------------------------- corruption

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
                    return f"{reason}: {_shorten(message)}"
        # As Python shows them: the explicit cause, else the context unless suppressed.
        inner = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
        todo += [inner, *getattr(e, "exceptions", ())]
    return None


def _shorten(message: str, limit: int = 240) -> str:
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


def _install_read_debris_filter() -> Callable[[], None] | None:
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


# ----------------------------------------------------------------------------- processes


def _process_count() -> int:
    return jax.process_count()


def _from_process_0(value: int) -> int:
    """Process 0's ``value`` on every process."""
    if _process_count() > 1:
        return int(np.asarray(multihost_utils.broadcast_one_to_all(np.int32(value))))
    return int(value)


def _from_all(value: int) -> np.ndarray:
    """Every process's ``value``, indexed by process."""
    if _process_count() > 1:
        return np.asarray(multihost_utils.process_allgather(np.int32(value))).reshape(-1)
    return np.array([value], np.int32)


_READ, _CORRUPT, _FAILED = 0, 1, 2  # what one process saw when reading a step


def newest_meta(directory: str | Path) -> tuple[int, dict] | None:
    """``(step, meta)`` of the newest checkpoint in ``directory``, read without its arrays.

    ``None`` when there is none, or when its meta does not parse (:meth:`Checkpointer.restore`
    judges that step later). Creates nothing, so a run can check, before any expensive
    preparation and before its checkpoint folder exists, that a checkpoint is its own.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir()]
    if not steps:
        return None
    step = max(steps)
    try:
        meta = json.loads((directory / str(step) / "meta" / "metadata").read_text())
    except (OSError, ValueError):
        return None
    return (step, meta) if isinstance(meta, dict) else None


# ----------------------------------------------------------------------------- checkpointer


class Checkpointer:
    """Saves every ``every_steps`` steps (and when forced), keeps the last ``keep``.

    Args:
      directory: where step folders go (created).
      every_steps: save interval.
      keep: how many checkpoints to keep.
      report: callable for user-facing messages (default: ``logging.warning``).
    """

    def __init__(self, directory: str | Path, every_steps: int, keep: int, report=None):
        self.directory = Path(directory).absolute()
        self.report = report or log.warning
        self.every_steps = every_steps
        self._set_aside = 0  # steps moved aside by this checkpointer
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=every_steps,
            max_to_keep=keep,
            create=True,
            enable_async_checkpointing=False,
        )
        handlers = {
            "state": ocp.StandardCheckpointHandler(),
            "data": ocp.JsonCheckpointHandler(),
            "meta": ocp.JsonCheckpointHandler(),
        }
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=ITEMS, item_handlers=handlers
        )

    def all_steps(self) -> list[int]:
        """Complete checkpoints on disk, oldest first."""
        return sorted(self.manager.all_steps())

    def save(
        self, step: int, state: Any, data_state: dict, meta: dict, force: bool = False
    ) -> bool:
        """Saves when ``step`` is due (or ``force``); returns whether it saved."""
        if not force and step % self.every_steps:
            return False
        if step in self.manager.all_steps():
            return False
        meta = dict(meta, step=int(step), fingerprint=fingerprint(state))
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
            meta=ocp.args.JsonSave(meta),
        )
        saved = self.manager.save(step, args=args, force=True)  # the interval is checked above
        self.manager.wait_until_finished()
        return bool(saved)

    def _partial_dirs(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if "tmp" in p.name and p.is_dir())

    def restore(self, abstract_state: Any) -> tuple[int, Any, dict, dict] | None:
        """Newest good checkpoint as ``(step, state, data_state, meta)``, or ``None``.

        Reports one line per step set aside (Orbax's noise about it goes to the debug log),
        and one line when none is left ("starting over from step 0"); the caller says which
        step it resumes from.
        """
        remove_filter = _install_read_debris_filter()
        try:
            restored = self._restore(abstract_state)
        finally:
            if self._set_aside:
                gc.collect()  # frees the abandoned reads now, while the filter is in place
            elif remove_filter is not None:
                remove_filter()  # nothing was corrupt: no debris to expect
        return restored

    def _restore(self, abstract_state: Any) -> tuple[int, Any, dict, dict] | None:
        """Newest good checkpoint as ``(step, state, data_state, meta)``, or ``None``.

        Corrupt steps are moved aside and the previous one is tried; see the module
        docstring for what counts as corrupt.

        Args:
          abstract_state: the state's ``ShapeDtypeStruct`` tree (with shardings), so arrays
            come back in the layout training uses.

        Raises:
          CheckpointShapeError: the newest readable step was written for other shapes.
          CheckpointReadError: a step could not be read, with no proof that it is corrupt;
            it is left in place.
        """
        for partial in self._partial_dirs():
            self.report(f"ignoring partial checkpoint {partial} (a save was interrupted)")
        below = None  # only steps below the last one tried, even if a move went wrong
        while True:
            steps = [s for s in self.all_steps() if below is None or s < below]
            step = _from_process_0(steps[-1] if steps else -1)
            if step < 0:
                if self._set_aside:
                    self.report(
                        f"no usable checkpoint left in {self.directory} ({self._set_aside} set "
                        "aside): starting over from step 0"
                    )
                return None
            below = step
            self._check_shapes(step, abstract_state)
            restored, error = self._read(step, abstract_state)
            reason = None if error is None else corruption_reason(error)
            seen = _from_all(_READ if error is None else _CORRUPT if reason else _FAILED)
            if (seen == _FAILED).any():
                raise self._read_error(step, error, np.flatnonzero(seen == _FAILED)) from error
            if (seen == _CORRUPT).any():
                if reason is None:
                    who = ", ".join(str(i) for i in np.flatnonzero(seen == _CORRUPT))
                    reason = f"process {who} found its files broken"
                self._quarantine(step, reason)
                continue
            try:
                mismatched, unverified = self._verify(restored)
            except Exception as e:  # noqa: BLE001 - e.g. out of memory: no proof of anything
                raise self._read_error(step, e, np.array([jax.process_index()])) from e
            if _from_process_0(int(bool(mismatched))):
                names = ", ".join(mismatched[:4]) + (", ..." if len(mismatched) > 4 else "")
                self._quarantine(
                    step,
                    f"its arrays do not match the saved fingerprint ({len(mismatched)} "
                    f"of them: {names})",
                )
                continue
            for line in unverified:
                self.report(f"checkpoint at step {step} in {self.directory}: {line}")
            return step, restored["state"], dict(restored["data"]), dict(restored["meta"])

    def _read(self, step: int, abstract_state: Any) -> tuple[Any, BaseException | None]:
        try:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state),
                    data=ocp.args.JsonRestore(),
                    meta=ocp.args.JsonRestore(),
                ),
            )
        except Exception as e:  # noqa: BLE001 - judged by corruption_reason
            return None, e
        return restored, None

    def _verify(self, restored: Any) -> tuple[list[str], list[str]]:
        """``(mismatched leaves, unverified lines)`` of a step read without error."""
        current = fingerprint(restored["state"])  # collective: every process, every time
        meta = restored["meta"]
        saved = meta.get("fingerprint") if isinstance(meta, dict) else None
        if saved is None:
            return [], ["its meta has no fingerprint, so it is restored not verified"]
        mismatched, unverified = fingerprint_problems(saved, current)
        if unverified:
            unverified = [
                f"{len(unverified)} arrays not verified against the saved fingerprint: "
                + "; ".join(unverified[:4])
            ]
        return mismatched, unverified

    def _read_error(
        self, step: int, error: BaseException | None, processes: np.ndarray
    ) -> CheckpointReadError:
        where = f"the checkpoint at step {step} in {self.directory}"
        if error is not None:
            cause = f"{type(error).__name__}: {_shorten(str(error))}"
        else:
            cause = f"process {', '.join(str(i) for i in processes)} could not read it"
        return CheckpointReadError(
            f"could not restore {where} ({cause}). This does not prove it corrupt (a transient "
            "I/O error, a missing file, a layout or sharding this run cannot use), so the "
            "checkpoint was left in place. Fix the cause and rerun; to resume from an older "
            f"checkpoint instead, move {self.directory / str(step)} out of "
            f"{self.directory} by hand"
        )

    def _check_shapes(self, step: int, abstract_state: Any) -> None:
        """Raises :class:`CheckpointShapeError` when ``step`` holds other shapes than the run's.

        Unreadable metadata is left to the restore that follows, which judges it.
        """
        try:
            saved = _shapes(self.manager.item_metadata(step)["state"])
        except Exception:  # noqa: BLE001 - judged (and reported) by the restore that follows
            return
        wanted = _shapes(abstract_state)
        differ = [
            f"{k}: saved {saved.get(k)}, this run {v}"
            for k, v in wanted.items()
            if saved.get(k) != v
        ]
        differ = [d.replace("saved None", "not in the checkpoint") for d in differ]
        differ += [f"{k}: saved {v}, not in this run" for k, v in saved.items() if k not in wanted]
        if differ:
            changed = [k for k, v in wanted.items() if saved.get(k) != v]
            rows_only = set(saved) == set(wanted) and all(
                saved[k][1:] == wanted[k][1:] for k in changed
            )
            hint = (
                "Only the vocabulary rows differ: it was written with another "
                "config.pad_vocab_to_multiple_of (1 before padding existed); set that value "
                if rows_only
                else "The config changed since (see train_config.json next to it): resume "
                "with that config "
            )
            raise CheckpointShapeError(
                f"checkpoint at step {step} in {self.directory} was written for other shapes "
                f"({len(differ)} arrays differ; {'; '.join(differ[:4])}). {hint}or use "
                "another --workdir; the checkpoint is left as it is"
            )

    def _quarantine(self, step: int, reason: str) -> None:
        """Moves a corrupt step folder aside (kept for inspection) so it is never read again.

        Process 0 moves; a barrier makes every process wait for the move before it reloads
        the manager's list of steps. Orbax's debris of the failed read goes to the debug log
        from here on (see :func:`_install_read_debris_filter`).
        """
        self._set_aside += 1
        source = self.directory / str(step)
        folder = self.directory.parent / "corrupt_checkpoints"
        names = itertools.chain([str(step)], (f"{step}.{i}" for i in itertools.count(1)))
        target = next(folder / n for n in names if not (folder / n).exists())
        failure = ""
        if jax.process_index() == 0 and source.exists():
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(source), str(target))
            except OSError as e:
                failure = f"{type(e).__name__}: {e}"
        if _process_count() > 1:
            multihost_utils.sync_global_devices(f"embres_checkpoint_quarantine_{step}")
        moved = not _from_process_0(int(bool(failure)))
        self.manager.reload()
        if not moved:
            raise CheckpointReadError(
                f"checkpoint at step {step} in {self.directory} is corrupt ({reason}), but it "
                f"could not be moved to {target} ({failure or 'see process 0'}); move it by hand"
            )
        self.report(
            f"set aside checkpoint at step {step} in {self.directory}: corrupt ({reason}); "
            f"moved to {target}"
        )

    def close(self) -> None:
        """Waits for pending writes and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()
