"""``python -m embres``: a quick extraction demo on the bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np


def main() -> None:
    from embres import EmbeddingExtractor

    texts = [
        "A man is playing a guitar.",
        "Someone plays an instrument.",
        "A cat sleeps on the sofa.",
        "Bir adam gitar çalıyor.",
    ]
    ex = EmbeddingExtractor("all-MiniLM-L6-v2")
    vectors = ex.extract_embeddings(texts)
    print(f"model {ex.model.name}: {ex.num_layers} layers, d={ex.dim}, pooling={ex.model.pooling}")
    print(f"static table: {ex.embedding_table().shape}")
    sims = vectors @ vectors.T
    for i, text in enumerate(texts):
        print(f"{text:32s} " + " ".join(f"{s:5.2f}" for s in sims[i]))
    for layer in (0, 3, -1):
        v = ex.extract_embeddings(texts[:2], layer=layer, normalize=True)
        print(f"layer {layer:2d}: cos(sentence 0, sentence 1) = {float(np.dot(v[0], v[1])):.3f}")


if __name__ == "__main__":
    main()
