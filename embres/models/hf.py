"""Hugging Face checkpoint → embres parameter tree, driven by each family's ``KEY_MAP``.

The engine builds the target tree with ``jax.eval_shape`` (no memory spent), matches every
checkpoint key against the family's table, checks every shape before reading any data, and
raises one :class:`CheckpointMismatchError` listing every missing, unexpected and misshapen
key. Safetensors files are opened memory-mapped and read one tensor at a time straight into
the tree, so peak host memory is the model plus one tensor, never two copies of the model.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE = "pytorch_model.bin"


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model; the message lists every offending key."""

    def __init__(
        self,
        source: str,
        missing: list[str],
        unexpected: list[str],
        misshapen: list[str],
        summary: str | None = None,
    ):
        self.missing, self.unexpected, self.misshapen = missing, unexpected, misshapen
        if summary is not None:  # one line said instead of the list
            super().__init__(summary)
            return
        lines = [f"checkpoint {source} does not fit the model:"]
        for title, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("misshapen", misshapen),
        ):
            if keys:
                lines.append(f"  {len(keys)} {title} key(s):")
                lines.extend(f"    {k}" for k in keys)
        super().__init__("\n".join(lines))


class UnreadableFileError(ValueError):
    """A model file that is truncated, not in its format, or not valid JSON (named with why)."""


def read_json(path: str | os.PathLike, expect: type | None = None) -> Any:
    """Parses a JSON file; a broken one raises :class:`UnreadableFileError` naming it.

    Args:
      path: the file (``config.json``, ``modules.json``, an index ...).
      expect: the type the top level must have (e.g. ``dict``), or None for any.

    Raises:
      UnreadableFileError: the file is not UTF-8, not JSON (with the line and column), or
        not of the ``expect``-ed type.
      FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UnreadableFileError(
            f"{path} is not a JSON file: byte 0x{e.object[e.start]:02x} at offset {e.start} is "
            "not UTF-8 text (a binary file under a JSON name?)"
        ) from e
    if not text.strip():  # json's own message ("Expecting value ...") hides this common case
        raise UnreadableFileError(f"{path} is empty; expected JSON (an interrupted copy?)")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UnreadableFileError(
            f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno} (char {e.pos})"
        ) from e
    if expect is not None and not isinstance(value, expect):
        raise UnreadableFileError(
            f"{path} holds a JSON {type(value).__name__}; expected a JSON "
            f"{'object' if expect is dict else expect.__name__}"
        )
    return value


# safetensors refuses headers above 100 MB; a larger length means the file is something else.
_MAX_HEADER = 100_000_000


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a readable safetensors file, in words; None when no fault is found.

    A safetensors file is an 8-byte little-endian header length, a JSON header giving each
    tensor's byte range, then the data. The library's own messages ("incomplete metadata",
    "header too large") name neither the file nor the likely cause; this checks the layout.
    """
    size = os.path.getsize(path)
    if size < 8:
        return f"it is {size} bytes long, too short for a safetensors header (empty or truncated)"
    with open(path, "rb") as f:
        (header_size,) = struct.unpack("<Q", f.read(8))
        if header_size > size - 8 and header_size > _MAX_HEADER:
            return "its first 8 bytes are no safetensors header length: not a safetensors file"
        if header_size > size - 8:
            return (
                f"its first 8 bytes announce a {header_size:,}-byte header but only "
                f"{size - 8:,} bytes follow: truncated, or not a safetensors file"
            )
        raw = f.read(header_size)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "its header is not JSON: not a safetensors file"
    if not isinstance(header, dict):
        return "its header is not a JSON object: not a safetensors file"
    ends = [
        entry["data_offsets"][1]
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry
    ]
    needed = 8 + header_size + max(ends, default=0)
    if needed > size:
        return (
            f"its tensors end at byte {needed:,} but the file has {size:,} bytes: truncated "
            "(an interrupted download or copy)"
        )
    return None


class PickleCheckpointError(RuntimeError):
    """Only a pickle checkpoint exists and the caller did not opt in to loading it."""


