"""Checkpoints: an Orbax ``CheckpointManager`` holding only what training cannot rebuild.

Each step directory holds ``state`` (adapter params, optimizer state, step), ``data`` (the
source position, JSON) and ``meta`` (config, base model name, a fingerprint of the state,
JSON). Orbax writes into a temporary directory and renames it when complete, so a killed
run leaves either a whole checkpoint or a temporary one that is never read.

**Save** (:meth:`Checkpointer.save`) writes the three items with the state's fingerprint
(:mod:`embres.checkpoint_fingerprint`). **Restore** (:meth:`Checkpointer.restore`) tries the
newest step first and ends in one of four ways:

- *verified*: the arrays match the fingerprint saved with them; the step is used.
- *not verified*: the meta has no (usable) fingerprint, e.g. it was written before
  fingerprints existed; the step is used and ``report`` says it was "not verified".
  Arrays restored in another dtype than saved (Orbax casts silently) are reported the
  same way, since their fingerprint cannot be compared.
- *corrupt*: proven broken (:func:`embres.checkpoint_errors.corruption_reason` says what
  counts as proof, and nothing else does). It is reported, moved to
  ``corrupt_checkpoints/`` next to the checkpoint folder (kept for inspection), and the
  previous step is tried.
- *unreadable*: any other failure: an ``OSError`` (a transient I/O error, a missing file,
  a file system that is not mounted), a sharding or layout this run cannot use, an
  exception while fingerprinting. The checkpoint is left in place and the run stops with
  :class:`CheckpointReadError`, naming the step and the directory. A whole checkpoint
  whose shapes do not fit the run (another rank, another config) stops the run with
  :class:`CheckpointShapeError`, also leaving it in place.

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
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from embres.checkpoint_errors import (
    CheckpointReadError,
    CheckpointShapeError,
    corruption_reason,
    install_read_debris_filter,
    read_error,
    shape_error,
    shapes,
)
from embres.checkpoint_fingerprint import fingerprint, fingerprint_problems

__all__ = [
    "CheckpointReadError",
    "CheckpointShapeError",
    "Checkpointer",
    "config_changes",
    "newest_meta",
]

log = logging.getLogger(__name__)

ITEMS = ("state", "data", "meta")

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
        remove_filter = install_read_debris_filter()
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
        return read_error(step, self.directory, error, processes)

    def _check_shapes(self, step: int, abstract_state: Any) -> None:
        """Raises :class:`CheckpointShapeError` when ``step`` holds other shapes than the run's.

        Unreadable metadata is left to the restore that follows, which judges it.
        """
        try:
            saved = shapes(self.manager.item_metadata(step)["state"])
        except Exception:  # noqa: BLE001 - judged (and reported) by the restore that follows
            return
        error = shape_error(step, self.directory, saved, shapes(abstract_state))
        if error is not None:
            raise error

    def _quarantine(self, step: int, reason: str) -> None:
        """Moves a corrupt step folder aside (kept for inspection) so it is never read again.

        Process 0 moves; a barrier makes every process wait for the move before it reloads
        the manager's list of steps. Orbax's debris of the failed read goes to the debug log
        from here on (see :func:`embres.checkpoint_errors.install_read_debris_filter`).
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
