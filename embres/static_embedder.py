"""Static sentence embeddings: the mean of per-token table rows, in numpy.

No transformer and no compilation at inference: tokenise with the fast (Rust) tokenizer, then
one sparse [texts × vocab] averaging matrix times the table. Any batch shape costs the same,
and only the rows that occur are read (a gather of every token's row first was 60× slower).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from embres import tokenize


class StaticEmbedder:
    """Sentence vector = mean of the rows of its tokens (special tokens excluded).

    Args:
      table: [vocab, dim] rows.
      tokenizer: a Hugging Face tokenizer matching the table's vocabulary.
      normalize: L2-normalise the output.
      max_length: truncate each text to this many tokens.
    """

    def __init__(self, table: np.ndarray, tokenizer, normalize: bool = True, max_length: int = 512):
        self.table = np.ascontiguousarray(table, dtype=np.float32)
        self.tokenizer = tokenizer
        self.normalize = normalize
        self.max_length = max_length
        self._fallback = tokenize.fallback_token_id(tokenizer)
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            # A private copy: our truncation/padding settings must not leak into the caller's.
            backend = copy.deepcopy(backend)
            backend.no_padding()
            backend.enable_truncation(max_length)
        self._backend = backend

    @property
    def dim(self) -> int:
        return self.table.shape[1]

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, without special tokens; an empty text gets one fallback token."""
        texts = tokenize.check_texts(texts)
        if not texts:
            return []
        if self._backend is not None:
            encode = getattr(self._backend, "encode_batch_fast", self._backend.encode_batch)
            ids = [e.ids for e in encode(texts, add_special_tokens=False)]
        else:
            ids = self.tokenizer(
                texts, add_special_tokens=False, truncation=True, max_length=self.max_length
            )["input_ids"]
        return [row if row else [self._fallback] for row in ids]

    def averaging_matrix(self, ids: list[list[int]]) -> sp.csr_matrix:
        """Sparse [n, vocab] matrix whose row i averages the token rows of text i."""
        lengths = np.fromiter(map(len, ids), np.int64, count=len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), np.int64, count=int(lengths.sum()))
        weights = np.repeat(1.0 / lengths, lengths).astype(np.float32)
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        return sp.csr_matrix((weights, flat, indptr), shape=(len(ids), self.table.shape[0]))

    def encode(self, texts: Sequence[str], dims: int | None = None) -> np.ndarray:
        """Embeds texts: numpy [n, dims or dim]. ``dims`` truncates (Matryoshka tables)."""
        if dims is not None:
            check_dims(dims, self.dim)
        ids = self.token_ids(texts)
        width = self.dim if dims is None else dims
        if not ids:
            return np.zeros((0, width), np.float32)
        table = self.table if dims is None else self.table[:, :dims]
        vectors = np.asarray(self.averaging_matrix(ids) @ table, dtype=np.float32)
        if self.normalize:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def add_words(self, words: Sequence[str], rows: np.ndarray | None = None) -> np.ndarray:
        """Makes each word one token of this embedder (see :func:`embres.vocab.add_words`).

        A new word's row is ``rows[i]`` when given, else (Fast Vocabulary Transfer over this
        table) the mean of the rows of the pieces the word was split into before. Words that
        already were one token keep their id and row. Texts with no word beginning with a new
        word embed exactly as before; words that begin with one may now use it as their first
        piece (WordPiece greedy longest match).

        Args:
          words: the words to add.
          rows: optional [len(words), dim] rows for them.

        Returns:
          int64 ids, one per word.
        """
        from embres import vocab

        words = tokenize.check_texts(words)
        if rows is not None:
            rows = np.asarray(rows, np.float32)
            if rows.shape != (len(words), self.dim):
                raise ValueError(f"rows has shape {rows.shape}; expected {(len(words), self.dim)}")
        old_ids = self.token_ids(words)  # the pieces, before the words become tokens
        tokenizer, ids = vocab.add_words(self.tokenizer, words)
        # A new array: the caller's table (which ``self.table`` may be) is never written.
        table = np.zeros((max(len(self.table), int(ids.max(initial=-1)) + 1), self.dim), np.float32)
        table[: len(self.table)] = self.table
        before = len(self.table)
        for i, token_id in enumerate(ids):
            if token_id < before and old_ids[i] == [token_id]:
                continue  # already one token: its row stays
            table[token_id] = rows[i] if rows is not None else self.table[old_ids[i]].mean(0)
        backend = copy.deepcopy(tokenizer.backend_tokenizer)
        backend.no_padding()
        backend.enable_truncation(self.max_length)
        self.table, self.tokenizer, self._backend = table, tokenizer, backend
        return ids


