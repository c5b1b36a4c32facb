"""Bitext retrieval: find each sentence's translation among all sentences of the other language.

Sources (``dataset``):

* ``stsb`` (default): STS-B ↔ STSb-TR, a machine translation of STS-B whose rows are aligned
  line by line with the English file; sentence1 pairs with sentence1 and sentence2 with
  sentence2, row by row. ``split="dev"`` (default) is the split to report; ``train`` is
  allowed, but ``parallel/en_tr_stsb_train.tsv`` is built from it, so a student distilled on
  those pairs has seen them.
* ``pairs:<path>``: a tab-separated file whose header names its two columns (e.g.
  ``parallel/en_tr_pud.tsv`` with ``en<TAB>tr``; relative paths are tried under the data
  folder too); ``split`` does not apply. The PUD sentences are also lines of ``text/en.txt``
  and ``text/tr.txt``, so a model trained on those corpora has seen each side (not the pairs).

Pairs with identical (first, second) text are kept once. Each distinct sentence is a query,
searched by cosine among the distinct sentences of the other language; a query is a hit when
its nearest sentence is any translation of it, so an English sentence that occurs with two
translations is matched by either, and duplicates never compete with themselves. Scores are
float32 and computed in chunks of queries (a 3,000 x 3,000 search takes milliseconds).

Metrics, for STS-B dev: ``bitext/tr_to_en_r@1``, ``bitext/en_to_tr_r@1`` and
``bitext/pairs`` (distinct pairs searched). Other sources put their key in front of the
direction: ``bitext/stsb_train_tr_to_en_r@1``, ``bitext/en_tr_pud_tr_to_en_r@1``; the
directions of a ``pairs:`` file are named after its header (second column to first, then
first to second).

Example::

    dict(BitextEvaluator().run(embed_fn))
    # {"bitext/tr_to_en_r@1": 0.93, "bitext/en_to_tr_r@1": 0.94, "bitext/pairs": 2957}
"""

from __future__ import annotations

import dataclasses
import os
import re
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
from embres.evaluate.common import (
    data_dir as resolve_data_dir,
)
from embres.evaluate.sts import load_pairs

DEFAULT_DATASET = "stsb"
# the STS datasets paired by the ``stsb`` source: (first language, its dataset), (second, ...)
STSB_SIDES = (("en", "stsb"), ("tr", "stsb_tr"))
CHUNK = 1024


@dataclasses.dataclass
class Bitext:
    """Translation pairs: ``first[i]`` and ``second[i]`` are one pair; names of both sides."""

    first: list[str]
    second: list[str]
    names: tuple[str, str]
    source: str

    def __len__(self) -> int:
        return len(self.first)

    def distinct(self) -> Bitext:
        """The pairs with identical (first, second) text kept once, in first-seen order."""
        pairs = list(dict.fromkeys(zip(self.first, self.second, strict=True)))
        return Bitext([a for a, _ in pairs], [b for _, b in pairs], self.names, self.source)

    def head(self, limit: int | None) -> Bitext:
        """The first ``limit`` pairs (all when ``limit`` is None)."""
        if limit is None:
            return self
        return Bitext(self.first[:limit], self.second[:limit], self.names, self.source)


def load_stsb_bitext(split: str = "dev", data_dir: str | os.PathLike | None = None) -> Bitext:
    """STS-B ↔ STSb-TR of one split, sentence1↔sentence1 and sentence2↔sentence2 per row.

    Raises:
      FileNotFoundError: naming the absent file.
      DataFormatError: the two files differ in row count or in a row's gold score (they are
        not aligned).
    """
    (lang_a, set_a), (lang_b, set_b) = STSB_SIDES
    a, b = load_pairs(set_a, split, data_dir), load_pairs(set_b, split, data_dir)
    if len(a) != len(b):
        raise DataFormatError(
            f"{a.source} has {len(a)} rows and {b.source} {len(b)}; expected aligned rows"
        )
    mismatch = np.flatnonzero(np.abs(a.scores - b.scores) > 1e-6)
    if len(mismatch):
        i = int(mismatch[0])
        raise DataFormatError(
            f"{a.source} and {b.source} are not aligned: pair {i + 1} has score "
            f"{a.scores[i]} in one and {b.scores[i]} in the other"
        )
    first = [s for row in zip(a.sentences1, a.sentences2, strict=True) for s in row]
    second = [s for row in zip(b.sentences1, b.sentences2, strict=True) for s in row]
    return Bitext(first, second, (lang_a, lang_b), f"{a.source} + {b.source}")


def read_bitext_file(path: str | os.PathLike) -> Bitext:
    """The pairs of a two-column TSV whose header names the columns (e.g. ``en<TAB>tr``).

    Raises:
      FileNotFoundError: the file is absent.
      DataFormatError: naming file and line of a header or row that is not two non-empty
        tab-separated fields.
    """
    path = require_file(Path(path), "translation pairs (a two-column TSV with a header)")
    lines = read_lines(path)
    header = lines[0][1].split("\t") if lines else []
    if len(header) != 2 or not all(h.strip() for h in header):
        raise DataFormatError(
            f"{path}:1: expected a header naming 2 tab-separated columns (e.g. 'en<TAB>tr'), "
            f"got {header}"
        )
    first, second = [], []
    for lineno, line in lines[1:]:
        fields = line.split("\t")
        if len(fields) != 2 or not (fields[0].strip() and fields[1].strip()):
            raise DataFormatError(
                f"{path}:{lineno}: expected 2 non-empty tab-separated fields "
                f"({header[0]}, {header[1]}), got {line[:80]!r}"
            )
        first.append(fields[0])
        second.append(fields[1])
    if not first:
        raise DataFormatError(f"{path}: no translation pairs")
    names = (_safe(header[0]), _safe(header[1]))
    return Bitext(first, second, names, str(path))


