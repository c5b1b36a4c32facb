"""``vocab``: corpus-free sequences of tokens sampled by frequency (Zipf by id rank).

Without counts, a token's probability is the tokenizer's Zipf prior,
:func:`embres.tokenize.zipf_prior` (``1 / (rank + 10)`` over the ids that are not special or
placeholders; WordPiece and BPE vocabularies roughly list frequent pieces first). Batch ``n``
is drawn from ``numpy.random.default_rng([seed, 0, n, process_index])``, so the position is
just ``n`` and any batch can be regenerated.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from embres import tokenize
from embres.data.batching import pad_batch


class VocabSource:
    """Random token sequences wrapped in the tokenizer's special tokens."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        vocab_size: int,
        pad_id: int,
        batch_size: int,
        max_length: int,
        min_length: int = 4,
        seed: int = 0,
        process_index: int = 0,
    ):
        self.tokenizer = tokenizer
        self.vocab_size, self.pad_id = vocab_size, pad_id
        self.batch_size, self.max_length = batch_size, max_length
        self.prefix, self.suffix = tokenize.special_template(tokenizer)
        specials = len(self.prefix) + len(self.suffix)
        room = max_length - specials
        if room < 1:
            raise ValueError(
                f"config.data.max_length={max_length} leaves no room for a token beside the "
                f"model's {specials} special tokens; expected max_length >= {specials + 1}"
            )
        if not 1 <= min_length <= room:
            raise ValueError(
                f"config.data.min_length={min_length}; expected 1 <= min_length <= {room} "
                f"(config.data.max_length={max_length} minus {specials} special tokens)"
            )
        self.min_length, self.room = min_length, room
        self.seed, self.process_index = seed, process_index
        self.probs = tokenize.zipf_prior(tokenize.usable_token_mask(tokenizer, vocab_size))
        self.index = 0

    def sample(self, index: int, rows: int, stream: int = 0) -> list[list[int]]:
        """Token-id rows of batch ``index`` of ``stream`` (0: training, 1: held out)."""
        rng = np.random.default_rng([self.seed, stream, index, self.process_index])
        lengths = rng.integers(self.min_length, self.room + 1, size=rows)
        tokens = rng.choice(self.vocab_size, size=int(lengths.sum()), p=self.probs)
        out, start = [], 0
        for n in lengths:
            out.append(self.prefix + tokens[start : start + n].tolist() + self.suffix)
            start += n
        return out

    def next_batch(self) -> dict[str, np.ndarray]:
        """The next batch; advances the position by one."""
        rows = self.sample(self.index, self.batch_size)
        self.index += 1
        ids, mask = pad_batch(rows, self.max_length, self.pad_id, self.batch_size)
        return {"ids": ids, "mask": mask}

    def get_state(self) -> dict[str, int]:
        """Position: the index of the next batch."""
        return {"index": self.index}

    def set_state(self, state: dict[str, int]) -> None:
        """Continues from a position returned by ``get_state``."""
        self.index = int(state["index"])

    def token_weights(self) -> np.ndarray:
        """The sampling probabilities (Zipf by rank), as frequency weights [V]."""
        return self.probs * self.vocab_size

    def heldout_texts(self, n: int) -> list[str]:
        """``n`` decoded sequences from a stream training never draws."""
        rows = self.sample(0, n, stream=1)
        return [self.tokenizer.decode(row, skip_special_tokens=True) for row in rows]
