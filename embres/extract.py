"""Embedding extraction: static input tables and pooled layer-k sentence vectors.

Example::

    from embres import EmbeddingExtractor
    ex = EmbeddingExtractor(model="all-MiniLM-L6-v2")
    vecs = ex.extract_embeddings(["a sentence", "another"], layer=-1)   # numpy [2, 384]
    table = ex.embedding_table()                                        # numpy [30522, 384]

Texts longer than the model's position table (or a sentence-transformers ``max_seq_length``,
256 for all-MiniLM-L6-v2) are truncated to that many tokens.

How texts flow (host and device at once): texts are ordered by length and tokenised a window
of about 2,048 at a time in a background thread (:func:`embres.tokenize.prefetch`) while the
device computes the previous window; each window is cut into batches padded to fixed lengths
(:data:`embres.tokenize.INFERENCE_LENGTH_BUCKETS`), so each shape compiles once. One batch
stays in flight: batch i+1 is dispatched before batch i's vectors are fetched, and each copy
to the host starts as soon as its batch is computed. Vectors come back in the caller's order.

Progress: on a terminal, ``progress=True`` shows a bar. Otherwise (a batch job, a notebook
writing to a log) progress goes to the ``embres.extract`` logger at INFO, one line at most
every :data:`PROGRESS_LOG_INTERVAL` seconds, e.g. ``extract_embeddings: embedded
12,288/50,000 texts (24%), 41 s, ETA 2 min``; ``logging.basicConfig(level=logging.INFO)``
shows it.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import secrets
import struct
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from embres import pooling as pooling_lib
from embres import tokenize
from embres.locking import FileLock
from embres.models import LoadedModel, load_model

log = logging.getLogger(__name__)

# Seconds between two progress lines logged when no bar is shown; 0 logs every batch.
PROGRESS_LOG_INTERVAL = 5.0

# Rows per batch when the caller gives none. CPU: all-MiniLM-L6-v2 on 5,000 STS-B sentences,
# 2 cores, embres alone in alternating rounds, took the same CPU time per sentence at 32 and
# 64 rows (254 and 251 sentences per CPU-second) and 13% more at 128 (219), whose activations
# outgrow the caches; 32 also pads less (1.13x the real tokens, 1.15x at 64). Accelerators
# need large batches to be kept busy.
CPU_BATCH_SIZE = 32
ACCELERATOR_BATCH_SIZE = 512


def default_batch_size(backend: str | None = None) -> int:
    """Rows per batch for ``backend`` (default: JAX's default backend, e.g. ``cpu``, ``gpu``)."""
    backend = backend or jax.default_backend()
    return CPU_BATCH_SIZE if backend == "cpu" else ACCELERATOR_BATCH_SIZE


class EmbeddingExtractor:
    """Sentence and token embeddings from any layer of a ported model.

    Args:
      model: a bundled name, a Hugging Face directory, a cached hub id, or a ``LoadedModel``.
      dtype: compute dtype, ``"float32"`` or ``"bfloat16"`` (parameters stay float32).
      batch_size: rows per compiled batch (default: :func:`default_batch_size` of the device).
      max_length: truncate texts to this many tokens (default: the model's limit).
      allow_pickle: permit ``pytorch_model.bin`` checkpoints (``torch.load(weights_only=True)``).
      params: parameters to use instead of the model's own (e.g. with an adapted table).

    Attributes:
      overlap: tokenise in a background thread while the device computes (default True).
        False does the same work in the calling thread, one step after the other: the same
        batches, bitwise the same vectors.
      window: batches tokenised and sorted together (:func:`embres.tokenize.window_batches`).
    """

    def __init__(
        self,
        model: str | os.PathLike | LoadedModel = "all-MiniLM-L6-v2",
        dtype: str = "float32",
        batch_size: int | None = None,
        max_length: int | None = None,
        allow_pickle: bool = False,
        params: Any = None,
    ):
        if batch_size is None:
            batch_size = default_batch_size()
        if batch_size <= 0:
            raise ValueError(f"batch_size={batch_size} must be a positive integer")
        self.model = (
            model
            if isinstance(model, LoadedModel)
            else load_model(model, dtype=dtype, allow_pickle=allow_pickle)
        )
        if self.model.tokenizer is None:
            raise ValueError(f"model {self.model.name!r} was loaded without a tokenizer")
        self.params = self.model.params if params is None else params
        self.batch_size = batch_size
        self.overlap = True
        self.window = tokenize.window_batches(batch_size)
        limit = self.model.max_length
        if max_length is not None and not 0 < max_length <= limit:
            raise ValueError(f"max_length={max_length} must be in [1, {limit}] for this model")
        self.max_length = max_length or limit
        self.pad_id = self.model.pad_id  # always a row of the table, see LoadedModel.pad_id
        self.trace_count = 0  # how many times the forward was traced (one per bucket shape)
        self._forward = jax.jit(
            self._forward_impl, static_argnames=("depth", "pooling", "normalize")
        )

    @property
    def dim(self) -> int:
        """Width of the vectors the model produces."""
        return self.model.config.hidden_size

    @property
    def num_layers(self) -> int:
        return self.model.config.num_layers

    def resolve_layer(self, layer: int) -> int:
        """Maps a layer index (negative counts from the end; 0 = input embeddings) to [0, L]."""
        n = self.num_layers
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
            raise TypeError(
                f"layer={layer!r} ({type(layer).__name__}); expected an int layer index in "
                f"-{n + 1}..{n} (0 = input embeddings, -1 = the last layer)"
            )
        if not -(n + 1) <= layer <= n:
            raise ValueError(
                f"layer={layer!r} is out of range; this model has layers -{n + 1}..{n}"
            )
        return int(layer) % (n + 1)

    def _forward_impl(self, params, input_ids, mask, depth, pooling, normalize):
        self.trace_count += 1  # runs only while tracing
        # embres.tokenize pads on the right: attention may take the padding as lengths (the
        # form cuDNN skips work for; exact either way).
        out = self.model.apply(params, input_ids, mask, num_layers=depth, right_padded=True)
        hidden = out["last_hidden_state"]
        if pooling == "none":
            return hidden.astype(jnp.float32)
        vectors = pooling_lib.pool(hidden, mask, pooling)
        return pooling_lib.l2_normalize(vectors) if normalize else vectors

    def _settings(self, layer, pooling, normalize):
        depth = self.resolve_layer(layer)
        pooling = pooling_lib.check_pooling(pooling or self.model.pooling)
        if normalize is None:
            normalize = self.model.normalize
        elif not isinstance(normalize, (bool, np.bool_)):  # bool("no") would be True
            raise TypeError(
                f"normalize={normalize!r} ({type(normalize).__name__}); expected True, False "
                "or None (the model's default)"
            )
        return depth, pooling, bool(normalize)

    def extract_embeddings(
        self,
        texts: Sequence[str],
        layer: int = -1,
        pooling: str | None = None,
        normalize: bool | None = None,
        progress: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Embeds texts; returns numpy [n, d] in the caller's order.

        Args:
          texts: strings; empty strings are embedded, non-strings raise ``TypeError`` and
            invalid Unicode (a lone surrogate) ``ValueError``, both naming the text's index.
          layer: 0 = input embeddings, k = output of block k, -1 = last layer.
          pooling: ``mean``, ``cls``, ``last``, ``max`` or ``none``; default: the model's
            (its sentence-transformers pooling, else mean, or last for GPT-2).
          normalize: L2-normalise; default: the model's (True for sentence-transformers
            models with a Normalize module).
          progress: show a progress bar (only on a terminal). Without a bar, progress is
            logged (see the module docstring).

        Returns:
          [n, d] float32, or for ``pooling="none"`` a pair (token vectors [n, L, d], mask [n, L])
          padded to the longest text.
        """
        depth, pooling, normalize = self._settings(layer, pooling, normalize)
        texts = tokenize.check_texts(texts)
        with _Progress(len(texts), "extract_embeddings", bar=progress) as reporter:
            return self._embed(texts, depth, pooling, normalize, reporter)

    def _embed(self, texts, depth, pooling, normalize, reporter, first_index=0):
        """The forward over ``texts``; ``first_index`` numbers them in errors."""
        texts = tokenize.check_texts(texts, first_index)
        windows = tokenize.batch_windows(
            self.model.tokenizer,
            texts,
            self.batch_size,
            self.max_length,
            self.pad_id,
            self.window,
            first_index,
        )
        if self.overlap and len(texts) > self.window * self.batch_size:  # else nothing to hide
            windows = tokenize.prefetch(windows)
        with contextlib.closing(windows):  # stops the thread if the device side fails
            results = self._run(itertools.chain.from_iterable(windows), depth, pooling, normalize)
            if pooling == "none":
                return _token_vectors(len(texts), self.dim, results, reporter)
            out = np.zeros((len(texts), self.dim), np.float32)
            for indices, _, vectors in results:
                out[indices] = vectors
                reporter.update(len(indices))
            return out

    def _run(self, batches, depth, pooling, normalize):
        """Yields ``(indices, mask, numpy result)`` per batch, its padding rows dropped.

        JAX dispatch is asynchronous: batch i+1 is dispatched before batch i's result is
        waited for, so the device never idles while the host copies and stores a result.
        ``copy_to_host_async`` starts each copy as soon as the device has the result.
        """
        pending = None
        for indices, input_ids, mask in batches:
            result = self._forward(self.params, input_ids, mask, depth, pooling, normalize)
            result.copy_to_host_async()
            if pending is not None:
                yield _fetched(*pending)
            pending = (indices, mask, result)
        if pending is not None:
            yield _fetched(*pending)

    def embedding_table(self) -> np.ndarray:
        """The static input table [vocab, d] as float32 numpy."""
        return np.asarray(self.model.embedding_table(), dtype=np.float32)

    def extract_to(
        self,
        path: str | os.PathLike,
        texts: Iterable[str],
        layer: int = -1,
        pooling: str | None = None,
        normalize: bool | None = None,
        chunk_size: int = 4096,
        progress: bool = True,
    ) -> Path:
        """Streams embeddings of a corpus larger than memory into a ``.npy`` file.

        Rows are written chunk by chunk (memory is bounded by ``chunk_size``); the file opens
        with ``np.load(path, mmap_mode="r")``. A JSON sidecar (``<path>.json``) records model,
        layer, pooling, normalize, count, dim and the rows' ``sha256``;
        :func:`load_extracted` reads the two together.

        The file appears only when complete: rows go to a partial file of this call's own
        (``<path>.<pid>.<random>.partial``), renamed onto ``path`` at the end and removed on
        any error (a bad text, Ctrl-C). The new sidecar is written in full first, as
        ``<path>.json.pending``, then the rows are renamed onto ``path``, then the sidecar
        onto ``<path>.json``: a crash between the renames leaves the new rows and their
        sidecar (still pending), which :func:`load_extracted` pairs by the rows' digest, and
        the next call to this path completes the rename. At every point a reader gets
        either the old pair or the new one. One call writes a path at a time: a second
        one, from any process, raises :class:`embres.locking.LockedError` naming the first
        (``<path>.lock``). Partial files left by a killed writer are removed by the next.

        Raises:
          TypeError: a text is not a string (named by its index in the stream), ``texts``
            is a single string, or a setting has the wrong type.
          ValueError: a text is not valid Unicode (named by its index); bad settings.
          LockedError: another call is writing ``path``.
          FileNotFoundError: the folder of ``path`` does not exist.
          IsADirectoryError: ``path`` (or its sidecar's name) is a directory; checked
            before anything is computed.
        """
        depth, pooling, normalize = self._settings(layer, pooling, normalize)
        if pooling == "none":
            raise ValueError("extract_to stores pooled vectors; pooling='none' is not supported")
        if isinstance(texts, str):  # iterating it would embed its characters one by one
            raise TypeError("texts must be an iterable of strings, not a single string")
        if chunk_size <= 0:
            raise ValueError(f"chunk_size={chunk_size} must be a positive integer")
        path = Path(path)
        _check_destination(path)
        total = len(texts) if hasattr(texts, "__len__") else None
        iterator = iter(texts)
        lock = FileLock(
            path.with_name(path.name + ".lock"),
            what=f"output {path}",
            hint="Another extract_to is writing it: wait for it to finish or choose another path",
        )
        with lock:
            if lock.took_over():  # a writer of this path was killed
                log.warning("%s: %s", path, lock.took_over())
            if lock.held:  # no live writer can own a partial file of this path now
                _remove_stale_partials(path)
                _settle_pending_sidecar(path)
            meta = {
                "model": self.model.name,
                "layer": depth,
                "pooling": pooling,
                "normalize": normalize,
                "dim": self.dim,
                "dtype": "float32",
            }
            with _Progress(total, f"extract_to {path.name}", bar=progress) as reporter:
                self._write_npy(path, iterator, meta, chunk_size, reporter)
        return path

    def _write_npy(self, path, iterator, meta, chunk_size, reporter) -> None:
        """Embeds ``iterator`` chunk by chunk into ``path`` and its sidecar (see extract_to)."""
        depth, pooling, normalize = meta["layer"], meta["pooling"], meta["normalize"]
        partial = _partial_path(path)
        digest = hashlib.sha256()
        try:
            with open(partial, "wb") as f:
                f.write(_npy_header(0, self.dim))
                count = 0
                while chunk := list(itertools.islice(iterator, chunk_size)):
                    vectors = self._embed(chunk, depth, pooling, normalize, reporter, count)
                    rows = np.ascontiguousarray(vectors, dtype="<f4").tobytes()
                    f.write(rows)
                    digest.update(rows)
                    count += len(chunk)
                f.seek(0)
                f.write(_npy_header(count, self.dim))
                f.flush()
                os.fsync(f.fileno())  # the rename must not reach the disk before the rows
            pending = _pending_sidecar(path)
            sidecar = dict(meta, count=count, sha256=digest.hexdigest())
            _write_atomically(pending, json.dumps(sidecar, indent=2).encode())
            os.replace(partial, path)  # new rows; their sidecar is pending (load_extracted)
            os.replace(pending, _sidecar(path))
        finally:
            # After the rename the name is gone; after any error (a bad text, Ctrl-C, a full
            # disk) this removes the half-written rows.
            partial.unlink(missing_ok=True)


def load_extracted(path: str | os.PathLike, mmap_mode: str | None = "r"):
    """The rows ``extract_to`` wrote at ``path`` and their sidecar, as ``(array, meta)``.

    Reads ``<path>.json``, or the pending sidecar that a writer stopped between its two
    renames left (the one whose ``sha256`` the rows have), so the pair always belongs
    together.

    Raises:
      ValueError: naming both, when no sidecar describes the rows (count or digest differ).
      FileNotFoundError: ``path`` or its sidecar is missing.
    """
    path = Path(path)
    rows = np.load(path, mmap_mode=mmap_mode)
    pending = _pending_sidecar(path)
    if pending.exists():
        meta = json.loads(pending.read_text())
        if meta.get("count") == len(rows) and meta.get("sha256") == _rows_digest(path):
            return rows, meta
    meta = json.loads(_sidecar(path).read_text())
    if meta.get("count") != len(rows) or meta.get("dim") != rows.shape[1]:
        raise ValueError(
            f"{_sidecar(path)} says count={meta.get('count')}, dim={meta.get('dim')} but {path} "
            f"holds {rows.shape}; they are not a pair (re-run extract_to)"
        )
    return rows, meta


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _pending_sidecar(path: Path) -> Path:
    """Where a new sidecar waits while its rows are renamed into place."""
    return path.with_name(path.name + ".json.pending")


def _rows_digest(path: Path, rows_per_read: int = 65536) -> str:
    """sha256 of the rows of ``path`` (little-endian float32, row-major), read in chunks."""
    rows = np.load(path, mmap_mode="r")
    digest = hashlib.sha256()
    for start in range(0, len(rows), rows_per_read):
        chunk = rows[start : start + rows_per_read]
        digest.update(np.ascontiguousarray(chunk, dtype="<f4").tobytes())
    return digest.hexdigest()


def _settle_pending_sidecar(path: Path) -> None:
    """Completes or drops a sidecar a killed writer left pending (with ``path``'s lock held).

    It describes ``path`` when the writer died between its two renames (renamed into place
    here); else the rows never arrived, and it is removed.
    """
    pending = _pending_sidecar(path)
    if not pending.exists():
        return
    try:
        meta = json.loads(pending.read_text())
        matches = path.is_file() and meta.get("sha256") == _rows_digest(path)
    except (OSError, ValueError):
        matches = False
    if matches:
        log.warning("%s: completing the sidecar an interrupted extract_to left pending", path)
        os.replace(pending, _sidecar(path))
    else:
        log.warning("removing %s, left by an extract_to that did not finish", pending)
        pending.unlink(missing_ok=True)


def _check_destination(path: Path) -> None:
    """Refuses, before anything is computed, a destination the rows could not be moved to."""
    for target in (path, _sidecar(path)):
        if target.is_dir():
            raise IsADirectoryError(
                f"cannot write {target}: it is a directory; expected a .npy file path (e.g. "
                f"{path / 'embeddings.npy'}); nothing was computed"
            )
    if not path.parent.is_dir():  # checked first: the lock would create the folder
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")


def _fetched(indices, mask, result):
    """``(indices, mask, result)`` of one batch on the host, without its padding rows."""
    rows = len(indices)
    return indices, mask[:rows], np.asarray(result)[:rows]


def _token_vectors(n, dim, results, reporter):
    """Token vectors ``[n, L, d]`` and mask ``[n, L]`` of ``results``, L = the longest text.

    The longest text is known only once every window is tokenised, so the batches are kept
    and copied into place at the end.
    """
    kept = []
    for batch in results:
        kept.append(batch)
        reporter.update(len(batch[0]))
    longest = max((int(mask.sum(1).max()) for _, mask, _ in kept), default=0)
    out = np.zeros((n, longest, dim), np.float32)
    mask_out = np.zeros((n, longest), np.int32)
    for indices, mask, vectors in kept:
        width = min(mask.shape[1], longest)
        out[indices, :width] = vectors[:, :width]
        mask_out[indices, :width] = mask[:, :width]
    return out, mask_out


def _partial_path(path: Path) -> Path:
    """A partial file no other call uses: ``<path>.<pid>.<random hex>.partial``."""
    return path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")


def _remove_stale_partials(path: Path) -> None:
    """Removes partial files of ``path`` (and its sidecar) left by a writer that was killed.

    Called only with the path's lock held, so none of them belongs to a live writer.
    """
    pattern = re.compile(re.escape(path.name) + r"(\.json(\.pending)?)?\.\d+\.[0-9a-f]{8}\.partial")
    for leftover in path.parent.iterdir():
        if pattern.fullmatch(leftover.name):
            log.warning("removing %s, left by an extract_to that did not finish", leftover)
            leftover.unlink(missing_ok=True)


def _write_atomically(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a partial file and a rename: never half a file."""
    partial = _partial_path(path)
    try:
        with open(partial, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # complete on disk before its name can be
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _npy_header(rows: int, dim: int, size: int = 128) -> bytes:
    """A fixed-size .npy v1 header, so the row count can be rewritten after streaming."""
    body = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
    body = body.ljust(size - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


def _duration(seconds: float) -> str:
    """``41 s``, ``2 min``, ``1.5 h``: a duration as a person reads it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class _Progress:
    """Counts embedded texts: a tqdm bar on a terminal, else a log line every few seconds.

    Args:
      total: texts expected (None for a stream of unknown length).
      desc: what the lines are about, e.g. ``extract_to out.npy``.
      bar: show a bar when stderr is a terminal (``progress=`` of the public methods).
      clock: seconds, monotonic (a fake one in tests).
    """

    def __init__(self, total: int | None, desc: str, bar: bool, clock=time.monotonic):
        self.total, self.desc, self.done = total, desc, 0
        self._clock = clock
        self._start = self._last = clock()
        self._logged = False
        self._bar = None
        if bar and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="text")

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self._clock()
        if now - self._last >= PROGRESS_LOG_INTERVAL and log.isEnabledFor(logging.INFO):
            self._last, self._logged = now, True
            log.info("%s", self.line(now))

    def line(self, now: float) -> str:
        """``<desc>: embedded 12,288/50,000 texts (24%), 41 s, ETA 2 min``."""
        elapsed = now - self._start
        if not self.total:
            return f"{self.desc}: embedded {self.done:,} texts, {_duration(elapsed)}"
        eta = elapsed * (self.total - self.done) / max(self.done, 1)
        return (
            f"{self.desc}: embedded {self.done:,}/{self.total:,} texts "
            f"({100 * self.done // self.total}%), {_duration(elapsed)}, ETA {_duration(eta)}"
        )

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, error_type, *_) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._logged and error_type is None:  # a log that gave an ETA says when done
            elapsed = _duration(self._clock() - self._start)
            log.info("%s: done, %s texts in %s", self.desc, f"{self.done:,}", elapsed)
