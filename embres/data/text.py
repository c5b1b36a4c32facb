"""``text:PATH``: a UTF-8 file with one sentence per line, streamed and cycled over epochs.

The first ``heldout`` non-empty lines are never trained on (they serve fidelity checks).
The position is ``(epoch, byte offset, line number)``: restoring seeks straight there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from embres.data.batching import FilePosition, pad_batch


class TextSource(FilePosition):
    """Streams tokenised batches from a text file; see the module docstring."""

    def __init__(
        self,
        path: str,
        tokenizer: Any,
        *,
        vocab_size: int,
        pad_id: int,
        batch_size: int,
        max_length: int,
        heldout: int = 0,
        count_lines: int = 100_000,
        process_index: int = 0,
        process_count: int = 1,
    ):
        self.path = Path(path).expanduser()
        self.tokenizer = tokenizer
        self.vocab_size, self.pad_id = vocab_size, pad_id
        self.batch_size, self.max_length = batch_size, max_length
        self.heldout, self.count_lines = heldout, count_lines
        self.process_index, self.process_count = process_index, process_count
        self._file = open(self.path, "rb")  # noqa: SIM115 - the stream lives with the source
        self._heldout_texts: list[str] = []
        self._start = self._skip_heldout()
        self.epoch, self.line = 0, 0
        self._file.seek(self._start)

    def _skip_heldout(self) -> int:
        """Reads the held-out lines; returns the byte offset where training text starts."""
        self._file.seek(0)
        while len(self._heldout_texts) < self.heldout:
            raw = self._file.readline()
            if not raw:
                raise ValueError(
                    f"{self.path} has fewer than config.data.heldout={self.heldout} non-empty lines"
                )
            text = raw.decode("utf-8", errors="replace").strip()
            if text:
                self._heldout_texts.append(text)
        return self._file.tell()

    def _next_lines(self, n: int) -> list[str]:
        lines: list[str] = []
        empty_epoch = True
        while len(lines) < n:
            raw = self._file.readline()
            if not raw:
                if empty_epoch and self.line == 0:
                    raise ValueError(f"{self.path} has no training lines after the held-out ones")
                self.epoch, self.line = self.epoch + 1, 0
                self._file.seek(self._start)
                empty_epoch = True
                continue
            text = raw.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            mine = self.line % self.process_count == self.process_index
            self.line += 1
            empty_epoch = False
            if mine:
                lines.append(text)
        # Step over the other processes' lines of this round, so every process stops at the
        # same place and a saved position resumes under any process count.
        while self.line % self.process_count:
            raw = self._file.readline()
            if not raw:
                break  # end of the epoch: the next call wraps
            if raw.strip():
                self.line += 1
        return lines

    def next_batch(self) -> dict[str, np.ndarray]:
        """The next ``[batch_size, max_length]`` batch of this process's lines."""
        lines = self._next_lines(self.batch_size)
        rows = self.tokenizer(lines, truncation=True, max_length=self.max_length)["input_ids"]
        ids, mask = pad_batch(rows, self.max_length, self.pad_id, self.batch_size)
        return {"ids": ids, "mask": mask}

    def token_weights(self) -> np.ndarray:
        """Token counts over the first ``count_lines`` training lines, plus one (float64 [V])."""
        counts = np.ones((self.vocab_size,), np.float64)
        with open(self.path, "rb") as f:
            f.seek(self._start)
            chunk: list[str] = []
            for i, raw in enumerate(f):
                if i >= self.count_lines:
                    break
                text = raw.decode("utf-8", errors="replace").strip()
                if text:
                    chunk.append(text)
                if len(chunk) == 4096:
                    counts += self._count(chunk)
                    chunk = []
            if chunk:
                counts += self._count(chunk)
        return counts

    def _count(self, lines: list[str]) -> np.ndarray:
        ids = self.tokenizer(lines, truncation=True, max_length=self.max_length)["input_ids"]
        flat = np.concatenate([np.asarray(r, np.int64) for r in ids])
        return np.bincount(flat, minlength=self.vocab_size)[: self.vocab_size]

    def heldout_texts(self, n: int) -> list[str]:
        """Up to ``n`` held-out lines (never trained on)."""
        return self._heldout_texts[:n]