def nearest_hits(
    queries: np.ndarray, corpus: np.ndarray, relevant: Sequence[set[int]], chunk: int = CHUNK
) -> np.ndarray:
    """Whether each query's nearest corpus row by cosine is one of its relevant rows.

    Float32 throughout; the similarity matrix is built ``chunk`` queries at a time. Ties go to
    the lowest corpus row.
    """
    q = normalize_rows(np.asarray(queries, np.float32))
    c = normalize_rows(np.asarray(corpus, np.float32))
    nearest = np.concatenate(
        [np.argmax(q[s : s + chunk] @ c.T, axis=1) for s in range(0, len(q), chunk)]
    )
    return np.array([int(n) in rel for n, rel in zip(nearest, relevant, strict=True)])


def bitext_recall(embed_fn: EmbedFn, bitext: Bitext) -> dict[str, float]:
    """R@1 of both directions, ``"<second>_to_<first>"`` then ``"<first>_to_<second>"``.

    Each distinct sentence is embedded once and searched once among the distinct sentences of
    the other side; its relevant rows are all the sentences it is paired with.
    """
    if not len(bitext):
        raise ValueError(f"{bitext.source}: no translation pairs")
    left, right = list(dict.fromkeys(bitext.first)), list(dict.fromkeys(bitext.second))
    vectors, rows = embed_unique(embed_fn, left + right)
    a, b = vectors[rows[: len(left)]], vectors[rows[len(left) :]]
    row_a, row_b = {t: i for i, t in enumerate(left)}, {t: i for i, t in enumerate(right)}
    partners_a: list[set[int]] = [set() for _ in left]
    partners_b: list[set[int]] = [set() for _ in right]
    for x, y in zip(bitext.first, bitext.second, strict=True):
        partners_a[row_a[x]].add(row_b[y])
        partners_b[row_b[y]].add(row_a[x])
    name_a, name_b = bitext.names
    return {
        f"{name_b}_to_{name_a}": float(nearest_hits(b, a, partners_b).mean()),
        f"{name_a}_to_{name_b}": float(nearest_hits(a, b, partners_a).mean()),
    }


class BitextEvaluator:
    """R@1 of translation retrieval in both directions (see the module docstring).

    Args:
      dataset: ``stsb`` (STS-B ↔ STSb-TR) or ``pairs:<path>`` (a two-column TSV with a header).
      split: the STS split of ``stsb``: ``dev`` (default; the one to report) or ``train``.
      data_dir: default ``$EMBRES_DATA_DIR``.
      limit: search only the first ``limit`` distinct pairs (quick checks).
    """

    def __init__(
        self,
        dataset: str = DEFAULT_DATASET,
        split: str = "dev",
        data_dir: str | os.PathLike | None = None,
        limit: int | None = None,
    ):
        if dataset != DEFAULT_DATASET and not dataset.startswith("pairs:"):
            raise ValueError(
                f"unknown bitext dataset {dataset!r}; expected {DEFAULT_DATASET!r} "
                "(STS-B <-> STSb-TR) or 'pairs:<path to a two-column TSV with a header>'"
            )
        if limit is not None and limit < 1:
            raise ValueError(f"limit={limit!r}: expected a positive number of pairs")
        self.dataset, self.split, self.data_dir, self.limit = dataset, split, data_dir, limit

    def prefix(self) -> str:
        """The metric prefix: ``bitext/`` for STS-B dev, else ``bitext/<source key>_``."""
        if self.dataset == DEFAULT_DATASET:
            return "bitext/" if self.split == "dev" else f"bitext/{self.dataset}_{self.split}_"
        return f"bitext/{_safe(Path(self.dataset.removeprefix('pairs:')).stem)}_"

    def pair_file(self) -> Path:
        """The ``pairs:`` file: the path as given, else relative to the data folder."""
        path = Path(self.dataset.removeprefix("pairs:")).expanduser()
        if path.is_file() or path.is_absolute():
            return path
        try:
            under = resolve_data_dir(self.data_dir) / path
        except FileNotFoundError:
            return path
        return under if under.is_file() else path

    def load(self) -> Bitext:
        """The distinct pairs searched (after ``limit``)."""
        if self.dataset == DEFAULT_DATASET:
            bitext = load_stsb_bitext(self.split, self.data_dir)
        else:
            bitext = read_bitext_file(self.pair_file())
        return bitext.distinct().head(self.limit)

    def run(self, embed_fn: EmbedFn) -> Iterator[tuple[str, float | int | Skipped]]:
        """Yields ``<prefix><b>_to_<a>_r@1``, ``<prefix><a>_to_<b>_r@1`` and ``<prefix>pairs``."""
        prefix = self.prefix()
        try:
            bitext = self.load()
        except FileNotFoundError as e:
            key = f"{self.dataset}_{self.split}" if self.dataset == DEFAULT_DATASET else None
            yield (f"bitext/{key}" if key else prefix.rstrip("_")), Skipped(str(e))
            return
        for direction, value in bitext_recall(embed_fn, bitext).items():
            yield f"{prefix}{direction}_r@1", value
        yield f"{prefix}pairs", len(bitext)


def _safe(name: str) -> str:
    """A metric-name-safe key: lower case, runs of other characters as ``_``."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_") or "x"