class _TensorSource:
    """Uniform read access to safetensors (single or sharded) or an opted-in pickle."""

    def __init__(self, directory: Path, allow_pickle: bool):
        self.directory = directory
        self._handles: dict[Path, Any] = {}
        self._pickle: dict[str, Any] | None = None
        index = directory / SAFETENSORS_INDEX
        single = directory / SAFETENSORS
        if single.exists():
            self.key_to_file = {k: single for k in self._open(single).keys()}
            self.description = str(single)
        elif index.exists():
            weight_map = read_json(index, expect=dict).get("weight_map")
            if not isinstance(weight_map, dict):
                raise UnreadableFileError(f"{index} has no weight_map object (tensor -> file)")
            self.key_to_file = {k: directory / f for k, f in weight_map.items()}
            self.description = str(index)
        elif (directory / PICKLE).exists():
            path = directory / PICKLE
            if not allow_pickle:
                raise PickleCheckpointError(
                    f"{directory} holds only {PICKLE}, a pickle file that can run code when "
                    "loaded. Convert it to safetensors, or opt in explicitly with "
                    "allow_pickle=True (embres then uses torch.load(..., weights_only=True))."
                )
            import torch  # Only on explicit opt-in; torch is not a runtime dependency.

            self._pickle = torch.load(path, map_location="cpu", weights_only=True)
            self.key_to_file = {k: path for k in self._pickle}
            self.description = str(path)
        else:
            raise FileNotFoundError(
                f"no weights in {directory}: expected {SAFETENSORS}, {SAFETENSORS_INDEX} "
                f"or (with allow_pickle=True) {PICKLE}"
            )

    def _open(self, path: Path, framework: str = "flax"):
        from safetensors import SafetensorError, safe_open

        if (path, framework) not in self._handles:
            try:
                # framework="flax" reads bfloat16 too (numpy cannot); the file stays mmapped.
                self._handles[path, framework] = safe_open(str(path), framework=framework)
            except SafetensorError as e:
                why = safetensors_problem(path) or "it is damaged"
                raise UnreadableFileError(
                    f"{path} is not a readable safetensors file: {why}; download or copy it "
                    f"again (safetensors says: {e})"
                ) from e
        return self._handles[path, framework]

    def shape(self, key: str) -> tuple[int, ...]:
        if self._pickle is not None:
            return tuple(self._pickle[key].shape)
        return tuple(self._open(self.key_to_file[key]).get_slice(key).get_shape())

    def read(self, key: str) -> jax.Array:
        if self._pickle is not None:
            tensor = self._pickle[key]
            return jnp.asarray(
                tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy()
            )
        return self._open(self.key_to_file[key]).get_tensor(key)

    def read_block(
        self, key: str, index: tuple[slice, ...], global_shape: tuple[int, ...]
    ) -> np.ndarray:
        """Only the block ``tensor[index]`` of a (padded) ``global_shape``, read from the mmap.

        Rows past the end of the stored tensor (padding) come back as zeros.
        """
        full = self.shape(key)
        bounds = [s.indices(n) for s, n in zip(index, global_shape, strict=False)]
        bounds += [(0, n, 1) for n in global_shape[len(bounds) :]]
        stored = tuple(
            slice(min(a, n), min(b, n)) for (a, b, _), n in zip(bounds, full, strict=True)
        )
        if any(b.start == b.stop for b in stored):  # a block of padding only
            block = np.zeros((0,) * len(stored), np.float32)
        elif self._pickle is not None:
            block = self._pickle[key][stored].float().numpy()
        else:
            handle = self._open(self.key_to_file[key])
            if handle.get_slice(key).get_dtype() != "BF16":
                handle = self._open(self.key_to_file[key], "numpy")  # no trip via a device
            block = np.asarray(handle.get_slice(key)[stored])
        wanted = tuple(b - a for a, b, _ in bounds)
        if block.shape != wanted:  # the block reaches into padding rows
            block = np.pad(block, [(0, w - g) for w, g in zip(wanted, block.shape, strict=True)])
        return block


