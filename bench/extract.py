"""Extraction speed: embres vs sentence-transformers in one process, same sentences, same model.

CPU (default)::

    EMBRES_DATA_DIR=../shared/data python bench/extract.py            # 5,000 STS-B sentences
    EMBRES_DATA_DIR=../shared/data python bench/extract.py --batch-sizes 32,64,128

GPU, additionally (``--gpu``): BERT-base shapes at sequence length 128 in bf16 (tokens/s and
MFU against a bf16 matmul measured in the same run), and the end-to-end sentence rate of
both libraries on the same card.

End to end means tokenise, forward, pool and normalise, from Python strings to a numpy
array. Both libraries run in this one process, in alternating rounds (embres, peer, embres,
peer, ...) after a warm-up call each; each side's best round counts, and the ratio is
best/best. Alternating rounds see the same machine: a load that comes and goes (others'
jobs on a shared machine) touches both sides, and the best round is the one it touched
least. One process also means the same texts and interpreter, and no import or compile in
any timed round; a pause between rounds lets the other library's worker threads go idle
(both spin briefly after work). The load average is printed: on a busy machine the ratio
does not hold (torch's thread pool degrades more than XLA's when cores are taken).

Also printed: the host tokenizer alone (tokens/s and sentences/s: no pipeline can beat it on
this host), and the padded/real token ratio of each library's batches (compute spent on
padding). ``--batch-sizes`` times embres alone at several batch sizes, alternating too.

On a shared machine, ``--one-core`` pins the process to one CPU (torch to one thread) and
counts CPU seconds instead of wall seconds: the ratio of the work each library does per
sentence, which others' jobs barely move (on a busy 2-core machine the wall ratio swings by
several times, torch suffering most). It says nothing of how each uses two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

# Seconds between two timed rounds, so the previous library's threads stop spinning.
PAUSE = 0.5

# What a round's time is: wall seconds, or CPU seconds of this process with --one-core.
CLOCK = time.perf_counter


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


def alternating(fns: dict, rounds: int) -> dict[str, float]:
    """Best wall time of each function over ``rounds`` rounds that take turns (a, b, a, b, ...).

    Each function has run once before (its warm-up); every call returns host data (numpy),
    so its time includes waiting for the device.
    """
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(PAUSE)
            start = CLOCK()
            fn()
            best[name] = min(best[name], CLOCK() - start)
    return best


def tokenizer_rate(tokenizer, texts, max_length, rounds) -> dict:
    """The host tokenizer alone (embres's call, all texts at once): tokens/s, sentences/s."""
    from embres import tokenize

    tokens = sum(len(t) for t in tokenize.encode(tokenizer, texts, max_length))
    seconds = alternating(
        {"tokenize": lambda: tokenize.encode(tokenizer, texts, max_length)}, rounds
    )
    return {
        "tokens": tokens,
        "tokens_per_s": tokens / seconds["tokenize"],
        "sent_per_s": len(texts) / seconds["tokenize"],
    }


def padding(ex, texts) -> dict[str, float]:
    """Padded tokens / real tokens in the batches of embres and of sentence-transformers.

    sentence-transformers orders texts by character count and pads each batch to its longest
    text; embres pads to fixed bucket lengths after sorting by token count in windows.
    """
    from embres import tokenize

    tokenizer, b = ex.model.tokenizer, ex.batch_size
    windows = tokenize.batch_windows(tokenizer, texts, b, ex.max_length, ex.pad_id, ex.window)
    padded = sum(ids.size for window in windows for _, ids, _ in window)
    lengths = np.array([len(t) for t in tokenize.encode(tokenizer, texts, ex.max_length)])
    by_chars = lengths[np.argsort([-len(t) for t in texts], kind="stable")]
    theirs = sum(
        by_chars[i : i + b].max() * len(by_chars[i : i + b]) for i in range(0, len(texts), b)
    )
    return {"embres": padded / lengths.sum(), "st": theirs / lengths.sum()}


def bench_sentences(model, texts, batch_size, rounds, dtype, device, serial=False):
    """End-to-end sentences/s (tokenise + forward + pool + normalise) for both libraries.

    ``serial``: also time embres with its host pipeline off (``overlap=False``: tokenising in
    the calling thread, between batches), in the same alternation.
    """
    import torch
    from sentence_transformers import SentenceTransformer

    from embres import EmbeddingExtractor

    if CLOCK is time.process_time:
        torch.set_num_threads(1)
    ex = EmbeddingExtractor(model, dtype=dtype, batch_size=batch_size)
    st = SentenceTransformer(str(ex.model.path), device=device)
    if dtype == "bfloat16":
        st = st.to(torch.bfloat16)
    b = ex.batch_size  # the device's default when none was given: the same for both
    start = time.perf_counter()
    ours = ex.extract_embeddings(texts)  # warm-up: compiles every bucket shape
    first_call = time.perf_counter() - start
    theirs = st.encode(texts, batch_size=b, normalize_embeddings=True, convert_to_numpy=True)
    cos = float(np.min((ours * theirs.astype(np.float32)).sum(-1)))
    fns = {
        "embres": lambda: ex.extract_embeddings(texts),
        "st": lambda: st.encode(texts, batch_size=b, normalize_embeddings=True),
    }
    if serial:
        fns["embres_serial"] = lambda: _serially(ex, texts)
    best = alternating(fns, rounds)
    row = {
        "sentences": len(texts),
        "batch_size": b,
        "dtype": dtype,
        "embres_sent_per_s": len(texts) / best["embres"],
        "st_sent_per_s": len(texts) / best["st"],
        "ratio": best["st"] / best["embres"],
        "min_cosine": cos,
        "compiled_shapes": ex.trace_count,
        "embres_first_call_s": first_call,
        "padded_per_real": padding(ex, texts),
    }
    if serial:
        row["embres_serial_sent_per_s"] = len(texts) / best["embres_serial"]
    return row


def _serially(ex, texts):
    """``ex.extract_embeddings(texts)`` with tokenisation in the calling thread."""
    ex.overlap = False
    try:
        return ex.extract_embeddings(texts)
    finally:
        ex.overlap = True


def bench_batch_sizes(model, texts, sizes, rounds) -> dict[int, float]:
    """embres alone at each batch size (alternating rounds): sentences/s."""
    from embres import EmbeddingExtractor

    extractors = {b: EmbeddingExtractor(model, batch_size=b) for b in sizes}
    for ex in extractors.values():
        ex.extract_embeddings(texts)  # compile
    best = alternating(
        {b: (lambda ex=ex: ex.extract_embeddings(texts)) for b, ex in extractors.items()},
        rounds,
    )
    return {b: len(texts) / seconds for b, seconds in best.items()}


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
    achieved = bert.flops_per_token(cfg, length) * batch * length / seconds

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
    parser.add_argument(
        "--batch-size", type=int, help="rows per batch, both libraries (default: embres's)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per side")
    parser.add_argument(
        "--batch-sizes", help="also time embres alone at these batch sizes, e.g. 32,64,128"
    )
    parser.add_argument(
        "--serial", action="store_true", help="also time embres with its host pipeline off"
    )
    parser.add_argument(
        "--one-core",
        action="store_true",
        help="one CPU, CPU seconds: a ratio that holds on a busy machine (see above)",
    )
    parser.add_argument("--gpu", action="store_true", help="also run the BERT-base bf16 MFU bench")
    parser.add_argument("--bert-batch", type=int, default=256, help="rows in the MFU bench")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    global CLOCK
    if args.one_core:  # before jax or torch start their threads, so all of them inherit it
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        CLOCK = time.process_time

    import jax

    from embres.models import load_model

    device = "cuda" if args.gpu else "cpu"
    texts = sts_sentences(args.sentences)
    results = {
        "jax_device": str(jax.devices()[0]),
        "cpu_count": len(os.sched_getaffinity(0)),
        "clock": "CPU seconds, one core" if args.one_core else "wall seconds",
        "load_average_start": os.getloadavg()[0],
    }
    tokenizer_of = load_model(args.model, with_tokenizer=True)
    results["tokenizer"] = tokenizer_rate(
        tokenizer_of.tokenizer, texts, tokenizer_of.max_length, args.rounds
    )
    name, rounds = args.model, args.rounds
    rows = [bench_sentences(name, texts, args.batch_size, rounds, "float32", device, args.serial)]
    if args.gpu:
        rows.append(bench_sentences(name, texts, 256, rounds, "float32", device))
        rows.append(bench_sentences(name, texts, 256, rounds, "bfloat16", device))
        results["bert_base_bf16"] = bench_bert_base(batch=args.bert_batch)
    results["sentences"] = rows
    if args.batch_sizes:
        sizes = [int(b) for b in args.batch_sizes.split(",")]
        results["embres_batch_sizes"] = bench_batch_sizes(name, texts, sizes, rounds)
    results["load_average_end"] = os.getloadavg()[0]
    print_results(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def print_results(results: dict) -> None:
    """The table (and the lines around it) that main prints."""
    print(
        f"device: {results['jax_device']} ({results['cpu_count']} CPUs), load average "
        f"{results['load_average_start']:.1f} at start, {results['load_average_end']:.1f} at end; "
        f"rates per {results['clock']}"
    )
    tok = results["tokenizer"]
    print(
        f"host tokenizer alone: {tok['tokens_per_s']:,.0f} tokens/s "
        f"({tok['sent_per_s']:,.0f} sentences/s, {tok['tokens']:,} tokens)"
    )
    print(
        f"{'dtype':9} {'batch':>5} {'embres sent/s':>14} {'s-t sent/s':>11} {'ratio':>6} "
        f"{'min cos':>8} {'padded/real':>14} {'shapes':>6} {'1st call':>8}"
    )
    for r in results["sentences"]:
        pad = r["padded_per_real"]
        print(
            f"{r['dtype']:9} {r['batch_size']:5d} {r['embres_sent_per_s']:14.0f} "
            f"{r['st_sent_per_s']:11.0f} {r['ratio']:5.2f}x {r['min_cosine']:8.5f} "
            f"{pad['embres']:6.2f} / {pad['st']:.2f} {r['compiled_shapes']:6d} "
            f"{r['embres_first_call_s']:7.1f}s"
        )
    for r in results["sentences"]:
        if "embres_serial_sent_per_s" in r:
            print(
                f"embres with the host pipeline off (batch {r['batch_size']}): "
                f"{r['embres_serial_sent_per_s']:,.0f} sentences/s"
            )
    for b, rate in results.get("embres_batch_sizes", {}).items():
        print(f"embres alone, batch {b:4d}: {rate:,.0f} sentences/s")
    if "bert_base_bf16" in results:
        b = results["bert_base_bf16"]
        print(
            f"BERT-base bf16 L={b['length']} B={b['batch']} on {b['device']}: "
            f"{b['tokens_per_s']:,.0f} tokens/s, {b['model_tflops']:.0f} TFLOP/s, "
            f"matmul {b['matmul_tflops']:.0f} TFLOP/s, MFU {100 * b['mfu_vs_matmul']:.0f}% of matmul"
        )


if __name__ == "__main__":
    main()
