"""A corpus with the teacher's sentence vectors computed once, streamed from disk.

Distilling a static student needs the teacher's vector for every training sentence. Running
the teacher inside every step would cost a full forward per step; instead :func:`build_cache`
embeds the token rows once into ``.npy`` files and :class:`CachedSource` streams shuffled
batches from them (memory-mapped), so corpus size is bounded by disk, not RAM.

Building streams too: rows are read, embedded and appended chunk by chunk, so peak memory
depends on ``chunk_rows``, never on the corpus length. The build goes through
:func:`embres.cache.build_once` (process 0 builds into a sibling folder swapped in when
complete, every process waits), so a reader sees the previous complete cache, or none, never
half of one.

Typical use (a ``text:`` corpus)::

    held, rows = text_rows(path, model.tokenizer, max_length, heldout)
    build_cache(model, rows, cache_dir, max_length=max_length, heldout_texts=held,
                key={"model": str(model.path), "text": path, "max_length": max_length})
    source = CachedSource(cache_dir, batch_size=..., vocab_size=..., seed=...)
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import jax
import numpy as np

from embres import pooling, tokenize
from embres.locking import pid_alive  # noqa: F401 (embres.export reads it here)

CACHE_VERSION = 2
FILES = ("ids.npy", "lengths.npy", "targets.npy", "heldout.json", "meta.json")
# What a cache folder may hold (these and version-1 leftovers): only such a folder is replaced.
_REPLACEABLE = {*FILES, "targets.npy.json", "targets.npy.partial"}
FORWARD_ROWS = 256  # rows per compiled teacher call; a chunk is cut into these
TEXT_CHUNK = 1024  # lines tokenised per call in text_rows
_HEADER_BYTES = 128


def teacher_sentence_vectors(model: Any, params: Any, ids: Any, mask: Any) -> jax.Array:
    """The teacher's sentence vectors [b, d] float32 for token rows (pure; jit-able).

    ``model.apply(params, ids, mask)["last_hidden_state"]`` pooled with the model's own
    pooling and L2-normalised when the model normalises: the vectors
    :class:`embres.extract.EmbeddingExtractor` gives for the same ids.
    """
    hidden = model.apply(params, ids, mask)["last_hidden_state"]
    vectors = pooling.pool(hidden, mask, model.pooling)
    return pooling.l2_normalize(vectors) if model.normalize else vectors


def text_rows(
    path: str | os.PathLike, tokenizer: Any, max_length: int, heldout: int
) -> tuple[list[str], Iterator[np.ndarray]]:
    """(held-out texts, token rows of the rest) of a text file with one sentence per line.

    Lines are stripped and empty ones skipped. The first ``heldout`` are returned as text;
    the rest stream lazily, tokenised in chunks with special tokens
    (:func:`embres.tokenize.encode`) and truncated to ``max_length``. The file's encoding is
    checked first (:func:`embres.data.text.check_utf8`).

    Raises:
      ValueError: fewer than ``heldout`` lines, no line after them, or a file that is mostly
        not UTF-8.
    """
    from embres.data.text import check_utf8

    path = Path(path).expanduser()
    check_utf8(path)
    held: list[str] = []
    with open(path, "rb") as f:
        while len(held) < heldout:
            raw = f.readline()
            if not raw:
                raise ValueError(f"{path} has fewer than config.data.heldout={heldout} lines")
            if text := raw.decode("utf-8", errors="replace").strip():
                held.append(text)
        start = f.tell()
        if not any(raw.decode("utf-8", errors="replace").strip() for raw in f):
            raise ValueError(f"{path} has no training lines after the {heldout} held-out ones")

    def rows() -> Iterator[np.ndarray]:
        with open(path, "rb") as f:
            f.seek(start)
            chunk: list[str] = []
            for raw in f:
                if text := raw.decode("utf-8", errors="replace").strip():
                    chunk.append(text)
                if len(chunk) == TEXT_CHUNK:
                    yield from tokenize.encode(tokenizer, chunk, max_length)
                    chunk = []
            if chunk:
                yield from tokenize.encode(tokenizer, chunk, max_length)

    return held, rows()


def npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    """A fixed-size .npy v1 header, so the row count can be written after streaming."""
    body = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape!r}, }}"
    body = body.ljust(_HEADER_BYTES - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


def _meta(cache: Path) -> dict | None:
    """The meta of a complete cache in ``cache`` (all files there), else None."""
    try:
        meta = json.loads((cache / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if not all((cache / name).is_file() for name in FILES):
        return None
    return meta


def _write_arrays(
    model: Any, rows: Iterable[Any], folder: Path, max_length: int, chunk_rows: int, bar: Any
) -> int:
    """Streams rows into ``ids.npy``/``lengths.npy``/``targets.npy`` in ``folder``; the count."""
    pad, vocab = int(model.config.pad_token_id), int(model.config.vocab_size)
    step = min(FORWARD_ROWS, chunk_rows)
    width = math.ceil(chunk_rows / step) * step  # a chunk is padded to whole forward calls
    forward = jax.jit(lambda p, i, m: teacher_sentence_vectors(model, p, i, m))
    buckets = [b for b in tokenize.bucket_lengths(max_length) if b < max_length] + [max_length]
    iterator, count, dim, pending = iter(rows), 0, None, None
    files = {name: open(folder / name, "wb") for name in ("ids.npy", "lengths.npy", "targets.npy")}
    try:
        for f in files.values():
            f.write(npy_header("<i4", (0,)))  # placeholder, rewritten with the final shape

        def store(ids, lengths, outputs, order):  # waits for one chunk's vectors, appends it
            nonlocal dim
            n = len(lengths)
            sorted_vectors = np.concatenate([np.asarray(o) for o in outputs])
            vectors = np.empty_like(sorted_vectors)
            vectors[order] = sorted_vectors
            vectors = vectors[:n]
            dim = vectors.shape[1]
            files["ids.npy"].write(np.ascontiguousarray(ids[:n], "<i4").tobytes())
            files["lengths.npy"].write(np.ascontiguousarray(lengths, "<i4").tobytes())
            files["targets.npy"].write(np.ascontiguousarray(vectors, "<f4").tobytes())
            bar.update(n)

        while True:
            ids = np.full((width, max_length), pad, np.int32)
            lengths = []
            for row in islice(iterator, chunk_rows):
                row = np.asarray(row)
                if row.ndim != 1 or not 0 < len(row) <= max_length:
                    raise ValueError(
                        f"row {count + len(lengths)} has shape {row.shape}; expected 1..{max_length}"
                        " token ids (special tokens included)"
                    )
                ids[len(lengths), : len(row)] = row
                lengths.append(len(row))
            if not lengths:
                break
            n = len(lengths)
            if ids[:n].min() < 0 or ids[:n].max() >= vocab:
                raise ValueError(
                    f"rows {count}..{count + n - 1} hold ids outside 0..{vocab - 1} "
                    "(the teacher's vocabulary)"
                )
            mask = (np.arange(max_length)[None, :] < np.asarray(lengths)[:, None]).astype(np.int32)
            mask = np.concatenate([mask, np.zeros((width - n, max_length), np.int32)])
            mask[n:, 0] = 1  # padding rows: one pad token, so no row attends to nothing
            # Rows sorted by length and each call cut to its length bucket: the teacher never
            # runs over padding past the bucket (a few compiled shapes, not one per chunk).
            used = math.ceil(n / step) * step  # real rows, then padding rows to whole calls
            order = np.argsort(mask[:used].sum(1), kind="stable")
            longest = mask[:used].sum(1)[order]
            outputs = []
            for s in range(0, used, step):  # dispatched, not waited on
                rows_at = order[s : s + step]
                cut = next(b for b in buckets if b >= int(longest[s : s + step].max()))
                outputs.append(forward(model.params, ids[rows_at, :cut], mask[rows_at, :cut]))
            if pending is not None:
                store(*pending)
            pending = (ids, np.asarray(lengths, np.int32), outputs, order)
            count += n
        if pending is not None:
            store(*pending)
        if count == 0:
            raise ValueError("build_cache was given no rows; the corpus has no training text")
        for name, (dtype, shape) in {
            "ids.npy": ("<i4", (count, max_length)),
            "lengths.npy": ("<i4", (count,)),
            "targets.npy": ("<f4", (count, dim)),
        }.items():
            files[name].seek(0)
            files[name].write(npy_header(dtype, shape))
    finally:
        for f in files.values():
            f.close()
    return count


def build_cache(
    model: Any,
    rows: Iterable[Any],
    cache_dir: str | os.PathLike,
    *,
    max_length: int,
    key: dict,
    heldout_texts: list[str],
    chunk_rows: int = 4096,
    progress: bool = True,
    process_index: int = 0,
    process_count: int = 1,
    log: Any = print,
) -> Path:
    """Embeds token rows with the teacher into ``cache_dir``, or reuses the cache there.

    Built once through :func:`embres.cache.build_once` (on process 0, into a sibling folder
    swapped in when complete; every process waits): the cache is reused (``rows`` untouched,
    the teacher not run) when it was built for this ``key``, ``max_length`` and
    :data:`CACHE_VERSION` and its files are intact; otherwise it is rebuilt (the reason is
    logged).

    Files: ``ids.npy`` int32 [n, max_length] (pad-filled with ``model.config.pad_token_id``),
    ``lengths.npy`` int32 [n], ``targets.npy`` float32 [n, d] (:func:`teacher_sentence_vectors`,
    one compiled shape: the last chunk is padded), ``heldout.json`` and ``meta.json``
    (``{"version", "key", "count", "max_length"}``).

    Args:
      model: the teacher (a ``LoadedModel``).
      rows: int token-id rows, special tokens included, each 1..max_length long (e.g. from
        :func:`text_rows`); consumed once, chunk by chunk, on process 0 only.
      cache_dir: the cache folder (created; replaced only if it holds nothing but cache files).
      max_length: width of ``ids.npy``; at most the teacher's ``max_length``.
      key: JSON-serialisable description of what was embedded (corpus digest, model, ...).
      heldout_texts: texts kept out of training, stored for fidelity checks.
      chunk_rows: rows per chunk; peak memory grows with it, not with the corpus.
      progress: show rows done and rows/s.
      process_index, process_count: this process and the run's count (process 0 builds).
      log: reports why an existing cache is rebuilt.

    Raises:
      ValueError: a row of the wrong length or with ids outside the vocabulary, no rows, a
        bad ``max_length``/``chunk_rows``, or a ``cache_dir`` holding other files.
    """
    from embres.cache import build_once

    out = Path(cache_dir).expanduser()
    full_key = {"version": CACHE_VERSION, "key": key, "max_length": max_length}

    def build(partial: Path) -> None:
        if not 0 < max_length <= model.max_length:
            raise ValueError(
                f"max_length={max_length}; expected 1..{model.max_length} for the teacher"
            )
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows={chunk_rows}; expected a positive number of rows")
        partial.mkdir()
        from tqdm.auto import tqdm

        bar = tqdm(desc=f"teacher targets -> {out}", unit="row", unit_scale=True,
                   disable=not progress)  # fmt: skip
        try:
            count = _write_arrays(model, rows, partial, max_length, chunk_rows, bar)
        finally:
            bar.close()
        (partial / "heldout.json").write_text(json.dumps(list(heldout_texts)))
        meta = {"version": CACHE_VERSION, "key": key, "count": count, "max_length": max_length}
        (partial / "meta.json").write_text(json.dumps(meta, indent=2))

    return build_once(
        out,
        full_key,
        build,
        process_index=process_index,
        process_count=process_count,
        log=log,
        check=_check_complete,
        replaceable=_replaceable,
    )


def _replaceable(folder: Path) -> bool:
    if any(p.name not in _REPLACEABLE for p in folder.iterdir()):
        raise ValueError(
            f"cache_dir {str(folder)!r} exists and holds files that are not a teacher-target "
            f"cache (expected only {sorted(FILES)}); refusing to replace it"
        )
    return True


def _check_complete(cache: Path) -> None:
    if _meta(cache) is None:
        raise ValueError(f"not a complete teacher-target cache (expected {list(FILES)})")


class CachedSource:
    """Batches ``{"ids", "mask", "targets"}`` from a cache, shuffled per epoch (seeded).

    Each process takes its own contiguous slice of every global batch. ``projection``
    ([d, k], optional) maps the teacher's targets into the student's space host-side.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        *,
        batch_size: int,
        vocab_size: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
        projection: np.ndarray | None = None,
    ):
        cache = Path(cache_dir).expanduser()
        meta = _meta(cache)
        if meta is None or meta.get("version") != CACHE_VERSION:
            raise FileNotFoundError(
                f"{str(cache)!r} is not a complete version-{CACHE_VERSION} teacher-target cache "
                f"(expected {list(FILES)}); build it with embres.data.cached.build_cache"
            )
        self.meta = meta
        self.ids = np.load(cache / "ids.npy", mmap_mode="r")
        self.lengths = np.load(cache / "lengths.npy", mmap_mode="r")
        self.targets = np.load(cache / "targets.npy", mmap_mode="r")
        self._heldout = json.loads((cache / "heldout.json").read_text())
        self.local, self.vocab_size, self.seed = batch_size, vocab_size, seed
        self.process_index, self.process_count = process_index, process_count
        self.projection = projection
        self.global_batch = batch_size * process_count
        if len(self.ids) < self.global_batch:
            raise ValueError(
                f"the corpus has {len(self.ids)} training lines, fewer than one batch "
                f"({self.global_batch}); lower config.batch_size"
            )
        self.epoch, self.index = 0, 0
        self._order = self._permutation(0)

    @property
    def key(self) -> Any:
        """The ``key`` the cache was built with (see :func:`build_cache`)."""
        return self.meta["key"]

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.ids))

    def next_batch(self) -> dict[str, np.ndarray]:
        """The next batch of this process's rows; a new shuffle starts each epoch."""
        if self.index + self.global_batch > len(self._order):
            self.epoch, self.index = self.epoch + 1, 0
            self._order = self._permutation(self.epoch)
        rows = self._order[self.index : self.index + self.global_batch]
        self.index += self.global_batch
        mine = np.sort(
            rows[self.process_index * self.local : (self.process_index + 1) * self.local]
        )
        ids = np.asarray(self.ids[mine])
        lengths = np.asarray(self.lengths[mine])
        mask = (np.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(np.int32)
        targets = np.asarray(self.targets[mine], np.float32)
        if self.projection is not None:
            targets = targets @ self.projection
        return {"ids": ids, "mask": mask, "targets": targets.astype(np.float32)}

    def get_state(self) -> dict[str, int]:
        """Position as plain ints: the epoch and the index into its shuffle."""
        return {"epoch": self.epoch, "index": self.index}

    def set_state(self, state: dict[str, int]) -> None:
        """Continues from a position returned by ``get_state``."""
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._order = self._permutation(self.epoch)

    def token_weights(self, chunk_rows: int = 65536) -> np.ndarray:
        """Token counts over the cached rows plus one (float64 [V]), read chunk by chunk."""
        counts = np.zeros(self.vocab_size, np.int64)
        for start in range(0, len(self.ids), chunk_rows):
            ids = np.asarray(self.ids[start : start + chunk_rows])
            lengths = np.asarray(self.lengths[start : start + chunk_rows])
            real = np.arange(ids.shape[1])[None, :] < lengths[:, None]
            counts += np.bincount(ids[real], minlength=self.vocab_size)[: self.vocab_size]
        return counts + 1.0

    def heldout_texts(self, n: int) -> list[str]:
        """Up to ``n`` held-out texts (never trained on)."""
        return self._heldout[:n]