def check_table_fits(
    directory: str | os.PathLike,
    key_map: list[tuple[str, str, str | None]],
    table_path: str,
    expected: tuple[int, ...],
    allow_pickle: bool = False,
) -> None:
    """Refuses a checkpoint whose input table is not ``expected`` (``config.json``'s shape).

    The first check of a folder whose ``config.json`` belongs to another model: the table is
    the one tensor every family has, and its width is ``hidden_size``.

    Raises:
      CheckpointMismatchError: naming the checkpoint key, the shape config.json implies and
        the shape found.
    """
    source = _TensorSource(Path(directory), allow_pickle)
    for key in sorted(source.key_to_file):
        hit = _match(key, key_map)
        if hit is None or hit[0] != table_path:
            continue
        found = source.shape(key)
        found = found[::-1] if hit[1] == "T" else found
        if tuple(found) != tuple(expected):
            raise CheckpointMismatchError(
                source.description,
                [],
                [],
                [key],
                summary=(
                    f"checkpoint {source.description} does not fit {Path(directory) / 'config.json'}"
                    f": first mismatch {key}: expected {tuple(expected)} (vocab_size, hidden_size "
                    f"of config.json), found {tuple(found)}; the config belongs to another model"
                ),
            )
        return


def _match(key: str, key_map: list[tuple[str, str, str | None]]) -> tuple[str, str | None] | None:
    for pattern, template, transform in key_map:
        m = re.fullmatch(pattern, key)
        if m:
            return template.format(*m.groups()), transform
    return None


def load_params(
    directory: str | os.PathLike,
    target_shapes: Any,
    key_map: list[tuple[str, str, str | None]],
    ignored_keys: list[str],
    param_dtype: jnp.dtype = jnp.float32,
    allow_pickle: bool = False,
    placements: dict[str, tuple[jax.sharding.Sharding, tuple[int, ...]]] | None = None,
) -> tuple[dict[str, Any], dict[str, tuple[str, str | None]]]:
    """Reads a checkpoint directory into a parameter tree shaped like ``target_shapes``.

    Args:
      directory: a Hugging Face model directory.
      target_shapes: the tree from ``jax.eval_shape(module.init, ...)["params"]``.
      key_map: the family's table of (HF key regex, embres path template, transform).
      ignored_keys: regexes of checkpoint keys the model does not use (heads, buffers).
      param_dtype: dtype the parameters are stored in.
      allow_pickle: load ``pytorch_model.bin`` (through ``torch.load(weights_only=True)``)
        when no safetensors exist.
      placements: ``{embres path: (sharding, global shape)}`` for parameters built as
        sharded global arrays: each process reads only the blocks its own devices hold,
        straight from the mmapped file, so the whole tensor is never in one host's memory.
        The global shape may have more rows than the checkpoint (zero padding, so rows
        divide evenly over a mesh axis). Only untransposed tensors can be placed.

    Returns:
      ``(params, plan)`` where ``plan`` maps each embres path to its (checkpoint key,
      transform), which :func:`save_checkpoint` uses to write the same layout back.

    Raises:
      CheckpointMismatchError: listing every missing, unexpected and misshapen key.
      PickleCheckpointError: only a pickle checkpoint exists and ``allow_pickle`` is False.
    """
    source = _TensorSource(Path(directory), allow_pickle)
    expected = {"/".join(k): v for k, v in traverse_util.flatten_dict(target_shapes).items()}
    plan = _load_plan(source, expected, key_map, ignored_keys)
    flat = {}
    placements = placements or {}
    for path, (sharding, shape) in placements.items():
        _check_placement(path, plan, expected, sharding, shape)
        flat[tuple(path.split("/"))] = _placed_array(
            source, plan[path][0], sharding, shape, param_dtype
        )
    for path, (key, transform) in plan.items():
        if path in placements:
            continue
        tensor = source.read(key)
        if transform == "T":
            tensor = tensor.T
        flat[tuple(path.split("/"))] = jnp.asarray(tensor, dtype=param_dtype)
        del tensor  # one tensor in flight at a time
    return traverse_util.unflatten_dict(flat), plan


def _load_plan(source, expected, key_map, ignored_keys) -> dict[str, tuple[str, str | None]]:
    """``{embres path: (checkpoint key, transform)}``; raises CheckpointMismatchError listing
    every missing, unexpected and misshapen key."""
    plan: dict[str, tuple[str, str | None]] = {}
    unexpected, misshapen = [], []
    for key in sorted(source.key_to_file):
        hit = _match(key, key_map)
        if hit is None or hit[0] not in expected:
            if not any(re.fullmatch(p, key) for p in ignored_keys):
                unexpected.append(key)
            continue
        path, transform = hit
        shape = source.shape(key)
        if transform == "T":
            shape = shape[::-1]
        if shape != tuple(expected[path].shape):
            misshapen.append(
                f"{key}: checkpoint {shape} vs model {tuple(expected[path].shape)} ({path})"
            )
            continue
        plan[path] = (key, transform)
    missing = sorted(set(expected) - set(plan) - {m.split(" (")[-1][:-1] for m in misshapen})
    if missing or unexpected or misshapen:
        raise CheckpointMismatchError(source.description, missing, unexpected, misshapen)
    return plan


