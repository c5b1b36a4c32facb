"""bfloat16 against float32: cosine of each sentence vector, all of STS-B dev.

Embeds every distinct sentence of STS-B dev (1,500 pairs, 2,910 distinct sentences) with
``EmbeddingExtractor(model, dtype="bfloat16")`` and with float32, and prints the minimum,
1st percentile and mean cosine between the two, and the sentences that drift most. The
float32 run uses ``jax.default_matmul_precision("float32")``, so on a GPU it is true float32,
not TF32. ``tests/test_bf16.py`` checks the same on every 10th pair; this checks them all::

    EMBRES_DATA_DIR=../shared/data python bench/bf16_cosine.py
    EMBRES_DATA_DIR=../shared/data python bench/bf16_cosine.py --right-padded   # lengths path

``--right-padded`` passes ``right_padded=True`` to the model (what the extractor may promise:
``embres.tokenize`` pads on the right), so attention gets sequence lengths and ``auto`` picks
cuDNN on a GPU. ``--attention`` forces an implementation. Exits 1 below ``--min-cosine``.
Measured on the 2-core CPU (all-MiniLM-L6-v2): min 0.99994, either padding form.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np


def distinct_dev_sentences(data_dir: str | None = None) -> list[str]:
    """Every distinct sentence of STS-B dev, in first-seen order."""
    from embres.evaluate.sts import load_pairs

    pairs = load_pairs("stsb", "dev", data_dir)
    return list(
        dict.fromkeys(
            s for pair in zip(pairs.sentences1, pairs.sentences2, strict=True) for s in pair
        )
    )


def embed(model: str, dtype: str, texts: list[str], attention: str, right_padded: bool):
    """(vectors [n, d], seconds) of one dtype; the float32 run with float32 matmuls."""
    import jax

    from embres import EmbeddingExtractor

    extractor = EmbeddingExtractor(model, dtype=dtype)
    extractor.model.module = extractor.model.module.clone(attention=attention)
    if right_padded:
        extractor.model.apply = functools.partial(extractor.model.apply, right_padded=True)
    start = time.perf_counter()
    with jax.default_matmul_precision("float32" if dtype == "float32" else "default"):
        vectors = extractor.extract_embeddings(texts)
    return vectors, time.perf_counter() - start


class _Choices(logging.Handler):
    """Collects the 'attention <implementation> ...' lines of embres.models.layers."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two [n, d] arrays (float64)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--data-dir", help="default: EMBRES_DATA_DIR")
    parser.add_argument("--attention", default="auto", help="auto | xla | cudnn | reference")
    parser.add_argument("--right-padded", action="store_true", help="attention gets lengths")
    parser.add_argument("--min-cosine", type=float, default=0.999)
    parser.add_argument("--worst", type=int, default=5, help="sentences to show")
    parser.add_argument("--json", type=Path, help="write the numbers here too")
    args = parser.parse_args()

    import jax

    choices = _Choices()
    logging.getLogger("embres.models.layers").addHandler(choices)
    logging.getLogger("embres.models.layers").setLevel(logging.INFO)
    texts = distinct_dev_sentences(args.data_dir)
    f32, t32 = embed(args.model, "float32", texts, args.attention, args.right_padded)
    bf16, t16 = embed(args.model, "bfloat16", texts, args.attention, args.right_padded)
    cos = cosines(f32, bf16)
    result = {
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "model": args.model,
        "sentences": len(texts),
        "attention": args.attention,
        "right_padded": args.right_padded,
        "attention_ran": sorted({line.split(" for ")[0] for line in choices.lines}),
        "min_cosine": float(cos.min()),
        "p1_cosine": float(np.percentile(cos, 1)),
        "mean_cosine": float(cos.mean()),
        "seconds": {"float32": t32, "bfloat16": t16},
    }
    print(
        f"{result['device']} jax {result['jax']}, {len(texts)} distinct STS-B dev sentences, "
        f"attention={args.attention} right_padded={args.right_padded} "
        f"(ran: {', '.join(result['attention_ran'])})"
    )
    print(
        f"bf16 vs f32 cosine: min {cos.min():.6f}  p1 {result['p1_cosine']:.6f}  "
        f"mean {cos.mean():.6f}  (f32 {t32:.0f} s, bf16 {t16:.0f} s)"
    )
    for i in np.argsort(cos)[: args.worst]:
        print(f"  {cos[i]:.6f}  {texts[i][:90]!r}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if cos.min() < args.min_cosine:
        print(f"FAIL: min cosine {cos.min():.6f} < {args.min_cosine}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
