"""``cached:PATH``: a text corpus with the teacher's sentence embeddings computed once.

Distilling a static student needs the teacher's vector for every training sentence. Running
the teacher inside every step would cost a full forward per step; instead
:func:`build_cache` tokenises the corpus and embeds it once (``EmbeddingExtractor.extract_to``)
into memory-mapped ``.npy`` files, and :class:`CachedSource` streams batches from them, so
corpus size is bounded by disk, not RAM. The cache lives in ``<workdir>/cache`` (or
``config.data.cache_dir``) and is reused when the corpus, model and length match.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

CACHE_VERSION = 1


def _training_lines(path: Path, heldout: int) -> tuple[list[str], Iterator[str]]:
    """(held-out lines, iterator over the rest): non-empty, stripped, in file order."""
    held: list[str] = []

    def lines():
        with open(path, encoding="utf-8", errors="replace") as f:
            for raw in f:
                text = raw.strip()
                if not text:
                    continue
                if len(held) < heldout:
                    held.append(text)
                    continue
                yield text

    it = lines()
    first = next(it, None)  # fills ``held`` before returning it
    if first is None:
        raise ValueError(f"{path} has no training lines after the {heldout} held-out ones")

    def chained():
        yield first
        yield from it

    return held, chained()


def build_cache(
    model: Any,
    text_path: str | os.PathLike,
    cache_dir: str | os.PathLike,
    max_length: int,
    heldout: int = 0,
    progress: bool = True,
) -> Path:
    """Tokenises ``text_path`` and embeds it with the teacher into ``cache_dir`` (reused if valid).

    Files: ``ids.npy`` int32 [n, max_length] (pad-filled), ``lengths.npy`` int32 [n],
    ``targets.npy`` float32 [n, d] (the teacher's sentence vectors, its own pooling and
    normalisation), ``heldout.json`` and ``meta.json``.
    """
    from embres import tokenize
    from embres.extract import EmbeddingExtractor

    text_path, out = Path(text_path), Path(cache_dir)
    stat = text_path.stat()
    meta = {
        "version": CACHE_VERSION,
        "model": str(model.path),
        "text": str(text_path.resolve()),
        "size": stat.st_size,
        "mtime": int(stat.st_mtime),
        "max_length": max_length,
        "heldout": heldout,
    }
    meta_file = out / "meta.json"
    if meta_file.exists():
        old = json.loads(meta_file.read_text())
        if {k: old.get(k) for k in meta} == meta:
            return out
    out.mkdir(parents=True, exist_ok=True)
    held, lines = _training_lines(text_path, heldout)
    texts = list(lines)  # the token ids below are the dominant cost anyway
    pad = int(model.config.pad_token_id)
    ids = np.lib.format.open_memmap(out / "ids.npy", "w+", np.int32, (len(texts), max_length))
    lengths = np.zeros(len(texts), np.int32)
    for start in range(0, len(texts), 4096):
        chunk = tokenize.encode(model.tokenizer, texts[start : start + 4096], max_length)
        block = np.full((len(chunk), max_length), pad, np.int32)
        for r, row in enumerate(chunk):
            block[r, : len(row)] = row
            lengths[start + r] = len(row)
        ids[start : start + len(chunk)] = block
    ids.flush()
    del ids
    np.save(out / "lengths.npy", lengths)
    extractor = EmbeddingExtractor(model, max_length=min(max_length, model.max_length))
    extractor.extract_to(out / "targets.npy", texts, progress=progress)
    (out / "heldout.json").write_text(json.dumps(held))
    meta["count"] = len(texts)
    meta_file.write_text(json.dumps(meta, indent=2))
    return out


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
        cache = Path(cache_dir)
        self.ids = np.load(cache / "ids.npy", mmap_mode="r")
        self.lengths = np.load(cache / "lengths.npy")
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

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.ids))

    def next_batch(self) -> dict[str, np.ndarray]:
        if self.index + self.global_batch > len(self._order):
            self.epoch, self.index = self.epoch + 1, 0
            self._order = self._permutation(self.epoch)
        rows = self._order[self.index : self.index + self.global_batch]
        self.index += self.global_batch
        mine = np.sort(
            rows[self.process_index * self.local : (self.process_index + 1) * self.local]
        )
        ids = np.asarray(self.ids[mine])
        mask = (np.arange(ids.shape[1])[None, :] < self.lengths[mine][:, None]).astype(np.int32)
        targets = np.asarray(self.targets[mine], np.float32)
        if self.projection is not None:
            targets = targets @ self.projection
        return {"ids": ids, "mask": mask, "targets": targets.astype(np.float32)}

    def get_state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def set_state(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._order = self._permutation(self.epoch)

    def token_weights(self) -> np.ndarray:
        mask = np.arange(self.ids.shape[1])[None, :] < self.lengths[:, None]
        flat = np.asarray(self.ids)[mask]
        return np.bincount(flat, minlength=self.vocab_size)[: self.vocab_size] + 1.0

    def heldout_texts(self, n: int) -> list[str]:
        return self._heldout[:n]
