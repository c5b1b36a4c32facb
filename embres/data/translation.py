"""Translation pairs with the teacher's vectors of their source side: the cross-lingual batches.

Cross-lingual distillation trains a student to put a sentence and its translation where the
teacher puts the source sentence. The data is small (tens of thousands of pairs plus a
dictionary), so everything is read, tokenised once with the student's tokenizer and kept in
memory; the teacher's vectors (``targets``) are computed once by the objective and handed in.

Batches (host-local, ``b = batch_size // process_count``)::

    ids, mask       int32 [b, L]  the target-language side (the language being learned)
    ids_b, mask_b   int32 [b, L]  the source-language side (the teacher's language)
    targets         float32 [b, d] the teacher's vector of the source side
    weight          float32 [b]    the item's weight (a dictionary entry weighs less than a
                                   sentence; padding rows weigh 0)

``L`` is the batch's longest row rounded up to a length bucket (:mod:`embres.tokenize`), so
the step compiles once per bucket, not once per batch, and short sentences do not pay for
``max_length``. Every epoch is a fresh permutation of all items (seeded by epoch), process
``p`` of ``P`` taking positions ``i`` with ``i % P == p``; the position is ``(epoch, index)``.

A mixture (``components=``, see :mod:`embres.data.mixture`) samples instead: each item of a
batch draws its component with the component's probability (seeded by the batch number),
then takes that component's next item in its own per-epoch permutation
(:class:`MixtureOrder`); the position is the batch number and each component's
``(epoch, index)``, so a resume gives exactly the batches of an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embres import tokenize
from embres.data.pairs import resolve_columns


def read_pairs(
    path: str | Path, columns: str = "", exclude: set[str] | None = None
) -> tuple[list[tuple[str, str]], list[str]]:
    """All ``(text a, text b)`` pairs of a TSV with a header line, and the two column names.

    Args:
      path: the file; its first non-blank line names the columns.
      columns: ``"a,b"`` (e.g. ``"en,tr"``), or ``""`` for the first two text columns.
      exclude: normalised sentences (:func:`embres.data.overlap.eval_exclusion`): a pair
        either side of which is one of them is left out.

    Raises:
      FileNotFoundError / ValueError: naming the file and line at fault.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pairs file {str(path)!r} does not exist")
    pairs: list[tuple[str, str]] = []
    header: list[str] | None = None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = [x.strip() for x in line.split("\t")]
            if header is None:
                header = fields
                a, b, _ = resolve_columns(header, columns, "", where=f"the header of {path}")
                continue
            if len(fields) != len(header):
                raise ValueError(
                    f"{path}:{number} has {len(fields)} tab-separated fields; expected "
                    f"{len(header)} (columns {header})"
                )
            pairs.append((fields[a], fields[b]))
    if header is None:
        raise ValueError(f"pairs file {str(path)!r} is empty; expected a header line and pairs")
    if exclude:
        from embres.data.eval_sets import normalize

        pairs = [
            p for p in pairs if normalize(p[0]) not in exclude and normalize(p[1]) not in exclude
        ]
    return pairs, [header[a], header[b]]


def drawn_items(
    components: Sequence[tuple[int, int, float]], seed: int, batch_size: int, batches: int
) -> np.ndarray:
    """The distinct item indices (sorted) the first ``batches`` batches of ``batch_size``
    draw from a mixture (:class:`MixtureOrder`, as :class:`TranslationSource` draws them):
    the only items whose teacher vectors a run of that length reads."""
    order = MixtureOrder(components, seed)
    taken = [order.take(batch_size) for _ in range(batches)]
    return np.unique(np.concatenate(taken)) if taken else np.zeros(0, np.int64)


