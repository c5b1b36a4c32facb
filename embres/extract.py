"""Embedding extraction: static input tables and pooled layer-k sentence vectors.

Example::

    from embres import EmbeddingExtractor
    ex = EmbeddingExtractor(model="all-MiniLM-L6-v2")
    vecs = ex.extract_embeddings(["a sentence", "another"], layer=-1)   # numpy [2, 384]
    table = ex.embedding_table()                                        # numpy [30522, 384]

Texts longer than the model's position table (or a sentence-transformers ``max_seq_length``,
256 for all-MiniLM-L6-v2) are truncated to that many tokens.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from collections.abc import Iterable, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from embres import pooling as pooling_lib
from embres import tokenize
from embres.models import LoadedModel, load_model


class EmbeddingExtractor:
    """Sentence and token embeddings from any layer of a ported model.

    Args:
      model: a bundled name, a Hugging Face directory, a cached hub id, or a ``LoadedModel``.
      dtype: compute dtype, ``"float32"`` or ``"bfloat16"`` (parameters stay float32).
      batch_size: rows per compiled batch.
      max_length: truncate texts to this many tokens (default: the model's limit).
      allow_pickle: permit ``pytorch_model.bin`` checkpoints (``torch.load(weights_only=True)``).
      params: parameters to use instead of the model's own (e.g. with an adapted table).
    """

    def __init__(
        self,
        model: str | os.PathLike | LoadedModel = "all-MiniLM-L6-v2",
        dtype: str = "float32",
        batch_size: int = 64,
        max_length: int | None = None,
        allow_pickle: bool = False,
        params: Any = None,
    ):
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
        if not isinstance(layer, (int, np.integer)) or not -(n + 1) <= layer <= n:
            raise ValueError(
                f"layer={layer!r} is out of range; this model has layers -{n + 1}..{n}"
            )
        return int(layer) % (n + 1)

    def _forward_impl(self, params, input_ids, mask, depth, pooling, normalize):
        self.trace_count += 1  # runs only while tracing
        out = self.model.apply(params, input_ids, mask, num_layers=depth)
        hidden = out["last_hidden_state"]
        if pooling == "none":
            return hidden.astype(jnp.float32)
        vectors = pooling_lib.pool(hidden, mask, pooling)
        return pooling_lib.l2_normalize(vectors) if normalize else vectors

    def _settings(self, layer, pooling, normalize):
        depth = self.resolve_layer(layer)
        pooling = pooling_lib.check_pooling(pooling or self.model.pooling)
        normalize = self.model.normalize if normalize is None else bool(normalize)
        return depth, pooling, normalize

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
          texts: strings; empty strings are embedded, non-strings raise ``TypeError``.
          layer: 0 = input embeddings, k = output of block k, -1 = last layer.
          pooling: ``mean``, ``cls``, ``last``, ``max`` or ``none``; default: the model's
            (its sentence-transformers pooling, else mean, or last for GPT-2).
          normalize: L2-normalise; default: the model's (True for sentence-transformers
            models with a Normalize module).
          progress: show a progress bar (only on a terminal).

        Returns:
          [n, d] float32, or for ``pooling="none"`` a pair (token vectors [n, L, d], mask [n, L])
          padded to the longest text.
        """
        depth, pooling, normalize = self._settings(layer, pooling, normalize)
        token_ids = tokenize.encode(self.model.tokenizer, texts, self.max_length)
        n = len(token_ids)
        if pooling == "none":
            longest = max((len(t) for t in token_ids), default=0)
            out = np.zeros((n, longest, self.dim), np.float32)
            mask_out = np.zeros((n, longest), np.int32)
        else:
            out = np.zeros((n, self.dim), np.float32)
        batches = tokenize.bucketed_batches(
            token_ids, self.batch_size, self.max_length, self.pad_id
        )
        bar = _progress(progress, total=n, desc="embedding")
        pending = None  # dispatch batch i+1 before waiting on batch i
        for indices, input_ids, mask in batches:
            result = self._forward(self.params, input_ids, mask, depth, pooling, normalize)
            if pending is not None:
                self._store(out, mask_out if pooling == "none" else None, *pending)
                bar.update(len(pending[0]))
            pending = (indices, mask, result)
        if pending is not None:
            self._store(out, mask_out if pooling == "none" else None, *pending)
            bar.update(len(pending[0]))
        bar.close()
        return (out, mask_out) if pooling == "none" else out

    @staticmethod
    def _store(out, mask_out, indices, mask, result):
        result = np.asarray(result)[: len(indices)]
        if mask_out is None:
            out[indices] = result
        else:
            width = min(result.shape[1], out.shape[1])
            out[indices, :width] = result[:, :width]
            mask_out[indices, :width] = mask[: len(indices), :width]

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
        layer, pooling, normalize, count and dim. The file appears only when complete.
        """
        depth, pooling, normalize = self._settings(layer, pooling, normalize)
        if pooling == "none":
            raise ValueError("extract_to stores pooled vectors; pooling='none' is not supported")
        path = Path(path)
        partial_path = path.with_name(path.name + ".partial")
        total = len(texts) if hasattr(texts, "__len__") else None
        bar = _progress(progress, total=total, desc=f"extract_to {path.name}")
        count, iterator = 0, iter(texts)
        with open(partial_path, "wb") as f:
            f.write(_npy_header(0, self.dim))
            while chunk := list(islice(iterator, chunk_size)):
                try:
                    vectors = self.extract_embeddings(chunk, depth, pooling, normalize)
                except TypeError as e:  # name the index in the whole stream, not the chunk
                    raise TypeError(f"{e} (chunk starting at text {count})") from e
                f.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
                count += len(chunk)
                bar.update(len(chunk))
            f.seek(0)
            f.write(_npy_header(count, self.dim))
        bar.close()
        os.replace(partial_path, path)
        meta = {
            "model": self.model.name,
            "layer": depth,
            "pooling": pooling,
            "normalize": normalize,
            "count": count,
            "dim": self.dim,
            "dtype": "float32",
        }
        Path(str(path) + ".json").write_text(json.dumps(meta, indent=2))
        return path


def _npy_header(rows: int, dim: int, size: int = 128) -> bytes:
    """A fixed-size .npy v1 header, so the row count can be rewritten after streaming."""
    body = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
    body = body.ljust(size - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(enabled: bool, total: int | None, desc: str):
    if not enabled or not sys.stderr.isatty():
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="text")
