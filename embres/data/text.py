"""``text:PATH``: a UTF-8 file with one sentence per line, streamed and cycled over epochs.

The first ``heldout`` non-empty lines are never trained on (they serve fidelity checks).
The position is ``(epoch, byte offset, line number)``: restoring seeks straight there.

Every corpus file (``text:``, ``tfds:``, ``pairs:``, a cached corpus) is checked once by
:func:`check_utf8` before it is read: a few lines that are not UTF-8 are read with U+FFFD in
place of their bad bytes and warned about; a file that is mostly not UTF-8 (binary data, or
another encoding) is refused, since training on it would give a model of noise, silently.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from embres.data.batching import FilePosition, pad_batch

# More than this share of a corpus's lines not decoding as UTF-8 refuses it (a single bad
# line never does: one stray line in a real corpus warns, whatever the corpus's size).
MAX_BAD_UTF8_SHARE = 0.01
_SCAN_BLOCK = 1 << 22  # bytes read per block by check_utf8


@dataclasses.dataclass(frozen=True)
class Utf8Scan:
    """What :func:`scan_utf8` found: lines (split on ``\\n``), bad ones, the first bad one."""

    lines: int
    bad: int
    first_bad: int | None  # 1-based line number

    @property
    def share(self) -> float:
        return self.bad / max(self.lines, 1)


def _bad_lines(block: bytes) -> list[int]:
    """0-based indices of the ``\\n``-separated lines of ``block`` that are not UTF-8."""
    bad = []
    for i, line in enumerate(block.split(b"\n")):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(i)
    return bad


def _character_start(data: bytes, index: int) -> int:
    """The start of the UTF-8 character holding byte ``index`` (continuation bytes: 10xxxxxx)."""
    back = index
    while back > max(0, index - 3) and data[back] & 0xC0 == 0x80:
        back -= 1
    return back


def scan_utf8(path: str | os.PathLike) -> Utf8Scan:
    """Counts the lines of ``path`` that do not decode as UTF-8, reading it once.

    Blocks of whole lines are decoded at once (C speed); only a block that fails is split
    into lines. A ``\\n`` byte never occurs inside a UTF-8 multi-byte character, so cutting
    at newlines never splits one.
    """
    lines = bad = 0
    first: int | None = None
    carry = b""
    with open(path, "rb") as f:
        while True:
            block = f.read(_SCAN_BLOCK)
            at_end = not block
            block = carry + block
            cut = len(block) if at_end else block.rfind(b"\n") + 1
            # A line longer than a few blocks (a file with no newline at all) is scanned in
            # pieces cut between characters, so ``carry`` never grows without bound.
            forced = cut == 0 and len(block) >= 4 * _SCAN_BLOCK and not at_end
            if forced:
                cut = _character_start(block, len(block) - 1)
            body, carry = block[:cut], block[cut:]
            if body:
                # The last piece of a body ending in "\n" is empty; at the end of the file it
                # is the unterminated last line; a forced piece continues on the next.
                ends_line = body.endswith(b"\n") or forced
                count = body.count(b"\n") + (0 if ends_line else 1)
                try:
                    body.decode("utf-8")
                except UnicodeDecodeError:
                    found = _bad_lines(body)
                    bad += len(found)
                    first = first or lines + found[0] + 1
                lines += count
            if at_end:
                return Utf8Scan(lines, bad, first)


_SCANS: dict[tuple[str, int, int], Utf8Scan] = {}


def check_utf8(path: str | os.PathLike) -> Utf8Scan:
    """Warns about lines of a corpus that are not UTF-8; refuses a file that is mostly not.

    A file is scanned once per version (path, size, modification time), so the sources and
    the cache reading the same corpus pay for one pass. The threshold is
    :data:`MAX_BAD_UTF8_SHARE` (1%) of the lines, and a single bad line only ever warns.

    Raises:
      ValueError: naming the file, the bad lines' count and share, the first one and the
        threshold, when more than one line and more than the threshold are bad.

    Warns:
      UnicodeWarning: naming the file, the count and the first bad line, for fewer.
    """
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SCANS:
        _SCANS[key] = scan_utf8(path)
    scan = _SCANS[key]
    if not scan.bad:
        return scan
    where = (
        f"{path}: {scan.bad:,} of {scan.lines:,} lines ({scan.share:.1%}) are not valid UTF-8 "
        f"(the first is line {scan.first_bad})"
    )
    if scan.bad > 1 and scan.share > MAX_BAD_UTF8_SHARE:
        raise ValueError(
            f"{where}, more than the {MAX_BAD_UTF8_SHARE:.0%} a text corpus may hold: is it "
            "binary, or in another encoding? Re-encode it as UTF-8 (e.g. iconv -f latin1 "
            "-t utf-8), or remove those lines"
        )
    warnings.warn(
        f"{where}; they are read with U+FFFD in place of the bad bytes",
        UnicodeWarning,
        stacklevel=2,
    )
    return scan


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
        check_utf8(self.path)
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
