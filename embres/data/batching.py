"""What every data source shares: the source protocol and padding rows into a fixed batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class Source(Protocol):
    """What the trainer needs from a data source."""

    def next_batch(self) -> dict[str, np.ndarray]: ...
    def get_state(self) -> dict[str, int]: ...
    def set_state(self, state: dict[str, int]) -> None: ...
    def token_weights(self) -> np.ndarray: ...
    def heldout_texts(self, n: int) -> list[str]: ...


def pad_batch(
    rows: Sequence[Sequence[int]], max_length: int, pad_id: int, rows_wanted: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pads token-id rows to ``[rows_wanted, max_length]`` (ids, mask), int32.

    Rows longer than ``max_length`` are cut; missing rows are all padding (mask 0).
    """
    ids = np.full((rows_wanted, max_length), pad_id, np.int32)
    mask = np.zeros((rows_wanted, max_length), np.int32)
    for r, row in enumerate(rows):
        n = min(len(row), max_length)
        ids[r, :n] = row[:n]
        mask[r, :n] = 1
    return ids, mask


class FilePosition:
    """``get_state``/``set_state`` for a source streaming a file: ``(epoch, byte offset,
    line number)``, so a restore seeks straight to where the batches left off. The source
    keeps ``self._file`` (binary), ``self.epoch`` and ``self.line``."""

    def get_state(self) -> dict[str, int]:
        """Position as plain ints (JSON-serialisable)."""
        return {"epoch": self.epoch, "offset": self._file.tell(), "line": self.line}

    def set_state(self, state: dict[str, int]) -> None:
        """Continues from a position returned by ``get_state``."""
        self.epoch, self.line = int(state["epoch"]), int(state["line"])
        self._file.seek(int(state["offset"]))
