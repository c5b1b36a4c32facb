"""``pairs:PATH``: a TSV of text pairs (and optionally a score), streamed and cycled over epochs.

The first non-blank line is a header naming the columns. ``columns="a,b"`` picks the two
text columns (default: the first two whose names are not score-like, see ``SCORE_NAMES``);
``score_column`` picks the score (default: the first score-like column, if any). Fields are
split on tabs only (no CSV quoting: sentences may hold ``"``) and stripped.

Batches: ``ids``/``mask`` for column a and ``ids_b``/``mask_b`` for column b (special tokens
included, int32 [b, max_length]), plus ``score`` float32 [b] when there is a score column.
The first ``heldout`` pairs are never trained on. The position is ``(epoch, byte offset,
pair number)``; process ``p`` of ``P`` takes the pairs ``i`` with ``i % P == p``.

Scores: the score range belongs to the source, not to the loss. A source of a file with a
score column must be told the range its scores lie in (``score_range``; the registry passes
:func:`embres.data.registry.score_range`: ``config.data.score_range`` for ``pairs:``,
default :data:`DEFAULT_SCORE_RANGE` = STS's 0-5; [0, 1] for ``scored:``, whose files are
written rescaled) and yields every score **rescaled to [0, 1]**:
``(score - low) / (high - low)``. A score outside the declared range is refused, naming
``file:line`` and the range.

The whole file is checked when the source is built, before a step runs (each file version
once): a wrong field count, a score that is not a number or outside the range raises
``ValueError`` naming ``file:line``. The file's encoding is checked first
(:func:`embres.data.text.check_utf8`: a few bad lines warn, mostly bad refuses).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from embres import tokenize
from embres.data.batching import FilePosition, pad_batch
from embres.data.text import check_utf8

SCORE_NAMES = ("score", "label", "similarity", "relatedness_score")
DEFAULT_SCORE_RANGE = (0.0, 5.0)  # the STS convention, for a pairs: file of scores

Pair = tuple[str, str, float | None]


def resolve_columns(
    header: list[str], columns: str = "", score_column: str = "", where: str = "the header"
) -> tuple[int, int, int | None]:
    """(index of text a, index of text b, index of the score or None) in ``header``.

    Args:
      header: the column names.
      columns: ``"a,b"``, or ``""`` for the first two columns not named like a score.
      score_column: a column name, or ``""`` to take the first score-like one if any.
      where: names the file in errors.

    Raises:
      ValueError: naming the header and what was asked.
    """
    if columns:
        names = [c.strip() for c in str(columns).split(",")]
        if len(names) != 2 or not all(names) or names[0] == names[1]:
            raise ValueError(
                f"config.data.columns={columns!r}; expected two different comma-separated "
                f"column names of {where} {header}, e.g. {','.join(header[:2])!r}"
            )
        missing = [n for n in names if n not in header]
        if missing:
            raise ValueError(
                f"{where} has columns {header}, not {missing} (config.data.columns={columns!r})"
            )
    else:
        names = [h for h in header if h.lower() not in SCORE_NAMES][:2]
        if len(names) < 2:
            raise ValueError(
                f"{where} has columns {header}: fewer than two text columns (names in "
                f"{SCORE_NAMES} are scores); name two with config.data.columns='a,b'"
            )
    a, b = header.index(names[0]), header.index(names[1])
    if score_column:
        if score_column not in header or score_column in names:
            raise ValueError(
                f"config.data.score_column={score_column!r} is not a score column of {where} "
                f"{header} (text columns: {names})"
            )
        return a, b, header.index(score_column)
    scores = [i for i, h in enumerate(header) if h.lower() in SCORE_NAMES and h not in names]
    return a, b, (scores[0] if scores else None)


def parse_score_range(value: Any, where: str = "config.data.score_range") -> tuple[float, float]:
    """``(low, high)`` from ``"low,high"``, a pair of numbers, or ``""``/None (the default).

    Raises:
      ValueError: naming ``where``, the value and the form expected.
    """
    if value is None or value == "":
        return DEFAULT_SCORE_RANGE
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        low, high = (float(p) for p in parts)
    except (TypeError, ValueError):
        low = high = math.nan
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(
            f"{where}={value!r}; expected 'low,high' with low < high, e.g. '0,5' (the range "
            "the file's scores lie in; they are rescaled to [0, 1])"
        )
    return low, high


def line_number(path: Path, offset: int) -> int:
    """The 1-based line of ``path`` that starts at byte ``offset`` (for error messages)."""
    count, done = 1, 0
    with open(path, "rb") as f:
        while done < offset:
            block = f.read(min(1 << 20, offset - done))
            if not block:
                break
            count += block.count(b"\n")
            done += len(block)
    return count


_CHECKED: dict[tuple, tuple] = {}  # file version -> the rules it was checked against


class PairsSource(FilePosition):
    """Streams tokenised pair batches from a TSV; see the module docstring."""

    def __init__(
        self,
        path: str,
        tokenizer: Any,
        *,
        vocab_size: int,
        pad_id: int,
        batch_size: int,
        max_length: int,
        columns: str = "",
        score_column: str = "",
        heldout: int = 0,
        count_lines: int = 100_000,
        process_index: int = 0,
        process_count: int = 1,
        score_range: Any = None,
    ):
        self.path = Path(path).expanduser()
        self.score_range = None if score_range is None else parse_score_range(score_range)
        self.tokenizer = tokenizer
        self.vocab_size, self.pad_id = vocab_size, pad_id
        self.batch_size, self.max_length = batch_size, max_length
        self.heldout, self.count_lines = heldout, count_lines
        self.process_index, self.process_count = process_index, process_count
        check_utf8(self.path)
        self._file = open(self.path, "rb")  # noqa: SIM115 - the stream lives with the source
        self.header = self._read_header()
        self.a, self.b, self.score = resolve_columns(
            self.header, columns, score_column, where=f"the header of {self.path}"
        )
        self.column_names = (self.header[self.a], self.header[self.b])
        self.score_name = None if self.score is None else self.header[self.score]
        if self.score is not None and self.score_range is None:
            raise ValueError(
                f"{self.path} has a score column {self.score_name!r}: PairsSource needs the "
                "range its scores lie in (score_range=embres.data.score_range(spec, "
                "config.data)); it yields them rescaled to [0, 1]"
            )
        self._heldout: list[Pair] = []
        while len(self._heldout) < heldout:
            pair = self._read_pair(self._file)
            if pair is None:
                raise ValueError(f"{self.path} has fewer than config.data.heldout={heldout} pairs")
            self._heldout.append(pair)
        self._start = self._file.tell()
        self.epoch, self.line = 0, 0
        self._check_whole_file()

    def _check_whole_file(self) -> None:
        """Reads every training row once (fields, scores and their range), so a bad row
        fails here, before training starts, not at the step that reaches it."""
        stat = self.path.stat()
        version = (str(self.path.resolve()), stat.st_size, stat.st_mtime_ns, self._start)
        rules = (tuple(self.header), self.a, self.b, self.score, self.score_range)
        if _CHECKED.get(version) == rules:
            return
        with open(self.path, "rb") as f:
            f.seek(self._start)
            while self._read_pair(f) is not None:
                pass
        _CHECKED[version] = rules

    def _read_header(self) -> list[str]:
        for raw in self._file:
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n").lstrip("\ufeff")
            if text.strip():
                return [h.strip() for h in text.split("\t")]
        raise ValueError(f"{self.path} is empty; expected a header row of tab-separated names")

    def _read_pair(self, f) -> Pair | None:
        """The next pair from ``f`` (skipping blank lines), or None at the end of the file."""
        while True:
            offset = f.tell()
            raw = f.readline()
            if not raw:
                return None
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if text.strip():
                return self._parse(text, offset)

    def _parse(self, text: str, offset: int) -> Pair:
        fields = text.split("\t")
        if len(fields) != len(self.header):
            raise ValueError(
                f"{self.path}:{line_number(self.path, offset)}: {len(fields)} tab-separated "
                f"fields; the header {self.header} has {len(self.header)}"
            )
        score = None
        if self.score is not None:
            value = fields[self.score].strip()
            try:
                score = float(value)
            except ValueError:
                score = math.nan
            if not math.isfinite(score):
                raise ValueError(
                    f"{self.path}:{line_number(self.path, offset)}: score column "
                    f"{self.score_name!r} holds {value!r}, not a finite number"
                ) from None
            score = self._rescaled(score, value, offset)
        return fields[self.a].strip(), fields[self.b].strip(), score

    def _rescaled(self, score: float, value: str, offset: int) -> float:
        low, high = self.score_range
        if not low <= score <= high:
            raise ValueError(
                f"{self.path}:{line_number(self.path, offset)}: score column "
                f"{self.score_name!r} holds {value}, outside the declared range [{low:g}, "
                f"{high:g}] (config.data.score_range='low,high' declares the file's range)"
            )
        return (score - low) / (high - low)

    def _next_pairs(self, n: int) -> list[Pair]:
        pairs: list[Pair] = []
        while len(pairs) < n:
            pair = self._read_pair(self._file)
            if pair is None:
                if self.line == 0:
                    raise ValueError(f"{self.path} has no training pairs after the held-out ones")
                self.epoch, self.line = self.epoch + 1, 0
                self._file.seek(self._start)
                continue
            mine = self.line % self.process_count == self.process_index
            self.line += 1
            if mine:
                pairs.append(pair)
        # Step over the other processes' pairs of this round (they are still checked), so
        # every process stops at the same place and a saved position resumes anywhere.
        while self.line % self.process_count:
            if self._read_pair(self._file) is None:
                break  # end of the epoch: the next call wraps
            self.line += 1
        return pairs

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        rows = tokenize.encode(self.tokenizer, texts, self.max_length)
        return pad_batch(rows, self.max_length, self.pad_id, self.batch_size)

    def next_batch(self) -> dict[str, np.ndarray]:
        """The next batch of this process's pairs (see the module docstring for the keys)."""
        pairs = self._next_pairs(self.batch_size)
        ids, mask = self._encode([p[0] for p in pairs])
        ids_b, mask_b = self._encode([p[1] for p in pairs])
        batch = {"ids": ids, "mask": mask, "ids_b": ids_b, "mask_b": mask_b}
        if self.score is not None:
            batch["score"] = np.asarray([p[2] for p in pairs], np.float32)
        return batch

    def token_weights(self) -> np.ndarray:
        """Token counts (both columns) over the first ``count_lines`` training pairs, plus one."""
        counts = np.ones((self.vocab_size,), np.float64)
        with open(self.path, "rb") as f:
            f.seek(self._start)
            seen, chunk = 0, []
            while seen < self.count_lines and (pair := self._read_pair(f)) is not None:
                seen += 1
                chunk += [pair[0], pair[1]]
                if len(chunk) >= 4096 or seen == self.count_lines:
                    counts += self._count(chunk)
                    chunk = []
            if chunk:
                counts += self._count(chunk)
        return counts

    def _count(self, texts: list[str]) -> np.ndarray:
        rows = tokenize.encode(self.tokenizer, texts, self.max_length)
        flat = np.concatenate(rows).astype(np.int64)
        return np.bincount(flat, minlength=self.vocab_size)[: self.vocab_size]

    def heldout_texts(self, n: int) -> list[str]:
        """Column-a texts of up to ``n`` held-out pairs (never trained on)."""
        return [p[0] for p in self._heldout[:n]]

    def heldout_pairs(self, n: int) -> list[tuple[str, str]]:
        """Up to ``n`` held-out pairs as ``(text a, text b)``."""
        return [(p[0], p[1]) for p in self._heldout[:n]]
