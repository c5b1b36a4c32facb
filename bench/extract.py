"""Extraction speed: embres vs sentence-transformers in one process, same sentences, same model.

CPU (default)::

    EMBRES_DATA_DIR=../shared/data python bench/extract.py            # 5,000 STS-B sentences

GPU, additionally (``--gpu``): BERT-base shapes at sequence length 128 in bf16 (tokens/s and
MFU against a bf16 matmul measured in the same run), and the end-to-end sentence rate of
both libraries on the same card.

Prints one table with sentences/s for each and the ratio embres / peer. Warm-up runs are
excluded; every timing ends with ``block_until_ready`` (or its torch equivalent).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def sts_sentences(limit: int) -> list[str]:
    """Unique sentences of STS-B train+dev (a public, varied mix of lengths)."""
    data = Path(os.environ.get("EMBRES_DATA_DIR", "../shared/data")) / "stsb"
    if not data.is_dir():
        raise SystemExit(f"no STS-B data at {data}; set EMBRES_DATA_DIR to the shared data folder")
    seen: dict[str, None] = {}
    for name in ("sts-train.csv", "sts-dev.csv"):
        for line in (data / name).read_text(encoding="utf-8").splitlines():
            for s in line.split("\t")[5:7]:
                seen.setdefault(s, None)
    sentences = list(seen)
    if len(sentences) < limit:
        raise SystemExit(f"only {len(sentences)} sentences available, {limit} asked")
    return sentences[:limit]


def timed(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` runs after one warm-up run."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_sentences(model, texts, batch_size, repeats, dtype, device):
    """End-to-end sentences/s (tokenise + forward + pool + normalise) for both libraries."""
    import torch
    from sentence_transformers import SentenceTransformer

    from embres import EmbeddingExtractor

    ex = EmbeddingExtractor(model, dtype=dtype, batch_size=batch_size)
    st = SentenceTransformer(str(ex.model.path), device=device)
    if dtype == "bfloat16":
        st = st.to(torch.bfloat16)
    ours = ex.extract_embeddings(texts)
    theirs = st.encode(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
    )
    cos = float(np.min((ours * theirs.astype(np.float32)).sum(-1)))
    t_ours = timed(lambda: ex.extract_embeddings(texts), repeats)
    t_theirs = timed(
        lambda: st.encode(texts, batch_size=batch_size, normalize_embeddings=True), repeats
    )
    return {
        "sentences": len(texts),
        "batch_size": batch_size,
        "dtype": dtype,
        "embres_sent_per_s": len(texts) / t_ours,
        "st_sent_per_s": len(texts) / t_theirs,
        "ratio": t_theirs / t_ours,
        "min_cosine": cos,
        "compiled_shapes": ex.trace_count,
    }


def bench_bert_base(batch: int = 256, length: int = 128, steps: int = 20) -> dict:
    """BERT-base shapes, bf16, seq 128: tokens/s and MFU vs a bf16 matmul measured here."""
    import jax
    import jax.numpy as jnp

    from embres.models import bert

    cfg = bert.Config()  # BERT-base: 12 x 768, 12 heads, 3072 FFN
    module = bert.Encoder(cfg, dtype=jnp.bfloat16)
    ids = jnp.ones((batch, length), jnp.int32)
    params = jax.jit(module.init)(jax.random.PRNGKey(0), ids, ids)
    forward = jax.jit(lambda p, i, m: module.apply(p, i, m)["last_hidden_state"])
    mask = jnp.ones((batch, length), jnp.int32)
    forward(params, ids, mask).block_until_ready()
    start = time.perf_counter()
    for _ in range(steps):
        out = forward(params, ids, mask)
    out.block_until_ready()
    seconds = (time.perf_counter() - start) / steps
    d, f, n_layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    # Per token per layer: 4 d^2 (qkv + out) + 2 d f (FFN) multiply-adds, and 2 L d for
    # QK^T and AV; x2 for FLOPs.
    flops_per_token = n_layers * 2 * (4 * d * d + 2 * d * f + 2 * length * d)
    achieved = flops_per_token * batch * length / seconds

    n = 8192
    # Random data: an all-ones or zeros matmul runs faster than real work and flatters MFU.
    a = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.bfloat16)
    mm = jax.jit(lambda x: x @ x)
    mm(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(10):
        r = mm(a)
    r.block_until_ready()
    matmul = 2 * n**3 / ((time.perf_counter() - start) / 10)
    return {
        "device": str(jax.devices()[0].device_kind),
        "batch": batch,
        "length": length,
        "tokens_per_s": batch * length / seconds,
        "model_tflops": achieved / 1e12,
        "matmul_tflops": matmul / 1e12,
        "mfu_vs_matmul": achieved / matmul,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="name or HF directory")
    parser.add_argument("--sentences", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu", action="store_true", help="also run the BERT-base bf16 MFU bench")
    parser.add_argument("--bert-batch", type=int, default=256, help="rows in the MFU bench")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()

    import jax

    device = "cuda" if args.gpu else "cpu"
    texts = sts_sentences(args.sentences)
    results = {"jax_device": str(jax.devices()[0]), "cpu_count": os.cpu_count()}
    rows = [bench_sentences(args.model, texts, args.batch_size, args.repeats, "float32", device)]
    if args.gpu:
        rows.append(bench_sentences(args.model, texts, 256, args.repeats, "float32", device))
        rows.append(bench_sentences(args.model, texts, 256, args.repeats, "bfloat16", device))
        results["bert_base_bf16"] = bench_bert_base(batch=args.bert_batch)
    results["sentences"] = rows

    print(f"device: {results['jax_device']} ({results['cpu_count']} CPUs)")
    print(
        f"{'dtype':9} {'batch':>5} {'embres sent/s':>14} {'s-t sent/s':>11} {'ratio':>6} {'min cos':>8}"
    )
    for r in rows:
        print(
            f"{r['dtype']:9} {r['batch_size']:5d} {r['embres_sent_per_s']:14.0f} "
            f"{r['st_sent_per_s']:11.0f} {r['ratio']:5.2f}x {r['min_cosine']:8.5f}"
        )
    if "bert_base_bf16" in results:
        b = results["bert_base_bf16"]
        print(
            f"BERT-base bf16 L={b['length']} B={b['batch']} on {b['device']}: "
            f"{b['tokens_per_s']:,.0f} tokens/s, {b['model_tflops']:.0f} TFLOP/s, "
            f"matmul {b['matmul_tflops']:.0f} TFLOP/s, MFU {100 * b['mfu_vs_matmul']:.0f}% of matmul"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