def check_dims(dims, dim: int) -> None:
    """Refuses a Matryoshka truncation ``dims`` outside 1..``dim`` (or not an int)."""
    if isinstance(dims, bool) or not isinstance(dims, (int, np.integer)) or not 1 <= dims <= dim:
        raise ValueError(
            f"dims={dims!r}; expected an int in 1..{dim} (the model's width), or None for all {dim}"
        )


class AdapterEmbedder:
    """Sentence vectors from any adapter's ``apply`` over its own rows (e.g. the hybrid).

    The adapter is passed in (a module with ``apply(params, frozen, ids, mask)``); nothing
    here names one. Texts are tokenised without special tokens, exactly as
    :class:`StaticEmbedder` does and as training pools them, and run over length buckets
    (one compilation per bucket shape); the output is the masked mean, L2-normalised.

    Args:
      adapter: the adapter module.
      params: its trained params (numpy or JAX arrays).
      tokenizer: the Hugging Face tokenizer matching the rows.
      normalize: L2-normalise the output.
      max_length: truncate each text to this many tokens.
      batch_size: texts per compiled call. 64: texts are sorted by length and each batch is
        padded to its longest, so smaller batches pad less; on 2,000 STS-B sentences a
        transferred-block student ran 2,529 / 3,194 / 3,352 / 2,888 sentences/s at 256 /
        128 / 64 / 32 on 2 CPU cores.
    """

    def __init__(
        self,
        adapter,
        params: dict,
        tokenizer,
        normalize: bool = True,
        max_length: int = 512,
        batch_size: int = 64,
    ):
        import jax
        import jax.numpy as jnp

        from embres import pooling

        self.adapter = adapter
        self.params = {k: np.asarray(v) for k, v in params.items()}
        self._device_params = jax.tree.map(jnp.asarray, self.params)
        self.tokenizer, self.normalize = tokenizer, normalize
        self.max_length, self.batch_size = max_length, batch_size
        self._tokens = StaticEmbedder(np.zeros((1, 1), np.float32), tokenizer, False, max_length)

        # An adapter may serve the pooled vector more cheaply than pooling its token vectors
        # (a transferred block's last LayerNorm: once per sentence); the same numbers.
        apply_pooled = getattr(adapter, "apply_pooled", None)

        @jax.jit
        def forward(p, ids, mask):
            if apply_pooled is not None:
                return apply_pooled(p, None, ids, mask)
            return pooling.pool(adapter.apply(p, None, ids, mask), mask, "mean")

        self._forward = forward
        one = jax.ShapeDtypeStruct((1, 1), jnp.int32)
        self.dim = int(jax.eval_shape(forward, self._device_params, one, one).shape[-1])

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, as :meth:`StaticEmbedder.token_ids`."""
        return self._tokens.token_ids(texts)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeds texts: numpy [n, dim]."""
        return self.encode_ids(self.token_ids(texts))

    def encode_ids(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        """Embeds token-id rows (as :meth:`token_ids` gives them): numpy [n, dim]."""
        rows = [np.asarray(r, np.int32) for r in rows]
        out = np.zeros((len(rows), self.dim), np.float32)
        unk = getattr(self.tokenizer, "unk_token_id", None)
        for idx, ids, mask in tokenize.bucketed_batches(rows, self.batch_size, self.max_length, 0):
            if unk is not None:  # [UNK] holds its place but is not pooled, as in training
                mask = mask * (ids != unk)
            out[idx] = np.asarray(self._forward(self._device_params, ids, mask))[: len(idx)]
        if self.normalize:  # read here, as StaticEmbedder does, so setting it later counts
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out
