"""Static sentence embeddings: the mean of per-token table rows, in numpy.

No transformer and no compilation at inference: tokenise with the fast (Rust) tokenizer,
gather rows, and reduce per sentence with one ``np.add.reduceat`` over the flat token list,
so any batch shape costs the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embres import tokenize


class StaticEmbedder:
    """Sentence vector = mean of the rows of its tokens (special tokens excluded).

    Args:
      table: [vocab, dim] rows (float32, or int8 with ``scales``).
      tokenizer: a Hugging Face fast tokenizer matching the table's vocabulary.
      normalize: L2-normalise the output.
      max_length: truncate each text to this many tokens.
    """

    def __init__(self, table: np.ndarray, tokenizer, normalize: bool = True, max_length: int = 512):
        self.table = np.ascontiguousarray(table, dtype=np.float32)
        self.tokenizer = tokenizer
        self.normalize = normalize
        self.max_length = max_length
        self._fallback = tokenize.fallback_token_id(tokenizer)

    @property
    def dim(self) -> int:
        return self.table.shape[1]

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        texts = tokenize.check_texts(texts)
        if not texts:
            return []
        return self.tokenizer(
            texts, add_special_tokens=False, truncation=True, max_length=self.max_length
        )["input_ids"]

    def encode(self, texts: Sequence[str], dims: int | None = None) -> np.ndarray:
        """Embeds texts: numpy [n, dims or dim]. ``dims`` truncates (Matryoshka tables)."""
        ids = self.token_ids(texts)
        table = self.table if dims is None else self.table[:, :dims]
        if not ids:
            return np.zeros((0, table.shape[1]), np.float32)
        lengths = np.fromiter((len(r) for r in ids), np.int64, count=len(ids))
        flat = np.fromiter((t for r in ids for t in r), np.int64, count=int(lengths.sum()))
        empty = lengths == 0
        if empty.any():  # an empty text becomes one fallback token, never a crash
            ids = [r if r else [self._fallback] for r in ids]
            lengths = np.maximum(lengths, 1)
            flat = np.fromiter((t for r in ids for t in r), np.int64, count=int(lengths.sum()))
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        sums = np.add.reduceat(table[flat], starts, axis=0)
        vectors = sums / lengths[:, None]
        if self.normalize:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors.astype(np.float32)
