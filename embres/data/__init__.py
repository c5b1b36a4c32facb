"""Data sources by name: ``"text:PATH"`` (one sentence per line, streamed) and ``"vocab"``.

A source yields host-local numpy batches ``{"ids": int32 [b, L], "mask": int32 [b, L]}``
with ``b = batch_size // process_count`` and a fixed ``L = max_length`` (one compiled shape),
reports its position with ``get_state()`` and resumes from it with ``set_state(state)``, so
a resumed run sees exactly the batches an uninterrupted one would have. Each process reads
its own slice (lines ``i`` with ``i % process_count == process_index``; its own random
stream for ``vocab``).

Also offered: ``token_weights()`` ([vocab] token frequencies, for frequency-aware inits)
and ``heldout_texts(n)`` (text never trained on, for fidelity checks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

SOURCES = ("text:PATH", "tfds:NAME[/CONFIG][:SPLIT]", "vocab")


class Source(Protocol):
    """What the trainer needs from a data source."""

    def next_batch(self) -> dict[str, np.ndarray]: ...
    def get_state(self) -> dict[str, int]: ...
    def set_state(self, state: dict[str, int]) -> None: ...
    def token_weights(self) -> np.ndarray: ...
    def heldout_texts(self, n: int) -> list[str]: ...


def check_spec(spec: str) -> None:
    """Validates ``config.data.source`` without reading data.

    Raises:
      ValueError: for an unknown kind, naming the accepted forms.
      FileNotFoundError: for a ``text:`` path that does not exist.
    """
    if spec == "vocab":
        return
    if isinstance(spec, str) and spec.startswith("tfds:"):
        from embres.evaluate.tfds_text import parse_tfds_spec

        parse_tfds_spec(spec)  # raises naming the expected form
        return
    if isinstance(spec, str) and spec.startswith("text:"):
        path = Path(spec[len("text:") :]).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"config.data.source={spec!r}: no such file {str(path)!r} "
                f"(expected a text file with one sentence per line)"
            )
        return
    raise ValueError(
        f"config.data.source={spec!r} is not a known source; expected one of {SOURCES}"
    )


def special_template(tokenizer: Any) -> tuple[list[int], list[int]]:
    """(prefix, suffix) special-token ids the tokenizer wraps every text in."""
    ids = list(tokenizer("", add_special_tokens=True)["input_ids"])
    if not ids:
        return [], []
    if len(ids) == 1:
        return ids, []
    return ids[:1], ids[1:]


def pad_batch(rows: list, max_length: int, pad_id: int, rows_wanted: int):
    """Pads token-id rows to ``[rows_wanted, max_length]`` (ids, mask), int32."""
    ids = np.full((rows_wanted, max_length), pad_id, np.int32)
    mask = np.zeros((rows_wanted, max_length), np.int32)
    for r, row in enumerate(rows):
        n = min(len(row), max_length)
        ids[r, :n] = row[:n]
        mask[r, :n] = 1
    return ids, mask


def make_source(
    cfg: Any,
    tokenizer: Any,
    *,
    vocab_size: int,
    pad_id: int,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Source:
    """Builds the source named by ``cfg.source`` (the ``config.data`` section).

    Args:
      cfg: ``config.data`` with ``source``, ``max_length`` and the source's own fields.
      tokenizer: the teacher's Hugging Face tokenizer.
      vocab_size: rows of the teacher's table.
      pad_id: id used for padding.
      batch_size: the global batch; each process yields ``batch_size // process_count`` rows.
      seed: seeds sampling (``vocab``) and nothing else.
      process_index: this process (``jax.process_index()``).
      process_count: processes in the run (``jax.process_count()``).
    """
    check_spec(cfg.source)
    if batch_size % process_count:
        raise ValueError(
            f"config.batch_size={batch_size} must be divisible by the process count {process_count}"
        )
    local = batch_size // process_count
    if cfg.source == "vocab":
        from embres.data.vocab import VocabSource

        return VocabSource(
            tokenizer,
            vocab_size=vocab_size,
            pad_id=pad_id,
            batch_size=local,
            max_length=cfg.max_length,
            min_length=cfg.min_length,
            seed=seed,
            process_index=process_index,
        )
    from embres.data.text import TextSource

    path = tfds_text_file(cfg.source) if cfg.source.startswith("tfds:") else cfg.source[5:]
    return TextSource(
        path,
        tokenizer,
        vocab_size=vocab_size,
        pad_id=pad_id,
        batch_size=local,
        max_length=cfg.max_length,
        heldout=cfg.heldout,
        count_lines=cfg.count_lines,
        process_index=process_index,
        process_count=process_count,
    )


def tfds_text_file(spec: str, cache_root: str | None = None) -> str:
    """Writes a TFDS split's texts once to a text file (one per line) and returns its path.

    Training then streams it like any ``text:`` corpus, with resumable positions. The file
    lives under ``$EMBRES_CACHE`` (default ``~/.cache/embres``) and appears only when complete.
    """
    import os
    import re

    from embres.evaluate.tfds_text import iter_tfds_texts

    root = Path(cache_root or os.environ.get("EMBRES_CACHE", "~/.cache/embres")).expanduser()
    path = root / "tfds" / (re.sub(r"[^A-Za-z0-9._-]+", "_", spec) + ".txt")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        with open(partial, "w", encoding="utf-8") as f:
            for text in iter_tfds_texts(spec):
                line = " ".join(text.split())
                if line:
                    f.write(line + "\n")
        partial.replace(path)
    return str(path)
