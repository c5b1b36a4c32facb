"""Linear probe: logistic regression on frozen embeddings, accuracy and macro-F1 on dev.

A dataset is a folder holding ``train.tsv`` and ``dev.tsv``, each tab-separated with a header
row naming ``label`` and ``text`` columns (e.g. ``$EMBRES_DATA_DIR/tr_movie_sentiment``).
The classifier is multinomial logistic regression with L2, fitted by L-BFGS from zeros on
standardised features, so it is deterministic (the seed only draws a ``max_train`` subset).

Example::

    ProbeEvaluator("tr_movie_sentiment").run(embed_fn)
    # -> ("probe/tr_movie_sentiment_accuracy", 0.71), ("probe/..._macro_f1", 0.71)
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from scipy import optimize, special

from embres.evaluate.common import (
    DataFormatError,
    EmbedFn,
    Skipped,
    embed_unique,
    read_lines,
    require_file,
)
from embres.evaluate.common import (
    data_dir as resolve_data_dir,
)

DEFAULT_DATASET = "tr_movie_sentiment"


def read_labelled(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(labels, texts) of a ``label<TAB>text`` file with a header row.

    Raises:
      FileNotFoundError: the file is absent.
      DataFormatError: naming file and line of a header or row that does not fit.
    """
    path = require_file(Path(path), "labelled texts (label<TAB>text with a header)")
    lines = read_lines(path)
    header = lines[0][1].split("\t") if lines else []
    if "label" not in header or "text" not in header:
        raise DataFormatError(f"{path}:1: expected a header with 'label' and 'text', got {header}")
    label_col, text_col = header.index("label"), header.index("text")
    labels, texts = [], []
    for lineno, line in lines[1:]:
        fields = line.split("\t", len(header) - 1)
        if len(fields) != len(header) or not fields[label_col].strip():
            raise DataFormatError(
                f"{path}:{lineno}: expected {len(header)} tab-separated fields "
                f"({', '.join(header)}) with a label, got {line[:80]!r}"
            )
        labels.append(fields[label_col].strip())
        texts.append(fields[text_col])
    if not labels:
        raise DataFormatError(f"{path}: no labelled rows")
    return labels, texts


def fit_logistic(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    l2: float = 1e-3,
    max_iter: int = 500,
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by L-BFGS; returns (weights [d, c], bias [c]).

    The loss is mean cross-entropy plus ``l2 / 2 * |W|^2`` (bias not penalised).
    """
    n, d = features.shape
    onehot = np.eye(num_classes)[labels]

    def loss_and_grad(theta):
        w, b = theta[: d * num_classes].reshape(d, num_classes), theta[d * num_classes :]
        logits = features @ w + b
        log_p = logits - special.logsumexp(logits, axis=1, keepdims=True)
        loss = -np.sum(onehot * log_p) / n + 0.5 * l2 * np.sum(w * w)
        delta = (np.exp(log_p) - onehot) / n
        grad_w = features.T @ delta + l2 * w
        return loss, np.concatenate([grad_w.ravel(), delta.sum(axis=0)])

    theta0 = np.zeros(d * num_classes + num_classes)
    result = optimize.minimize(
        loss_and_grad, theta0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter}
    )
    theta = result.x
    return theta[: d * num_classes].reshape(d, num_classes), theta[d * num_classes :]


def macro_f1(predicted: np.ndarray, gold: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1 (a class never predicted nor present counts as 0)."""
    scores = []
    for c in range(num_classes):
        tp = np.sum((predicted == c) & (gold == c))
        fp = np.sum((predicted == c) & (gold != c))
        fn = np.sum((predicted != c) & (gold == c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


class ProbeEvaluator:
    """Logistic-regression probe on frozen embeddings.

    Args:
      dataset: a folder name under ``data_dir`` or a path to a folder with train/dev files.
      data_dir: default ``$EMBRES_DATA_DIR``.
      train_split, eval_split: file stems inside the folder.
      l2: L2 strength on the weights.
      max_train: fit on at most this many training rows (drawn with ``seed``).
      limit: evaluate on only the first ``limit`` dev rows.
      seed: seed of the ``max_train`` draw.
    """

    def __init__(
        self,
        dataset: str = DEFAULT_DATASET,
        data_dir: str | os.PathLike | None = None,
        train_split: str = "train",
        eval_split: str = "dev",
        l2: float = 1e-3,
        max_train: int | None = None,
        limit: int | None = None,
        seed: int = 0,
    ):
        self.dataset, self.data_dir = dataset, data_dir
        self.train_split, self.eval_split = train_split, eval_split
        self.l2, self.max_train, self.limit, self.seed = l2, max_train, limit, seed

    def folder(self) -> Path:
        """The dataset folder (a path as given, else under the data folder)."""
        path = Path(self.dataset).expanduser()
        return path if path.is_dir() else resolve_data_dir(self.data_dir) / self.dataset

    def run(self, embed_fn: EmbedFn) -> Iterator[tuple[str, float | Skipped]]:
        """Yields ``probe/<dataset>_accuracy`` and ``probe/<dataset>_macro_f1`` (in [0, 1])."""
        prefix = f"probe/{Path(self.dataset).name}"
        try:
            folder = self.folder()
            train = read_labelled(folder / f"{self.train_split}.tsv")
            dev = read_labelled(folder / f"{self.eval_split}.tsv")
        except FileNotFoundError as e:
            yield prefix, Skipped(str(e))
            return
        accuracy, f1 = self.score(embed_fn, train, dev)
        yield f"{prefix}_accuracy", accuracy
        yield f"{prefix}_macro_f1", f1

    def score(
        self,
        embed_fn: EmbedFn,
        train: tuple[Sequence[str], Sequence[str]],
        dev: tuple[Sequence[str], Sequence[str]],
    ) -> tuple[float, float]:
        """(accuracy, macro-F1) on ``dev`` of a probe fit on ``train``; each is (labels, texts)."""
        train_labels, train_texts = list(train[0]), list(train[1])
        dev_labels, dev_texts = list(dev[0])[: self.limit], list(dev[1])[: self.limit]
        if self.max_train is not None and len(train_labels) > self.max_train:
            keep = np.sort(np.random.default_rng(self.seed).permutation(len(train_labels)))
            keep = keep[: self.max_train]
            train_labels = [train_labels[i] for i in keep]
            train_texts = [train_texts[i] for i in keep]
        classes = sorted(set(train_labels))
        unseen = sorted(set(dev_labels) - set(classes))
        if unseen:
            raise ValueError(f"dev labels {unseen} never occur in training labels {classes}")
        class_id = {c: i for i, c in enumerate(classes)}
        vectors, rows = embed_unique(embed_fn, train_texts + dev_texts)
        features = vectors[rows].astype(np.float64)
        x_train, x_dev = features[: len(train_texts)], features[len(train_texts) :]
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        x_train, x_dev = (x_train - mean) / std, (x_dev - mean) / std
        y_train = np.array([class_id[c] for c in train_labels])
        y_dev = np.array([class_id[c] for c in dev_labels])
        w, b = fit_logistic(x_train, y_train, len(classes), self.l2)
        predicted = np.argmax(x_dev @ w + b, axis=1)
        return float(np.mean(predicted == y_dev)), macro_f1(predicted, y_dev, len(classes))
