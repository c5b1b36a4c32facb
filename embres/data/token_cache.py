"""The teacher's token states, computed once and streamed from disk for token-level distillation.

A contextual student is trained against the teacher's states of every token, not only
against its sentence vector. Running the teacher in every step would cost a full teacher
forward per step; :func:`build_token_cache` runs it once per sentence and stores, for each
sentence's own tokens (the template ``[CLS]``/``[SEP]`` dropped, as the served student never
sees them):

* the states of the requested layers in the student's PCA basis, ``(h - μ) · P``, as
  float16: ``states_<layer>.npy`` [T, d] (T tokens in all), memory-mapped when read;
* the token ids (``ids.npy`` [T]) and each sentence's start (``offsets.npy`` [n + 1]);
* the teacher's sentence vectors (``targets.npy`` float32 [n, D], its own pooling);
* per vocabulary id, the sum and count of its states (``sums_<layer>.npy``,
  ``counts.npy``): the corpus average of each token's contextual states, a static row
  that has seen context (used by ``config.objective.row_init = "corpus"``).

:class:`TokenCacheSource` serves batches grouped by length (``compiled_shapes`` padded
lengths), shuffled per epoch, with a position that resumes exactly.

The folder is built once through :func:`embres.cache.build_once` (process 0 writes a sibling
folder swapped in when complete; every process waits); a build for the same key, layers,
length and :data:`VERSION` reuses it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from itertools import islice
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from embres import tokenize
from embres.data.cached import npy_header, teacher_sentence_vectors

VERSION = 1
FORWARD_ROWS = 128  # rows per compiled teacher call
_FIXED = ("ids.npy", "offsets.npy", "targets.npy", "counts.npy", "heldout.json", "meta.json")


def layer_files(layers: Iterable[int]) -> list[str]:
    """The per-layer files of a cache holding ``layers``."""
    return [f"{kind}_{k}.npy" for k in layers for kind in ("states", "sums")]


def _meta(cache: Path) -> dict | None:
    try:
        meta = json.loads((cache / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    names = [*_FIXED, *layer_files(meta.get("layers", []))]
    return meta if all((cache / n).is_file() for n in names) else None


class _Writer:
    """Appends rows of flat arrays to ``.npy`` files whose row count is known only at the end."""

    def __init__(self, folder: Path, specs: dict[str, tuple[str, tuple[int, ...]]]):
        self.specs, self.rows = specs, dict.fromkeys(specs, 0)
        self.files = {name: open(folder / name, "wb") for name in specs}
        for name, (dtype, tail) in specs.items():
            self.files[name].write(npy_header(dtype, (0, *tail)))

    def append(self, name: str, array: np.ndarray) -> None:
        dtype, _ = self.specs[name]
        self.files[name].write(np.ascontiguousarray(array, dtype).tobytes())
        self.rows[name] += len(array)

    def close(self, finished: bool) -> None:
        for name, f in self.files.items():
            if finished:
                dtype, tail = self.specs[name]
                f.seek(0)
                f.write(npy_header(dtype, (self.rows[name], *tail)))
            f.close()


def _forward_fn(model: Any, layers: tuple[int, ...], mean: np.ndarray, basis: np.ndarray):
    """jit: (params, ids, mask) -> (sentence vectors [b, D] f32, states [k, b, l, d] f16)."""
    mean, basis = jnp.asarray(mean, jnp.float32), jnp.asarray(basis, jnp.float32)

    def forward(params, ids, mask):
        out = model.apply(params, ids, mask, output_hidden_states=True)
        hidden = out["hidden_states"]
        states = jnp.stack([(hidden[k] - mean) @ basis for k in layers]).astype(jnp.float16)
        vectors = teacher_sentence_vectors(model, params, ids, mask)  # XLA shares the forward
        return vectors, states

    return jax.jit(forward)


def sample_states(model: Any, rows: list[Any], layers: Iterable[int]) -> dict:
    """The teacher's hidden states on a few rows, kept whole (full width, every position).

    Returns ``{"states": {layer: float32 [n, l, D]}, "mask": [n, l] (1 at real tokens),
    "content": [n, l] (1 at each row's own tokens, the template excluded)}``, ``l`` the
    longest row. For choosing a basis and ranking what a transfer keeps, before caching.
    """
    prefix, suffix = (len(t) for t in tokenize.special_template(model.tokenizer))
    length = max(len(r) for r in rows)
    ids = np.full((len(rows), length), int(model.config.pad_token_id), np.int32)
    mask = np.zeros((len(rows), length), np.int32)
    content = np.zeros((len(rows), length), np.int32)
    for j, r in enumerate(rows):
        ids[j, : len(r)], mask[j, : len(r)] = r, 1
        content[j, prefix : len(r) - suffix] = 1
    layers = sorted({int(k) % (model.config.num_layers + 1) for k in layers})
    forward = jax.jit(
        lambda p, i, m: [
            model.apply(p, i, m, output_hidden_states=True)["hidden_states"][k] for k in layers
        ]
    )
    parts: dict[int, list[np.ndarray]] = {k: [] for k in layers}
    for start in range(0, len(rows), FORWARD_ROWS):
        chunk = slice(start, start + FORWARD_ROWS)
        for k, states in zip(layers, forward(model.params, ids[chunk], mask[chunk]), strict=True):
            parts[k].append(np.asarray(states, np.float32))
    states = {k: np.concatenate(v) for k, v in parts.items()}
    return {"states": states, "mask": mask, "content": content}


def build_token_cache(
    model: Any,
    rows: Iterable[Any],
    cache_dir: str | os.PathLike,
    *,
    max_length: int,
    key: dict,
    heldout_texts: list[str],
    mean: np.ndarray,
    basis: np.ndarray,
    layers: tuple[int, ...],
    chunk_rows: int = 2048,
    progress: bool = True,
    process_index: int = 0,
    process_count: int = 1,
    log: Any = print,
) -> Path:
    """Runs the teacher once over ``rows`` and stores its token states; reuses a cache
    built for the same ``key``, layers and length (:func:`embres.cache.build_once`).

    Args:
      model: the teacher (a ``LoadedModel``).
      rows: token-id rows with the teacher's special tokens, each 1..max_length long
        (e.g. :func:`embres.data.cached.text_rows`); rows with no token of their own
        between the template ids are skipped. Read on process 0 only.
      cache_dir: the cache folder (replaced only if it holds a cache).
      max_length: longest row.
      key: JSON description of what is embedded; the basis's inputs should be part of it.
      heldout_texts: texts kept out of training (stored for fidelity checks).
      mean, basis: the PCA mean [D] and components [D, d] the states are stored in.
      layers: hidden-state indices (0 = embeddings, L = last) to store.
      chunk_rows: rows per chunk; memory grows with it, never with the corpus.
      progress: a bar with rows done.
      process_index, process_count: this process and the run's count (process 0 builds).
      log: reports why an existing cache is rebuilt.

    Raises:
      ValueError: ids outside the vocabulary, rows too long, no usable row, or a
        ``cache_dir`` holding other files.
    """
    from embres.cache import build_once

    out = Path(cache_dir).expanduser()
    n_layers = model.config.num_layers
    layers = tuple(int(k) % (n_layers + 1) for k in layers)
    key = json.loads(json.dumps({**key, "layers": list(layers), "max_length": max_length}))

    def build(partial: Path) -> None:
        _build(partial, out, model, rows, key, heldout_texts, max_length, layers, mean, basis,
               chunk_rows, progress)  # fmt: skip

    def complete(cache: Path) -> None:
        if _meta(cache) is None:
            raise ValueError("not a complete token-state cache")

    return build_once(
        out,
        {"version": VERSION, "key": key},
        build,
        process_index=process_index,
        process_count=process_count,
        log=log,
        check=complete,
        replaceable=_replaceable,
    )


def _build(
    partial, out, model, rows, key, heldout, max_length, layers, mean, basis, chunk_rows, progress
) -> None:
    """Write the states of ``rows`` into the new folder ``partial``, then its held-out texts
    and meta (see :func:`build_token_cache` for the arguments)."""
    from tqdm.auto import tqdm

    partial.mkdir()
    bar = tqdm(desc=f"teacher token states -> {out}", unit="row", unit_scale=True,
               disable=not progress)  # fmt: skip
    try:
        count, tokens = _write(
            model, rows, partial, max_length, layers, mean, basis, chunk_rows, bar
        )
    finally:
        bar.close()
    (partial / "heldout.json").write_text(json.dumps(list(heldout)))
    meta = {
        "version": VERSION,
        "key": key,
        "count": count,
        "tokens": tokens,
        "layers": list(layers),
        "dim": int(basis.shape[1]),
    }
    (partial / "meta.json").write_text(json.dumps(meta, indent=2))


def _replaceable(folder: Path) -> bool:
    if _meta(folder) is None:
        raise ValueError(
            f"cache_dir {str(folder)!r} exists and is not a complete token-state cache; refusing "
            "to replace it (delete it, or choose another config.data.cache_dir)"
        )
    return True


def _write(model, rows, folder, max_length, layers, mean, basis, chunk_rows, bar):
    """Streams ``rows`` through the teacher into ``folder``; (sentences, tokens) written."""
    vocab, pad = int(model.config.vocab_size), int(model.config.pad_token_id)
    prefix, suffix = (len(t) for t in tokenize.special_template(model.tokenizer))
    d, big = int(basis.shape[1]), int(model.config.hidden_size)
    forward = _forward_fn(model, layers, mean, basis)
    buckets = tokenize.bucket_lengths(max_length)
    sums = np.zeros((len(layers), vocab, d), np.float64)
    counts = np.zeros(vocab, np.int64)
    specs = {"ids.npy": ("<i4", ()), "targets.npy": ("<f4", (big,))}
    specs.update({f"states_{k}.npy": ("<f2", (d,)) for k in layers})
    writer = _Writer(folder, specs)
    offsets, finished, iterator = [0], False, iter(rows)
    try:
        while chunk := [np.asarray(r, np.int64) for r in islice(iterator, chunk_rows)]:
            chunk = [r for r in chunk if len(r) > prefix + suffix]  # no text of its own: skip
            for r in chunk:
                if r.ndim != 1 or len(r) > max_length or r.min() < 0 or r.max() >= vocab:
                    raise ValueError(
                        f"a row of {len(r)} ids in {r.min()}..{r.max()}; expected 1..{max_length}"
                        f" ids in 0..{vocab - 1} (the teacher's vocabulary)"
                    )
            # Calls take rows sorted by length, each cut to its bucket (a few compiled shapes,
            # no teacher time on padding); rows are written back in corpus order.
            order = np.argsort([len(r) for r in chunk], kind="stable")
            results: list[Any] = [None] * len(chunk)
            for s in range(0, len(order), FORWARD_ROWS):
                picked = order[s : s + FORWARD_ROWS]
                length = next(b for b in buckets if b >= max(len(chunk[i]) for i in picked))
                ids = np.full((FORWARD_ROWS, length), pad, np.int32)
                mask = np.zeros((FORWARD_ROWS, length), np.int32)
                mask[len(picked) :, 0] = 1  # filler rows: one token, so none attends to nothing
                for j, i in enumerate(picked):
                    ids[j, : len(chunk[i])], mask[j, : len(chunk[i])] = chunk[i], 1
                vectors, states = jax.device_get(forward(model.params, ids, mask))
                for j, i in enumerate(picked):
                    own = slice(prefix, len(chunk[i]) - suffix)
                    results[i] = (vectors[j : j + 1], states[:, j, own])
            for r, (vector, own_states) in zip(chunk, results, strict=True):
                own = r[prefix : len(r) - suffix]
                writer.append("ids.npy", own)
                writer.append("targets.npy", vector)
                for li, k in enumerate(layers):
                    writer.append(f"states_{k}.npy", own_states[li])
                    np.add.at(sums[li], own, own_states[li].astype(np.float64))
                counts[own] += 1
                offsets.append(offsets[-1] + len(own))
            bar.update(len(chunk))
        if len(offsets) == 1:
            raise ValueError("build_token_cache was given no row with text of its own")
        finished = True
    finally:
        writer.close(finished)
    np.save(folder / "offsets.npy", np.asarray(offsets, np.int64))
    np.save(folder / "counts.npy", counts)
    for li, k in enumerate(layers):
        np.save(folder / f"sums_{k}.npy", sums[li].astype(np.float32))
    return len(offsets) - 1, offsets[-1]


def corpus_rows(
    cache_dir: str | os.PathLike, layer: int, fallback: np.ndarray, prior: float = 1.0
) -> np.ndarray:
    """Rows that average each token's contextual states over the corpus, float32 [V, d].

    A token seen ``c`` times gets ``(sum + prior · fallback) / (c + prior)``: its corpus
    mean, pulled towards ``fallback`` (e.g. its vocabulary-distilled row) when rare; unseen
    tokens keep ``fallback``.
    """
    cache = Path(cache_dir)
    counts = np.load(cache / "counts.npy").astype(np.float64)[:, None]
    sums = np.load(cache / f"sums_{layer}.npy").astype(np.float64)
    rows = (sums + prior * fallback[: len(sums)]) / (counts + prior)
    return rows.astype(np.float32)


class TokenCacheSource:
    """Batches ``{"ids", "mask", "targets", "states_<layer>"...}`` from a token cache.

    ``ids`` [b, l] are each sentence's own tokens (pads 0, ``mask`` 0 there), ``states_<k>``
    [b, l, d] float16 the teacher's states in the basis, ``targets`` [b, D] float32 its
    sentence vectors. Batches hold sentences of similar length, padded to one of
    ``compiled_shapes`` lengths; their order is reshuffled every epoch (seeded). Each
    process takes its own slice of every global batch; all slices share one length.
    """

    GROUP = 32  # batches sorted by length together: long enough to group, short enough to mix

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        *,
        batch_size: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
    ):
        cache = Path(cache_dir).expanduser()
        meta = _meta(cache)
        if meta is None or meta.get("version") != VERSION:
            raise FileNotFoundError(
                f"{str(cache)!r} is not a complete version-{VERSION} token-state cache; build "
                "it with embres.data.token_cache.build_token_cache"
            )
        self.meta, self.cache = meta, cache
        self.ids = np.load(cache / "ids.npy", mmap_mode="r")
        self.offsets = np.load(cache / "offsets.npy")
        self.targets = np.load(cache / "targets.npy", mmap_mode="r")
        self.layers = tuple(meta["layers"])
        self.states = {k: np.load(cache / f"states_{k}.npy", mmap_mode="r") for k in self.layers}
        self._heldout = json.loads((cache / "heldout.json").read_text())
        self.local, self.seed = batch_size, seed
        self.process_index, self.process_count = process_index, process_count
        self.global_batch = batch_size * process_count
        self.count = len(self.offsets) - 1
        if self.count < self.global_batch:
            raise ValueError(
                f"the corpus has {self.count} usable training lines, fewer than one batch "
                f"({self.global_batch}); lower config.batch_size"
            )
        self.lengths = np.diff(self.offsets)
        longest = int(self.lengths.max())
        self.buckets = tuple(b for b in tokenize.bucket_lengths(longest) if b < longest) + (
            longest,
        )
        self.compiled_shapes = len(self.buckets)
        self.epoch, self.index = 0, 0
        self._batches = self._plan(0)

    def _plan(self, epoch: int) -> list[np.ndarray]:
        """This epoch's global batches: shuffled rows, sorted by length within groups of
        :attr:`GROUP` batches, cut into batches, the batch order shuffled."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.count)
        n = self.count // self.global_batch * self.global_batch  # whole batches only
        span = self.GROUP * self.global_batch
        batches = []
        for start in range(0, n, span):
            group = order[start : min(start + span, n)]
            group = group[np.argsort(self.lengths[group], kind="stable")]
            batches += np.split(group, len(group) // self.global_batch)
        return [batches[i] for i in rng.permutation(len(batches))]

    def next_batch(self) -> dict[str, np.ndarray]:
        """The next batch of this process's rows; a new plan starts each epoch."""
        if self.index >= len(self._batches):
            self.epoch, self.index = self.epoch + 1, 0
            self._batches = self._plan(self.epoch)
        rows = self._batches[self.index]
        self.index += 1
        length = next(b for b in self.buckets if b >= int(self.lengths[rows].max()))
        mine = np.sort(
            rows[self.process_index * self.local : (self.process_index + 1) * self.local]
        )
        ids = np.zeros((len(mine), length), np.int32)
        mask = np.zeros((len(mine), length), np.int32)
        states = {
            k: np.zeros((len(mine), length, self.meta["dim"]), np.float16) for k in self.layers
        }
        for j, r in enumerate(mine):
            a, b = self.offsets[r], self.offsets[r + 1]
            ids[j, : b - a], mask[j, : b - a] = self.ids[a:b], 1
            for k in self.layers:
                states[k][j, : b - a] = self.states[k][a:b]
        batch = {"ids": ids, "mask": mask, "targets": np.asarray(self.targets[mine], np.float32)}
        batch.update({f"states_{k}": v for k, v in states.items()})
        return batch

    def get_state(self) -> dict[str, int]:
        """Position as plain ints: the epoch and the batch index in its plan."""
        return {"epoch": self.epoch, "index": self.index}

    def set_state(self, state: dict[str, int]) -> None:
        """Continues from a position returned by :meth:`get_state`."""
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._batches = self._plan(self.epoch)

    def heldout_texts(self, n: int) -> list[str]:
        """Up to ``n`` held-out texts (never trained on)."""
        return self._heldout[:n]

    @property
    def steps_per_epoch(self) -> int:
        """Global batches in one pass over the corpus."""
        return math.floor(self.count / self.global_batch)
