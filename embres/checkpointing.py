"""Checkpoints: an Orbax ``CheckpointManager`` holding only what training cannot rebuild.

Each step directory holds ``state`` (adapter params, optimizer state, step), ``data`` (the
source position, JSON) and ``meta`` (config, base model name, a fingerprint of the state,
JSON). Orbax writes into a temporary directory and renames it when complete, so a killed
run leaves either a whole checkpoint or a temporary one that is never read.

``restore`` tries the newest step first; a checkpoint that fails to load, or whose
fingerprint does not match its arrays, is reported, moved to ``corrupt_checkpoints/`` next
to the checkpoint folder, and the previous one is used. A whole checkpoint whose shapes do
not fit the run (another rank, another config) is not corrupt: it is left in place and the
run stops with :class:`CheckpointShapeError` naming the shapes.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

ITEMS = ("state", "data", "meta")


class CorruptCheckpointError(RuntimeError):
    """A checkpoint whose arrays do not match the fingerprint saved with them."""


class CheckpointShapeError(ValueError):
    """A readable checkpoint written for other shapes than the run's (a changed config)."""


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    # Paths as "a/0/b": the saved metadata turns tuples and named tuples into dicts.
    def name(path) -> str:
        return "/".join(
            str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path
        )

    return {
        name(path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
        if hasattr(leaf, "shape")
    }


def fingerprint(tree: Any) -> list[list[float]]:
    """Per-leaf (sum, sum of |x|) in float32: cheap, works on sharded arrays."""

    @jax.jit
    def stats(leaves):
        return [
            jnp.stack([jnp.sum(x.astype(jnp.float32)), jnp.sum(jnp.abs(x.astype(jnp.float32)))])
            for x in leaves
        ]

    leaves = jax.tree.leaves(tree)
    return [[float(v) for v in np.asarray(s)] for s in stats(leaves)]


def fingerprints_match(a: list, b: list, rtol: float = 1e-4) -> bool:
    """Equal up to float reordering (a restore on another mesh may sum in another order)."""
    if len(a) != len(b):
        return False
    return bool(np.allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=1e-6))


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

        Args:
          abstract_state: the state's ``ShapeDtypeStruct`` tree (with shardings), so arrays
            come back in the layout training uses.
        """
        for partial in self._partial_dirs():
            self.report(f"ignoring partial checkpoint {partial} (a save was interrupted)")
        for step in reversed(self.all_steps()):
            self._check_shapes(step, abstract_state)
            try:
                restored = self.manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state),
                        data=ocp.args.JsonRestore(),
                        meta=ocp.args.JsonRestore(),
                    ),
                )
                meta = dict(restored["meta"])
                if not fingerprints_match(fingerprint(restored["state"]), meta["fingerprint"]):
                    raise CorruptCheckpointError("arrays do not match the saved fingerprint")
                return step, restored["state"], dict(restored["data"]), meta
            except Exception as e:  # noqa: BLE001 - any failure means this step is unusable
                self.report(
                    f"checkpoint at step {step} in {self.directory} is corrupt or unreadable "
                    f"({type(e).__name__}: {str(e)[:200]}); falling back to the previous one"
                )
                self._quarantine(step)
        return None

    def _check_shapes(self, step: int, abstract_state: Any) -> None:
        """Raises :class:`CheckpointShapeError` when ``step`` holds other shapes than the run's.

        Unreadable metadata is left to ``restore``, which treats it as corruption.
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

    def _quarantine(self, step: int) -> None:
        """Moves a bad step folder aside (kept for inspection) so it is never read again."""
        if jax.process_index() == 0:
            source = self.directory / str(step)
            if source.exists():
                target = self.directory.parent / "corrupt_checkpoints" / str(step)
                if target.exists():
                    shutil.rmtree(target)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(source), str(target))
        self.manager.reload()

    def close(self) -> None:
        """Waits for pending writes and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()
