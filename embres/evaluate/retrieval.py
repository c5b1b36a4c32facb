"""Retrieval: recall@k and MRR@10 of query -> document search by cosine similarity.

Sources:

* an STS dataset (``stsb``, ``stsb_tr``, ``sick`` or an STS-B-format file): each pair with
  gold score >= ``min_score`` makes sentence1 a query and sentence2 a relevant document; the
  corpus is every distinct sentence2 of the split, so low-score pairs supply distractors.
* ``pairs:<path>``: a tab-separated file with a ``query<TAB>document`` header; the corpus is
  every distinct document.

A query that occurs in several relevant pairs has all their documents as relevant.
Recall@k is the fraction of a query's relevant documents in its top k, averaged over queries.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from embres.evaluate.common import (
    DataFormatError,
    EmbedFn,
    Skipped,
    embed_unique,
    normalize_rows,
    read_lines,
    require_file,
)
from embres.evaluate.sts import load_pairs, metric_key


def read_pair_file(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(queries, documents) of a ``query<TAB>document`` file with a header row."""
    path = require_file(Path(path), "query<TAB>document pairs")
    lines = read_lines(path)
    if not lines or lines[0][1].split("\t")[:2] != ["query", "document"]:
        raise DataFormatError(f"{path}:1: expected the header 'query<TAB>document'")
    queries, documents = [], []
    for lineno, line in lines[1:]:
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataFormatError(f"{path}:{lineno}: expected 2 tab-separated fields, got {line!r}")
        queries.append(fields[0])
        documents.append(fields[1])
    return queries, documents


def build_task(
    queries: Sequence[str], documents: Sequence[str], corpus: Sequence[str] | None = None
) -> tuple[list[str], list[str], list[set[int]]]:
    """(distinct queries, corpus, relevant corpus rows per query) from query->document pairs."""
    corpus = list(dict.fromkeys(documents if corpus is None else corpus))
    doc_row = {d: i for i, d in enumerate(corpus)}
    relevant: dict[str, set[int]] = {}
    for q, d in zip(queries, documents, strict=True):
        if d not in doc_row:
            raise ValueError(f"document {d[:60]!r} of query {q[:60]!r} is not in the corpus")
        relevant.setdefault(q, set()).add(doc_row[d])
    return list(relevant), corpus, list(relevant.values())


def rank_metrics(
    query_vectors: np.ndarray,
    corpus_vectors: np.ndarray,
    relevant: Sequence[set[int]],
    ks: Sequence[int] = (1, 5, 10),
    chunk: int = 1024,
) -> dict[str, float]:
    """recall@k for each k and MRR@10 of cosine ranking; queries are scored in chunks."""
    q, c = normalize_rows(query_vectors), normalize_rows(corpus_vectors)
    depth = min(max(max(ks), 10), len(c))
    recall = {k: 0.0 for k in ks}
    reciprocal = 0.0
    for start in range(0, len(q), chunk):
        scores = q[start : start + chunk] @ c.T
        top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
        order = np.take_along_axis(scores, top, axis=1).argsort(axis=1, kind="stable")[:, ::-1]
        top = np.take_along_axis(top, order, axis=1)
        for row, ranked in enumerate(top):
            rel = relevant[start + row]
            hits = [r in rel for r in ranked]
            for k in ks:
                recall[k] += sum(hits[:k]) / len(rel)
            first = next((i for i, h in enumerate(hits[:10]) if h), None)
            reciprocal += 0.0 if first is None else 1.0 / (first + 1)
    n = len(q)
    out = {f"recall@{k}": recall[k] / n for k in ks}
    out["mrr@10"] = reciprocal / n
    return out


class RetrievalEvaluator:
    """recall@k and MRR@10 on a pair source (see the module docstring).

    Args:
      dataset: an STS dataset name or file, or ``pairs:<path>``.
      split: the STS split.
      data_dir: default ``$EMBRES_DATA_DIR``.
      min_score: STS pairs with gold >= this are query -> relevant document.
      ks: cut-offs of recall.
      limit: use only the first ``limit`` pairs of the source.
    """

    def __init__(
        self,
        dataset: str = "stsb",
        split: str = "dev",
        data_dir: str | os.PathLike | None = None,
        min_score: float = 4.0,
        ks: Sequence[int] = (1, 5, 10),
        limit: int | None = None,
    ):
        if not ks or min(ks) < 1:
            raise ValueError(f"ks={ks!r}: expected positive cut-offs")
        self.dataset, self.split, self.data_dir = dataset, split, data_dir
        self.min_score, self.ks, self.limit = min_score, tuple(ks), limit

    def load(self) -> tuple[list[str], list[str], list[set[int]], str]:
        """(queries, corpus, relevant rows per query, metric prefix)."""
        if self.dataset.startswith("pairs:"):
            path = self.dataset.removeprefix("pairs:")
            queries, documents = read_pair_file(path)
            queries, documents = queries[: self.limit], documents[: self.limit]
            return (*build_task(queries, documents), f"retrieval/{Path(path).stem}")
        pairs = load_pairs(self.dataset, self.split, self.data_dir).head(self.limit)
        keep = np.flatnonzero(pairs.scores >= self.min_score)
        queries = [pairs.sentences1[i] for i in keep]
        documents = [pairs.sentences2[i] for i in keep]
        prefix = f"retrieval/{metric_key(self.dataset)}_{self.split}"
        return (*build_task(queries, documents, corpus=pairs.sentences2), prefix)

    def run(self, embed_fn: EmbedFn) -> Iterator[tuple[str, float | Skipped]]:
        """Yields ``retrieval/<source>_recall@k`` for each k, then ``..._mrr@10``."""
        try:
            queries, corpus, relevant, prefix = self.load()
        except (FileNotFoundError, ModuleNotFoundError) as e:
            yield f"retrieval/{metric_key(self.dataset.removeprefix('pairs:'))}", Skipped(str(e))
            return
        if not queries:
            yield prefix, Skipped(f"no pair with score >= {self.min_score} in {self.dataset}")
            return
        vectors, rows = embed_unique(embed_fn, queries + corpus)
        vectors = vectors[rows].astype(np.float64)
        metrics = rank_metrics(vectors[: len(queries)], vectors[len(queries) :], relevant, self.ks)
        for name, value in metrics.items():
            yield f"{prefix}_{name}", value
