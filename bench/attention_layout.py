"""Heads-major attention ([b, h, l, k], what embres ships) against token-major ([b, l, h, k]).

    python bench/attention_layout.py [--student runs/h_transfer] [--batch 64] [--length 14]
        [--calls 50] [--repeats 5]

Times the served sentence vector of a trained transfer export (``apply_pooled``, jitted) on
one fixed batch, once with :func:`embres.adapters.blocks.attention` as shipped and once with
the same attention written token-major (the layout embres used before), in interleaved
rounds, best round counting; prints ms per batch, sentences/s, the ratio and the largest
difference of the two outputs. The peer layout lives here only, as the comparison.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def token_major_attention(x, mask, p, prefix):
    """The same attention as ``blocks.attention``, projections and products in [b, l, h, k]."""
    import jax
    import jax.numpy as jnp

    q = jnp.einsum("bld,dhk->blhk", x, p[prefix + "wq"]) + p[prefix + "bq"]
    k = jnp.einsum("bld,dhk->blhk", x, p[prefix + "wk"]) + p[prefix + "bk"]
    v = jnp.einsum("bld,dhk->blhk", x, p[prefix + "wv"]) + p[prefix + "bv"]
    scores = jnp.einsum("bqhk,bshk->bhqs", q, k) / jnp.sqrt(jnp.float32(q.shape[-1]))
    scores = jnp.where(mask.astype(bool)[:, None, None, :], scores, -1e9)
    weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(v.dtype)
    context = jnp.einsum("bhqs,bshk->bqhk", weights, v)
    return jnp.einsum("bqhk,hkd->bqd", context, p[prefix + "wo"]) + p[prefix + "bo"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", default="runs/h_transfer", help="a transfer export or workdir")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=14)
    parser.add_argument("--calls", type=int, default=50, help="calls per timed round")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from embres import adapters
    from embres.adapters import blocks
    from embres.export import load_student

    student = load_student(args.student)
    adapter = adapters.get(student.kind)
    if not hasattr(adapter, "apply_pooled"):
        parser.error(f"{args.student} is a {student.kind!r} export; expected a transfer one")
    params = jax.tree.map(jnp.asarray, student.params)
    rows = student.params["table"].shape[0]
    ids = jnp.asarray(np.random.default_rng(0).integers(0, rows, (args.batch, args.length)))
    mask = jnp.ones_like(ids)

    shipped = blocks.attention

    def compiled(attention):
        blocks.attention = attention  # read when traced, so each jit holds its own layout
        try:
            fn = jax.jit(lambda p, i, m: adapter.apply_pooled(p, None, i, m))
            out = fn(params, ids, mask).block_until_ready()
        finally:
            blocks.attention = shipped
        return fn, out

    layouts = {"heads-major (shipped)": compiled(shipped)}
    layouts["token-major"] = compiled(token_major_attention)
    best = dict.fromkeys(layouts, float("inf"))
    for _ in range(args.repeats):
        for name, (fn, _) in layouts.items():
            start = time.perf_counter()
            for _ in range(args.calls):
                out = fn(params, ids, mask)
            out.block_until_ready()
            best[name] = min(best[name], (time.perf_counter() - start) / args.calls)
    for name, seconds in best.items():
        rate = args.batch / seconds
        print(
            f"{name:22s} {seconds * 1e3:7.3f} ms per {args.batch}x{args.length} batch, {rate:,.0f} sent/s"
        )
    (_, out_a), (_, out_b) = layouts.values()
    print(
        f"token-major / heads-major time: {best['token-major'] / best['heads-major (shipped)']:.3f}x"
    )
    print(f"largest output difference: {float(jnp.abs(out_a - out_b).max()):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