def _check_placement(path, plan, expected, sharding, shape) -> None:
    """Refuse a placement that is not a plain tensor, changes the shape beyond row padding,
    or does not divide over its mesh."""
    if path not in plan or plan[path][1] is not None:
        raise ValueError(f"cannot place {path!r} block-wise: not a plain checkpoint tensor")
    if shape[1:] != tuple(expected[path].shape)[1:] or shape[0] < expected[path].shape[0]:
        raise ValueError(
            f"placement of {path!r}: global shape {shape} must keep the checkpoint's "
            f"{tuple(expected[path].shape)} (rows may only grow, as padding)"
        )
    try:
        sharding.shard_shape(shape)
    except ValueError:  # jax's IndivisibleError is a ValueError
        mesh = getattr(sharding, "mesh", None)
        raise ValueError(
            f"{path} of shape {shape} cannot be sharded {getattr(sharding, 'spec', sharding)}"
            f" over mesh {dict(mesh.shape) if mesh else '?'}: {shape[0]} rows do not divide "
            "evenly; pad them (config.pad_vocab_to_multiple_of, or "
            "load_model(table_row_multiple=...))"
        ) from None


def _placed_array(source, key, sharding, shape, param_dtype) -> jax.Array:
    """A global array read block by block from the mmapped file: each process reads only the
    blocks its own devices hold."""
    blocks = {}

    def block(index):
        # A block held by several devices (replicas over "data") is read once.
        bounds = tuple(s.indices(n)[:2] for s, n in zip(index, shape, strict=False))
        if bounds not in blocks:
            blocks[bounds] = source.read_block(key, index, shape).astype(param_dtype)
        return blocks[bounds]

    return jax.make_array_from_callback(shape, sharding, block)


# Files of a model directory that are weights (rewritten on export) or noise.
_NOT_COPIED = {SAFETENSORS, SAFETENSORS_INDEX, PICKLE, ".gitattributes", "README.md"}


def save_checkpoint(model: Any, params: dict[str, Any], directory: str | os.PathLike) -> Path:
    """Writes ``params`` as a Hugging Face directory in the layout ``model`` was loaded from.

    Tokenizer and sentence-transformers files (``modules.json``, ``1_Pooling/`` ...) are
    copied, so the result loads in embres, ``transformers`` and ``sentence-transformers``.

    Args:
      model: the ``LoadedModel`` whose checkpoint layout (key plan) and files to reuse.
      params: a parameter tree with the model's structure (e.g. with an adapted table).
      directory: output directory (created).
    """
    import shutil

    from safetensors.numpy import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    from embres.arrays import to_host

    flat = {"/".join(k): v for k, v in traverse_util.flatten_dict(params).items()}
    table_path = model.family.TABLE_PATH
    tensors = {}
    for path, (key, transform) in model.key_plan.items():
        array = np.asarray(to_host(flat[path]), dtype=np.float32)
        if path == table_path:  # drop rows padded on for sharding (load_model)
            array = array[: model.config.vocab_size]
        tensors[key] = np.ascontiguousarray(array.T if transform == "T" else array)
    save_file(tensors, str(out / SAFETENSORS), metadata={"format": "pt"})
    for item in Path(model.path).iterdir():
        if item.name in _NOT_COPIED or item.name.endswith((".safetensors", ".bin")):
            continue
        target = out / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)
    hf_config = read_json(Path(model.path) / "config.json", expect=dict)
    hf_config.update(model.config.to_hf_config())
    (out / "config.json").write_text(json.dumps(hf_config, indent=2))
    return out


def iter_flat(params: Any) -> Iterator[tuple[str, np.ndarray]]:
    """Yields ("a/b/c", array) for every leaf of a parameter tree."""
    for k, v in traverse_util.flatten_dict(params).items():
        yield "/".join(k), v
