"""Semantic textual similarity: Spearman (x100) of cosine similarity against gold scores.

Datasets (files under ``data_dir``, default ``$EMBRES_DATA_DIR``):

* ``stsb``: ``stsb/sts-{train,dev}.csv``, STS-B format (below), no header.
* ``stsb_tr``: ``stsb_tr/stsb_tr_{train,dev}.tsv``, STS-B format with a header row.
* ``sick``: ``sick/SICK_{train,trial}.txt``, SICK's 12-column format with a header; the split
  ``dev`` reads ``trial``.
* ``tfds:<name>/<config>[:<split>]``, e.g. ``tfds:glue/stsb:validation``, through
  tensorflow-datasets (``pip install embres[tfds]``); fields ``sentence1``, ``sentence2``,
  ``label``.
* a path to any STS-B-format file.

STS-B format: tab-separated ``genre, filename, year, sid, score, sentence1, sentence2``,
optionally more fields; a header row may be present (detected by a non-numeric score).
Sentences contain ``"``, so no CSV quoting is applied.

Example::

    from embres.evaluate.sts import evaluate_sts
    evaluate_sts(lambda texts: model.encode(texts), "stsb", "dev")   # 86.72 for MiniLM-L6
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from scipy import stats

from embres.evaluate.common import (
    DataFormatError,
    EmbedFn,
    Skipped,
    cosine_pairs,
    parse_float,
    read_lines,
    require_file,
    split_fields,
)
from embres.evaluate.common import (
    data_dir as resolve_data_dir,
)

# dataset -> (format, {split: relative path})
DATASETS: dict[str, tuple[str, dict[str, str]]] = {
    "stsb": ("stsb", {"train": "stsb/sts-train.csv", "dev": "stsb/sts-dev.csv"}),
    "stsb_tr": (
        "stsb",
        {"train": "stsb_tr/stsb_tr_train.tsv", "dev": "stsb_tr/stsb_tr_dev.tsv"},
    ),
    "sick": (
        "sick",
        {
            "train": "sick/SICK_train.txt",
            "dev": "sick/SICK_trial.txt",
            "trial": "sick/SICK_trial.txt",
        },
    ),
}
DEFAULT_DATASETS = ("stsb", "stsb_tr", "sick")
STSB_FIELDS = "genre, filename, year, sid, score, sentence1, sentence2"
SICK_COLUMNS = ("sentence_A", "sentence_B", "relatedness_score")
TFDS_SPLITS = {"dev": "validation"}


@dataclasses.dataclass
class Pairs:
    """Sentence pairs with gold similarity scores, and where they came from."""

    sentences1: list[str]
    sentences2: list[str]
    scores: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.scores)

    def head(self, limit: int | None) -> Pairs:
        """The first ``limit`` pairs (all when ``limit`` is None)."""
        if limit is None:
            return self
        return Pairs(
            self.sentences1[:limit], self.sentences2[:limit], self.scores[:limit], self.source
        )


def read_stsb_file(path: str | os.PathLike) -> Pairs:
    """Reads an STS-B-format file (header row optional).

    Raises:
      FileNotFoundError: the file is absent.
      DataFormatError: a line has fewer than 7 fields or a non-numeric score (file:line named).
    """
    path = require_file(Path(path), "STS-B-format pairs")
    s1, s2, scores = [], [], []
    for lineno, line in read_lines(path):
        fields = split_fields(path, lineno, line, 7, STSB_FIELDS)
        if lineno == 1 and not _is_number(fields[4]):
            continue  # header row
        scores.append(parse_float(path, lineno, fields[4], "score"))
        s1.append(fields[5])
        s2.append(fields[6])
    if not scores:
        raise DataFormatError(f"{path}: no sentence pairs found")
    return Pairs(s1, s2, np.asarray(scores), str(path))


def read_sick_file(path: str | os.PathLike) -> Pairs:
    """Reads a SICK file (header with sentence_A, sentence_B, relatedness_score columns)."""
    path = require_file(Path(path), "SICK pairs")
    lines = read_lines(path)
    if not lines:
        raise DataFormatError(f"{path}: empty file; expected a SICK header row")
    header = lines[0][1].split("\t")
    missing = [c for c in SICK_COLUMNS if c not in header]
    if missing:
        raise DataFormatError(f"{path}:1: header lacks columns {missing}; got {header}")
    cols = [header.index(c) for c in SICK_COLUMNS]
    s1, s2, scores = [], [], []
    for lineno, line in lines[1:]:
        fields = split_fields(path, lineno, line, len(header), ", ".join(header))
        s1.append(fields[cols[0]])
        s2.append(fields[cols[1]])
        scores.append(parse_float(path, lineno, fields[cols[2]], "relatedness_score"))
    if not scores:
        raise DataFormatError(f"{path}: no sentence pairs found")
    return Pairs(s1, s2, np.asarray(scores), str(path))


def load_tfds_pairs(spec: str, split: str = "dev") -> Pairs:
    """Loads ``tfds:<name>/<config>[:<split>]`` (e.g. ``tfds:glue/stsb:validation``).

    Without a split in ``spec``, ``split`` is used (``dev`` reads ``validation``).

    Raises:
      ModuleNotFoundError: tensorflow-datasets is not importable (install ``embres[tfds]``).
      DataFormatError: the split has no gold scores (GLUE test splits carry -1).
    """
    from embres.data.tfds import as_text, iter_tfds_rows, parse_tfds_spec

    parsed = parse_tfds_spec(spec)
    tfds_split = parsed.split or TFDS_SPLITS.get(split, split)
    s1, s2, scores = [], [], []
    for example in iter_tfds_rows(spec, default_split=tfds_split):
        s1.append(as_text(example["sentence1"]))
        s2.append(as_text(example["sentence2"]))
        scores.append(float(example["label"]))
    if not scores or min(scores) < 0:  # glue test splits carry label -1
        raise DataFormatError(f"{spec}: split {tfds_split!r} has no gold scores")
    return Pairs(s1, s2, np.asarray(scores), f"tfds:{parsed.load_name}:{tfds_split}")


def load_pairs(
    dataset: str = "stsb", split: str = "dev", data_dir: str | os.PathLike | None = None
) -> Pairs:
    """Loads gold pairs of a named dataset, a ``tfds:`` name or an STS-B-format file path.

    Raises:
      FileNotFoundError: naming the expected file when it is absent.
      ValueError: for an unknown dataset or split.
    """
    if dataset.startswith("tfds:"):
        return load_tfds_pairs(dataset, split)
    if dataset not in DATASETS:
        if Path(dataset).is_file():
            return read_stsb_file(dataset)
        raise ValueError(
            f"unknown STS dataset {dataset!r}; expected one of {sorted(DATASETS)}, "
            "'tfds:<name>/<config>[:<split>]' or a path to an STS-B-format file"
        )
    fmt, files = DATASETS[dataset]
    if split not in files:
        raise ValueError(
            f"dataset {dataset!r} has no split {split!r}; expected one of {sorted(files)}"
        )
    path = resolve_data_dir(data_dir) / files[split]
    return read_sick_file(path) if fmt == "sick" else read_stsb_file(path)


def spearman_x100(predicted: np.ndarray, gold: np.ndarray) -> float:
    """Spearman rank correlation x100 (0.0 when either side is constant)."""
    predicted, gold = np.asarray(predicted, np.float64), np.asarray(gold, np.float64)
    if len(predicted) != len(gold) or len(gold) < 2:
        raise ValueError(f"need >= 2 equal-length score lists, got {len(predicted)}, {len(gold)}")
    if np.ptp(predicted) == 0 or np.ptp(gold) == 0:
        return 0.0
    return float(stats.spearmanr(predicted, gold).statistic * 100)


def score_pairs(embed_fn: EmbedFn, pairs: Pairs) -> float:
    """Spearman x100 of the cosine similarity of each pair against its gold score."""
    return spearman_x100(cosine_pairs(embed_fn, pairs.sentences1, pairs.sentences2), pairs.scores)


def evaluate_sts(
    embed_fn: EmbedFn,
    dataset: str = "stsb",
    split: str = "dev",
    data_dir: str | os.PathLike | None = None,
) -> float:
    """STS Spearman x100 of ``embed_fn`` on one dataset split.

    Args:
      embed_fn: maps a list of strings to an [n, d] array.
      dataset: ``stsb``, ``stsb_tr``, ``sick``, a ``tfds:`` name or an STS-B-format file.
      split: ``train`` or ``dev`` (``dev`` is SICK's trial split).
      data_dir: folder holding the datasets; default ``$EMBRES_DATA_DIR``.

    Raises:
      FileNotFoundError: naming the expected file when it is absent.
      DataFormatError: naming file and line of a malformed row.
    """
    return score_pairs(embed_fn, load_pairs(dataset, split, data_dir))


class STSEvaluator:
    """Spearman x100 on several STS datasets; an absent dataset yields a ``Skipped``.

    Args:
      datasets: names accepted by :func:`load_pairs`, as a sequence or one comma-separated
        string (``"stsb,sick,stsb_tr"``, as a training config gives it).
      split: split of each dataset.
      data_dir: default ``$EMBRES_DATA_DIR``.
      limit: use only the first ``limit`` pairs of each (quick checks).
    """

    def __init__(
        self,
        datasets: Sequence[str] = DEFAULT_DATASETS,
        split: str = "dev",
        data_dir: str | os.PathLike | None = None,
        limit: int | None = None,
    ):
        if isinstance(datasets, str):
            datasets = [d.strip() for d in datasets.split(",") if d.strip()]
        self.datasets = list(datasets)
        self.split, self.data_dir, self.limit = split, data_dir, limit

    def run(self, embed_fn: EmbedFn) -> Iterator[tuple[str, float | Skipped]]:
        """Yields ``("sts/<dataset>_<split>", spearman_x100)`` per dataset."""
        for dataset in self.datasets:
            name = f"sts/{metric_key(dataset)}_{self.split}"
            try:
                pairs = load_pairs(dataset, self.split, self.data_dir)
            except (FileNotFoundError, ModuleNotFoundError) as e:
                yield name, Skipped(str(e))
                continue
            yield name, score_pairs(embed_fn, pairs.head(self.limit))


def metric_key(dataset: str) -> str:
    """A short metric-name-safe key for a dataset spec (``tfds:glue/stsb`` -> ``glue_stsb``)."""
    if dataset in DATASETS:
        return dataset
    if dataset.startswith("tfds:"):
        return dataset.removeprefix("tfds:").split(":")[0].replace("/", "_")
    return Path(dataset).stem


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
