"""Pieces shared by the evaluators: data folder, strict TSV reading, skips, non-finite scores,
cosine, embedding."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

EmbedFn = Callable[[list[str]], np.ndarray]
DATA_ENV = "EMBRES_DATA_DIR"


class DataFormatError(ValueError):
    """A data file whose content does not match its format; the message names file and line."""


class NonFiniteScoreError(FloatingPointError):
    """A task gave a score that is NaN or Inf: no measurement; the message says which and why."""


def is_non_finite(value: object) -> bool:
    """Whether ``value`` is a number (not a bool) that is NaN or infinite."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return False
    return not np.isfinite(float(value))


@dataclasses.dataclass(frozen=True)
class Skipped:
    """The value an evaluator yields for a metric group it could not compute (e.g. no data)."""

    reason: str

    def __str__(self) -> str:
        return f"skipped: {self.reason}"


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The data folder: ``path`` if given, else ``$EMBRES_DATA_DIR``.

    Raises:
      FileNotFoundError: when neither is set.
    """
    if path is None:
        path = os.environ.get(DATA_ENV)
        if not path:
            raise FileNotFoundError(
                f"no data folder: pass data_dir or set ${DATA_ENV} to a folder holding "
                "stsb/, stsb_tr/, sick/ (e.g. ../shared/data)"
            )
    return Path(path).expanduser()


def require_file(path: Path, what: str) -> Path:
    """Returns ``path`` or raises FileNotFoundError naming it and what it should hold."""
    if not path.is_file():
        raise FileNotFoundError(f"{what}: expected file {path} does not exist")
    return path


def read_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, text) of a UTF-8 file, split on LF only.

    ``str.splitlines`` would also split on U+2028, U+0085 and other separators that occur
    inside sentences (mojibake in STS-B), so only ``\\n`` ends a line; a trailing ``\\r`` is
    dropped. A final newline is optional.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not valid UTF-8 ({e})") from e
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [(i + 1, line.removesuffix("\r")) for i, line in enumerate(lines)]


def split_fields(path: Path, lineno: int, line: str, min_fields: int, expected: str) -> list[str]:
    """Splits one tab-separated line; raises DataFormatError naming file and line when short."""
    fields = line.split("\t")
    if len(fields) < min_fields:
        raise DataFormatError(
            f"{path}:{lineno}: expected at least {min_fields} tab-separated fields ({expected}), "
            f"got {len(fields)}: {line[:80]!r}"
        )
    return fields


def parse_float(path: Path, lineno: int, value: str, field: str) -> float:
    """``float(value)`` or a DataFormatError naming file, line and field."""
    try:
        result = float(value)
    except ValueError:
        result = float("nan")
    if not np.isfinite(result):
        raise DataFormatError(f"{path}:{lineno}: field {field}={value!r} is not a finite number")
    return result


def embed_unique(embed_fn: EmbedFn, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Embeds each distinct text once; returns (vectors of the distinct texts, index per text)."""
    index: dict[str, int] = {}
    rows = np.array([index.setdefault(t, len(index)) for t in texts], dtype=np.int64)
    vectors = np.asarray(embed_fn(list(index)), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(index):
        raise ValueError(
            f"embed_fn returned shape {vectors.shape} for {len(index)} texts; expected [n, d]"
        )
    return vectors, rows


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Unit-length rows; all-zero rows stay zero (their cosine with anything is 0)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def cosine_pairs(embed_fn: EmbedFn, left: Sequence[str], right: Sequence[str]) -> np.ndarray:
    """Cosine similarity of each (left[i], right[i]) pair; distinct texts are embedded once."""
    vectors, rows = embed_unique(embed_fn, list(left) + list(right))
    unit = normalize_rows(vectors.astype(np.float64))
    a, b = unit[rows[: len(left)]], unit[rows[len(left) :]]
    return np.sum(a * b, axis=1)
