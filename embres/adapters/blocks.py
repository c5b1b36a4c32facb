"""Transformer blocks over a student's token vectors: pure functions over flat param dicts.

Shared by the contextual adapters :mod:`embres.adapters.attention` (small pre-LN blocks,
trained from scratch) and :mod:`embres.adapters.transfer` (the teacher's own post-LN blocks,
carried over in the PCA basis of its hidden space). Params live in one flat dict under a
prefix per block (``"block0.wq"``...), so an export is a plain safetensors file and
``apply`` reads every size from the arrays' shapes: no config is needed to serve.

Shapes (``d`` the student's width, ``H`` heads of width ``k``, ``f`` the FFN width)::

    wq, wk, wv [d, H, k]   bq, bk, bv [H, k]   wo [H, k, d]   bo [d]
    w1 [d, f]  b1 [f]      w2 [f, d]  b2 [d]

FLOPs per token (multiply-adds x2) at sequence length ``L``: ``2·4·d·H·k`` for the
projections, ``2·2·L·H·k`` for scores and context, ``2·2·d·f`` for the FFN, plus the
LayerNorms (``2·d·d`` each for the PCA-basis LayerNorm of a transferred block).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LN_EPS = 1e-12  # BERT's (XLM-R uses 1e-5: a relative difference below 1e-6 at unit variance)
_MASKED = -1e9  # a finite "minus infinity": a row with no real key gives uniform, not NaN
FFN = ("w1", "b1", "w2", "b2")
ATTENTION = ("wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo")


def count(params: dict) -> int:
    """Number of blocks in ``params`` (keys ``block<i>.*``)."""
    return len({k.split(".")[0] for k in params if k.startswith("block")})


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
    """LayerNorm over the last axis, statistics in float32."""
    x = x.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + LN_EPS) * scale + bias


def basis_layer_norm(r: jax.Array, p: dict, prefix: str) -> jax.Array:
    """The teacher's LayerNorm of ``x = r·Pᵀ + μ``, computed and returned in the PCA basis.

    ``r`` holds coordinates in a basis ``P`` [D, d] (orthonormal columns) around a mean
    ``μ``. The mean and variance of the D-wide ``x`` follow from ``r`` exactly
    (``mean = r·u + m0``, ``E[x²] = |r|²·c + r·w + q0``), and ``(LN(x) - μ)·P`` is
    ``(r·G + a - mean·g) / std + b`` with ``G = Pᵀ diag(γ) P``. With ``P = I`` and ``μ = 0``
    it is exactly the teacher's LayerNorm. ``G``, ``a``, ``g`` and ``b`` are trained; the
    statistics' coefficients ``u, m0, c, w, q0`` are not.
    """
    r, mean, std_inv = _basis_ln_parts(r, p, prefix)
    get = lambda name: p[prefix + name]  # noqa: E731
    return (r @ get("G") + get("a") - mean[..., None] * get("g")) * std_inv[..., None] + get("b")


def _basis_ln_parts(r: jax.Array, p: dict, prefix: str):
    """``(r, mean, 1/std)`` of :func:`basis_layer_norm`: the per-token statistics."""
    r = r.astype(jnp.float32)
    # The statistics are facts of the basis, not weights: trained, they could drive the
    # variance to zero and the scale to 1/sqrt(eps). They stay as transferred.
    fixed = lambda name: jax.lax.stop_gradient(p[prefix + name])  # noqa: E731
    mean = r @ fixed("u") + fixed("m0")
    second = jnp.sum(r * r, -1) * fixed("c") + r @ fixed("w") + fixed("q0")
    # eps 1e-6 rather than BERT's 1e-12: the variance is computed as a difference of two
    # large sums, and a rounding error near zero must not blow the scale up (the teacher's
    # states have variances of order 1 or more: a relative change below 1e-6).
    return r, mean, jax.lax.rsqrt(jnp.maximum(second - mean * mean, 0.0) + 1e-6)


def pooled_basis_layer_norm(r: jax.Array, mask: jax.Array, p: dict, prefix: str) -> jax.Array:
    """The masked mean over tokens of :func:`basis_layer_norm`, with ``G`` applied once.

    Each token's output is ``(r·G + a - mean·g)·s + b`` with a per-token scalar ``s``, so
    its mean over real tokens is ``mean(s·r)·G + mean(s)·a - mean(s·mean)·g + b``
    (``b`` only where a row has a real token, as :func:`embres.pooling.pool` gives zeros
    for an all-pad row): the ``2·d·d`` FLOPs of ``G`` are spent per sentence, not per token.
    Exact up to float rounding.
    """
    r, mean, std_inv = _basis_ln_parts(r, p, prefix)
    real = mask.astype(bool)
    count = real.sum(1, keepdims=True).astype(jnp.float32)
    weight = jnp.where(real, std_inv, 0.0) / jnp.maximum(count, 1e-9)  # [b, l]
    pooled_r = jnp.einsum("bl,bld->bd", weight, r)
    s_mean = weight.sum(1, keepdims=True)
    s_stat = jnp.sum(weight * mean, 1, keepdims=True)
    has_token = (count > 0).astype(jnp.float32)
    get = lambda name: p[prefix + name]  # noqa: E731
    return pooled_r @ get("G") + s_mean * get("a") - s_stat * get("g") + has_token * get("b")


def attention(x: jax.Array, mask: jax.Array, p: dict, prefix: str) -> jax.Array:
    """Multi-head self-attention over real tokens (``mask`` [b, l], 1 = real): [b, l, d]."""

    # Heads-major [b, h, l, k] throughout: the score and context products then batch over
    # (b, h) with no transposes between them (1.05x faster per batch on CPU than [b, l, h, k]:
    # bench/attention_layout.py).
    def heads(name: str) -> jax.Array:
        w, b = p[prefix + "w" + name], p[prefix + "b" + name]
        return jnp.einsum("bld,dhk->bhlk", x, w) + b[None, :, None, :]

    q, k, v = heads("q"), heads("k"), heads("v")
    scores = jnp.einsum("bhqk,bhsk->bhqs", q, k) / jnp.sqrt(jnp.float32(q.shape[-1]))
    scores = jnp.where(mask.astype(bool)[:, None, None, :], scores, _MASKED)
    weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(v.dtype)
    context = jnp.einsum("bhqs,bhsk->bhqk", weights, v)
    return jnp.einsum("bhqk,hkd->bqd", context, p[prefix + "wo"]) + p[prefix + "bo"]


def ffn(x: jax.Array, p: dict, prefix: str) -> jax.Array:
    """Two-layer GELU MLP (exact, erf GELU: BERT's ``gelu``)."""
    hidden = jax.nn.gelu(x @ p[prefix + "w1"] + p[prefix + "b1"], approximate=False)
    return hidden @ p[prefix + "w2"] + p[prefix + "b2"]


def pre_ln_block(x: jax.Array, mask: jax.Array, p: dict, prefix: str) -> jax.Array:
    """``x + attn(LN(x))``, then ``+ ffn(LN(·))``: with zero output weights, the identity."""
    ln = lambda y, name: layer_norm(y, p[prefix + name + "_scale"], p[prefix + name + "_bias"])  # noqa: E731
    x = x + attention(ln(x, "ln1"), mask, p, prefix)
    return x + ffn(ln(x, "ln2"), p, prefix)


def post_ln_block(
    x: jax.Array, mask: jax.Array, p: dict, prefix: str, pooled: bool = False
) -> jax.Array:
    """BERT's block, ``LN(h + ffn(h))`` with ``h = LN(x + attn(x))``, in the PCA basis.

    ``pooled``: return the masked mean over tokens [b, d] (the last LayerNorm's ``G`` then
    runs once per sentence, :func:`pooled_basis_layer_norm`), not token vectors [b, l, d].
    """
    h = basis_layer_norm(x + attention(x, mask, p, prefix), p, prefix + "ln1.")
    y = h + ffn(h, p, prefix)
    if pooled:
        return pooled_basis_layer_norm(y, mask, p, prefix + "ln2.")
    return basis_layer_norm(y, p, prefix + "ln2.")


def flops_per_token(params: dict, length: int, basis_norm: bool, pooled: bool = False) -> int:
    """FLOPs per token of every block in ``params`` at sequence ``length``.

    ``pooled``: the cost of the pooled sentence vector (``post_ln_block(..., pooled=True)``
    for the last block), whose last PCA-basis LayerNorm spends ``2·d·d`` per sentence.
    """
    total = 0
    n = count(params)
    if pooled and basis_norm and n:
        d = params[f"block{n - 1}.wq"].shape[0]
        total -= 2 * d * d - (2 * d * d) // length  # the last G: per sentence, not per token
    for i in range(n):
        pre = f"block{i}."
        d, heads, width = params[pre + "wq"].shape
        inner = heads * width
        f = params[pre + "w1"].shape[1]
        total += 2 * 4 * d * inner  # q, k, v, output projections
        total += 2 * 2 * length * inner  # scores and context
        total += 2 * 2 * d * f  # FFN
        total += 2 * (2 * d * d if basis_norm else 0)  # G in each PCA-basis LayerNorm
    return total
