"""``python -m embres``: a quick extraction demo, on the bundled all-MiniLM-L6-v2 by default.

Usage::

    python -m embres [--model NAME_OR_DIR] [--verbose]

A mistake (an unknown model, a broken model folder) ends in one ``python -m embres: error:``
line on stderr and exit code 2; ``--verbose`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from embres import cli

PROG = "python -m embres"
TEXTS = (
    "A man is playing a guitar.",
    "Someone plays an instrument.",
    "A cat sleeps on the sofa.",
    "Bir adam gitar çalıyor.",
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The demo's options (``--model``, ``--verbose``)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default="all-MiniLM-L6-v2",
        help="a bundled name, a Hugging Face model folder, or a cached hub id (org/name)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show the traceback of an error (read by cli.run)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Prints the model's shape, the texts' cosine matrix and one pair's cosine per layer."""
    args = parse_args(argv)
    from embres import EmbeddingExtractor  # after parsing: --help needs no jax

    ex = EmbeddingExtractor(args.model)
    texts = list(TEXTS)
    vectors = ex.extract_embeddings(texts, normalize=True)
    print(f"model {ex.model.name}: {ex.num_layers} layers, d={ex.dim}, pooling={ex.model.pooling}")
    print(f"static table: {ex.embedding_table().shape}")
    sims = vectors @ vectors.T
    for i, text in enumerate(texts):
        print(f"{text:32s} " + " ".join(f"{s:5.2f}" for s in sims[i]))
    # The input table, the middle block and the last: valid layers for any depth.
    for layer in (0, ex.num_layers // 2, -1):
        v = ex.extract_embeddings(texts[:2], layer=layer, normalize=True)
        print(f"layer {layer:2d}: cos(sentence 0, sentence 1) = {float(np.dot(v[0], v[1])):.3f}")


if __name__ == "__main__":
    sys.exit(cli.run(main, prog=PROG))