class MixtureOrder:
    """Which items the next batches take from components sampled by probability.

    Args:
      components: ``(start, stop, probability)`` per component: its items are
        ``start..stop-1`` of the source's arrays; the probabilities sum to 1.
      seed: seeds the component draws (per batch) and the permutations (per component and
        epoch).
    """

    def __init__(self, components: Sequence[tuple[int, int, float]], seed: int):
        self.starts = np.asarray([c[0] for c in components], np.int64)
        self.sizes = np.asarray([c[1] - c[0] for c in components], np.int64)
        self.probabilities = np.asarray([c[2] for c in components], np.float64)
        if (self.sizes <= 0).any() or not np.isclose(self.probabilities.sum(), 1.0):
            raise ValueError(
                f"mixture components {list(components)}: expected non-empty item ranges and "
                "probabilities summing to 1"
            )
        self.seed = seed
        self.set_state(
            {"batch": 0, "epochs": [0] * len(self.sizes), "indices": [0] * len(self.sizes)}
        )

    def _permutation(self, component: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, component, self.epochs[component]])
        return rng.permutation(int(self.sizes[component]))

    def take(self, n: int) -> np.ndarray:
        """The item indices of the next batch of ``n`` items."""
        rng = np.random.default_rng([self.seed, len(self.sizes), self.batch])
        drawn = rng.choice(len(self.sizes), size=n, p=self.probabilities)
        out = np.empty(n, np.int64)
        for i, c in enumerate(drawn):
            if self.indices[c] >= self.sizes[c]:  # this component's epoch ends
                self.epochs[c], self.indices[c] = self.epochs[c] + 1, 0
                self._orders[c] = self._permutation(c)
            out[i] = self.starts[c] + self._orders[c][self.indices[c]]
            self.indices[c] += 1
        self.batch += 1
        return out

    def get_state(self) -> dict[str, Any]:
        """Position as plain ints: batches drawn, each component's epoch and index."""
        return {"batch": self.batch, "epochs": list(self.epochs), "indices": list(self.indices)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues from a position returned by :meth:`get_state`."""
        if set(state) != {"batch", "epochs", "indices"} or len(state["epochs"]) != len(self.sizes):
            raise ValueError(
                f"a mixture of {len(self.sizes)} components cannot resume from data position "
                f"{state}; it was saved by another source or mixture (start a new --workdir)"
            )
        self.batch = int(state["batch"])
        self.epochs = [int(e) for e in state["epochs"]]
        self.indices = [int(i) for i in state["indices"]]
        self._orders = [self._permutation(c) for c in range(len(self.sizes))]


class TranslationSource:
    """In-memory cross-lingual batches; see the module docstring.

    Args:
      tokenizer: the student's tokenizer (both sides go through it).
      target_texts: target-language texts (the side being learned), one per item.
      source_texts: source-language texts, one per item.
      targets: [n, d] the teacher's vectors of ``source_texts``.
      weights: [n] item weights.
      batch_size: rows per batch over all processes.
      max_length: tokens kept per text.
      pad_id: the id padding rows hold.
      add_special_tokens: wrap texts in the tokenizer's template (a transformer student
        needs it; a static student pools the text's own tokens only).
      heldout: held-out ``(source, target)`` pairs, never trained on.
      seed: shuffling seed.
      components: ``(start, stop, probability)`` ranges of a mixture
        (:meth:`embres.data.mixture.Mixture.sampling`), or None: every item once per epoch.
    """

    def __init__(
        self,
        tokenizer: Any,
        target_texts: Sequence[str],
        source_texts: Sequence[str],
        targets: np.ndarray | None,
        weights: np.ndarray,
        *,
        batch_size: int,
        max_length: int,
        pad_id: int,
        add_special_tokens: bool,
        heldout: Sequence[tuple[str, str]] = (),
        seed: int = 0,
        process_index: int = 0,
        process_count: int = 1,
        components: Sequence[tuple[int, int, float]] | None = None,
    ):
        n = len(target_texts)
        n_targets = n if targets is None else len(targets)
        if not (len(source_texts) == n == n_targets == len(weights)) or n == 0:
            raise ValueError(
                f"TranslationSource needs as many source texts ({len(source_texts)}), targets "
                f"({len(targets)}) and weights ({len(weights)}) as target texts ({n}), and > 0"
            )
        if batch_size % process_count:
            raise ValueError(
                f"batch_size={batch_size} is not divisible by {process_count} processes"
            )
        self.targets = None if targets is None else np.asarray(targets, np.float32)
        self.weights = np.asarray(weights, np.float32)
        self.batch_size, self.max_length, self.pad_id = batch_size, max_length, pad_id
        self.seed, self.process_index, self.process_count = seed, process_index, process_count
        self._heldout = list(heldout)
        self._a = self._encode(tokenizer, target_texts, add_special_tokens)
        self._b = self._encode(tokenizer, source_texts, add_special_tokens)
        self._lengths = tokenize.bucket_lengths(max_length)
        self.epoch, self.index = 0, 0
        self._order = self._permutation(0)
        self._mixture = None if components is None else MixtureOrder(components, seed)
        if components is not None and components[-1][1] != n:
            raise ValueError(f"mixture components {list(components)} do not cover the {n} items")

    def _encode(self, tokenizer: Any, texts: Sequence[str], special: bool) -> list[np.ndarray]:
        texts = list(texts)
        if special:
            return tokenize.encode(tokenizer, texts, self.max_length)
        ids = tokenizer(
            texts, add_special_tokens=False, truncation=True, max_length=self.max_length
        )
        fallback = tokenize.fallback_token_id(tokenizer)
        return [np.asarray(r if r else [fallback], np.int32) for r in ids["input_ids"]]

    @property
    def compiled_shapes(self) -> int:
        """How many batch shapes (length buckets) the step may be compiled for."""
        return len(self._lengths)

    def __len__(self) -> int:
        return len(self._a)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self._a))

    def _pad(
        self, rows: list[np.ndarray], length: int, count: int
    ) -> tuple[np.ndarray, np.ndarray]:
        ids = np.full((count, length), self.pad_id, np.int32)
        mask = np.zeros((count, length), np.int32)
        for r, row in enumerate(rows):
            n = min(len(row), length)
            ids[r, :n], mask[r, :n] = row[:n], 1
        return ids, mask

    def next_batch(self) -> dict[str, np.ndarray]:
        """This process's share of the next ``batch_size`` items (keys: module docstring)."""
        chosen = self._next_items()
        mine = np.asarray(chosen[self.process_index :: self.process_count])
        rows_a = [self._a[i] for i in mine]
        rows_b = [self._b[i] for i in mine]
        longest = max(len(r) for r in rows_a + rows_b)
        length = next(b for b in self._lengths if b >= min(longest, self.max_length))
        ids, mask = self._pad(rows_a, length, len(mine))
        ids_b, mask_b = self._pad(rows_b, length, len(mine))
        batch = {"ids": ids, "mask": mask, "ids_b": ids_b, "mask_b": mask_b}
        if self.targets is not None:
            batch["targets"] = self.targets[mine]
        batch["weight"] = self.weights[mine]
        return batch

    def _next_items(self) -> list[int]:
        """The next ``batch_size`` item indices (all processes' shares)."""
        if self._mixture is not None:
            return list(self._mixture.take(self.batch_size))
        chosen = []
        while len(chosen) < self.batch_size:
            if self.index >= len(self._order):
                self.epoch, self.index = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            take = min(self.batch_size - len(chosen), len(self._order) - self.index)
            chosen.extend(self._order[self.index : self.index + take])
            self.index += take
        return chosen

    def get_state(self) -> dict[str, Any]:
        """Position as plain ints (a mixture's: :meth:`MixtureOrder.get_state`)."""
        if self._mixture is not None:
            return self._mixture.get_state()
        return {"epoch": int(self.epoch), "index": int(self.index)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues from a position returned by :meth:`get_state`."""
        if self._mixture is not None:
            self._mixture.set_state(state)
            return
        if set(state) != {"epoch", "index"}:
            raise ValueError(
                f"a cross-lingual source cannot resume from data position {state}; it was "
                "saved by another kind of data source (start a new --workdir)"
            )
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._order = self._permutation(self.epoch)

    def token_weights(self) -> np.ndarray:
        """Not used by cross-lingual students (their weights come from the objective)."""
        raise NotImplementedError("TranslationSource does not count tokens; the objective does")

    def heldout_texts(self, n: int) -> list[str]:
        """Target-language sides of up to ``n`` held-out pairs."""
        return [t for _, t in self._heldout[:n]]

    def heldout_pairs(self, n: int) -> list[tuple[str, str]]:
        """Up to ``n`` held-out ``(source, target)`` pairs."""
        return list(self._heldout[:n])
