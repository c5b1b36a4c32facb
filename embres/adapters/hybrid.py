"""Hybrid: the static path plus a light, order-aware contextual path, mixed by a learned gate.

For token vectors ``x = table[ids]`` (the static path, as in :mod:`embres.adapters.static`):

    context = W_out · gelu(W_in · depthwise_conv_k(x))     # k neighbouring tokens
    output  = x + sigmoid(gate) ⊙ context

The depthwise convolution sees each token's neighbours in order, so "dog bites man" and
"man bites dog" differ, at a cost that does not grow with sentence length. Pads are zeroed
before the convolution so they never leak into real tokens. The gate starts nearly closed
(sigmoid(-2) ≈ 0.12), so training starts from the static student.

Cost per token (multiply-adds ×2): ``2·k·d + 2·2·d·h`` FLOPs, e.g. 0.27 MFLOP at d=h=256,
k=5, against about 21 MFLOP for all-MiniLM-L6-v2 at 16 tokens (see :func:`flops_per_token`
and :func:`embres.models.bert.flops_per_token`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from embres.adapters import static

# Params with one row per vocabulary entry (padded and row-sharded like the table).
VOCAB_ROWS = ("table",)


def check_config(cfg: Any, table_shape: tuple[int, int]) -> None:
    """Checks ``target_dim``, ``kernel_size`` (odd, ≥ 1) and ``hidden_dim`` (> 0)."""
    static.check_config(cfg, table_shape)
    k = getattr(cfg, "kernel_size", 5)
    if not isinstance(k, int) or k < 1 or k % 2 == 0:
        raise ValueError(f"config.adapter.kernel_size={k!r}; expected an odd integer >= 1")
    h = getattr(cfg, "hidden_dim", 256)
    if not isinstance(h, int) or h <= 0:
        raise ValueError(f"config.adapter.hidden_dim={h!r}; expected a positive integer")


output_dim = static.output_dim


def init(rng: jax.Array, rows: jax.Array, cfg: Any, weights: jax.Array | None = None) -> dict:
    """Static rows plus a small conv-MLP mixer and its gate.

    Rows wider than ``target_dim`` start from PCA (as ``static.init``); rows already
    ``target_dim`` wide are an objective's rows in its own basis and are kept as given
    (scaled by ``weights``), so they stay in the basis its targets use.
    """
    d, k, h = cfg.target_dim, getattr(cfg, "kernel_size", 5), getattr(cfg, "hidden_dim", 256)
    if rows.shape[1] == d:
        rows = jnp.asarray(rows, jnp.float32)
        rows = rows if weights is None else rows * jnp.asarray(weights, jnp.float32)[:, None]
    else:
        rows = static.init(rng, rows, cfg, weights)["table"]
    return {"table": rows, **mixer_init(rng, d, k, h)}


def mixer_init(rng: jax.Array, d: int, k: int, h: int) -> dict:
    """The mixer's params: a near-identity depthwise kernel [k, d], the MLP, a closed gate."""
    r_conv, r_in, r_out = jax.random.split(rng, 3)
    conv = jnp.zeros((k, d)).at[k // 2].set(1.0) + 0.02 * jax.random.normal(r_conv, (k, d))
    return {
        "conv": conv,
        "w_in": jax.random.normal(r_in, (d, h)) / jnp.sqrt(d),
        "b_in": jnp.zeros((h,)),
        "w_out": jax.random.normal(r_out, (h, d)) * (0.1 / jnp.sqrt(h)),
        "gate": jnp.full((d,), -2.0, jnp.float32),  # explicit dtype: a weak type retraces
    }


def _depthwise_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Same-length depthwise 1-D convolution over the token axis: [b, l, d] x [k, d]."""
    k = kernel.shape[0]
    padded = jnp.pad(x, ((0, 0), (k // 2, k // 2), (0, 0)))
    length = x.shape[1]
    return sum(padded[:, i : i + length] * kernel[i] for i in range(k))


def mix(params: dict, x: jax.Array) -> jax.Array:
    """``x + sigmoid(gate) ⊙ W_out · gelu(W_in · conv(x))`` for token vectors with pads zeroed."""
    hidden = jax.nn.gelu(_depthwise_conv(x, params["conv"]) @ params["w_in"] + params["b_in"])
    return x + jax.nn.sigmoid(params["gate"]) * (hidden @ params["w_out"])


def apply(params: dict, frozen: jax.Array, ids: jax.Array, mask: jax.Array | None = None):
    """Token vectors [batch, length, target_dim] with local word-order context mixed in."""
    del frozen
    x = jnp.take(params["table"], ids, axis=0)
    if mask is not None:
        x = x * mask[..., None].astype(x.dtype)
    return mix(params, x)


def materialize(params: dict, frozen: jax.Array) -> None:
    """None: the hybrid is contextual, it has no plain-table equivalent."""
    del params, frozen
    return None


def table_bytes(params: dict, table_shape: tuple[int, int]) -> int:
    """Bytes of the static table plus the mixer."""
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params)))


def flops_per_token(params: dict, length: int = 16) -> int:
    """FLOPs per token of the contextual path (multiply-adds x2; the static lookup is free).

    Args:
      params: the hybrid's params (``conv`` [k, d], ``w_in`` [d, h], ...).
      length: tokens per sequence; unused, the conv mixer's cost does not depend on it (the
        argument is the signature every contextual adapter shares).

    Returns:
      ``2 k d`` (depthwise conv) + ``2 * 2 d h`` (the two matmuls) + ``2 d`` (the gate's
      scale and add), an integer. Pad masking, the bias and GELU are not counted.
    """
    del length
    k, d = params["conv"].shape
    h = params["w_in"].shape[1]
    return 2 * k * d + 2 * 2 * d * h + 2 * d  # conv, two matmuls, gate
