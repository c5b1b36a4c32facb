"""Fidelity: how closely a student's sentence vectors follow a reference (the teacher's).

The cosine of each text's vector against the reference vector of the same text, averaged
(``fidelity/cosine``) and at its worst (``fidelity/min_cosine``). It needs no labelled data,
only texts (a training run's held-out texts), so it is measured even without the data folder.

Example::

    FidelityEvaluator(heldout_texts, reference=teacher_fn).run(student_fn)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from embres.evaluate.common import EmbedFn, Skipped, normalize_rows


def as_matrix(vectors: np.ndarray, count: int, who: str) -> np.ndarray:
    """``vectors`` as float64 [count, d]; raises ValueError naming ``who`` otherwise."""
    vectors = np.asarray(vectors, np.float64)
    if vectors.ndim != 2 or vectors.shape[0] != count:
        raise ValueError(f"{who} gave shape {vectors.shape} for {count} texts; expected [n, d]")
    return vectors


class FidelityEvaluator:
    """Cosine of ``embed_fn(texts)`` against ``reference(texts)``, row by row.

    Args:
      texts: the texts to embed (e.g. held-out training texts).
      reference: the embed_fn to follow (the teacher), or its vectors of ``texts`` already
        computed ([len(texts), d]), so a reference that never changes is embedded once.
    """

    def __init__(self, texts: Sequence[str], reference: EmbedFn | np.ndarray):
        self.texts = list(texts)
        self.reference = reference

    def reference_vectors(self) -> np.ndarray:
        """The reference's vectors of the texts, [len(texts), d]."""
        ref = self.reference
        vectors = ref(self.texts) if callable(ref) else ref
        return as_matrix(vectors, len(self.texts), "the reference")

    def run(self, embed_fn: EmbedFn) -> Iterator[tuple[str, float | Skipped]]:
        """Yields ``fidelity/cosine`` (mean) and ``fidelity/min_cosine``, or one Skipped."""
        if not self.texts:
            yield "fidelity", Skipped("no texts to compare on (no held-out texts were given)")
            return
        ref = self.reference_vectors()
        ours = as_matrix(embed_fn(self.texts), len(self.texts), "embed_fn")
        if ours.shape[1] != ref.shape[1]:
            yield (
                "fidelity",
                Skipped(
                    f"widths differ: the model gives {ours.shape[1]}-d vectors, the reference "
                    f"{ref.shape[1]}-d, so their cosine is undefined"
                ),
            )
            return
        cosine = np.sum(normalize_rows(ours) * normalize_rows(ref), axis=1)
        yield "fidelity/cosine", float(cosine.mean())
        yield "fidelity/min_cosine", float(cosine.min())
