"""Small attention layers over the static rows: context learned from scratch.

Token vectors are the static student's rows plus learned positions, then ``layers``
pre-LayerNorm transformer blocks at the student's own width (``heads`` heads of
``target_dim / heads``, an FFN of ``ffn_dim``), with mean pooling. The blocks' output
weights start at zero, so the adapter starts as the static student exactly and training
adds context from there; unlike :mod:`embres.adapters.transfer` nothing comes from the
teacher's blocks.

Config (``config.adapter``): ``target_dim``, ``layers`` (default 1), ``heads`` (default 4),
``ffn_dim`` (default ``2 * target_dim``), ``max_positions`` (default 64; longer texts reuse
the last position row).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from embres.adapters import blocks, static, transfer

VOCAB_ROWS = ("table",)
output_dim = static.output_dim
materialize = transfer.materialize
table_bytes = transfer.table_bytes


def _sizes(cfg: Any) -> tuple[int, int, int, int]:
    d = cfg.target_dim
    return (
        getattr(cfg, "layers", 1),
        getattr(cfg, "heads", 4),
        getattr(cfg, "ffn_dim", 0) or 2 * d,
        d,
    )


def check_config(cfg: Any, table_shape: tuple[int, int]) -> None:
    """``target_dim`` in 1..width and divisible by ``heads``; positive ``layers``,
    ``heads``, ``ffn_dim`` (0 = 2 * target_dim) and ``max_positions``."""
    static.check_config(cfg, table_shape)
    for key, low in (("layers", 1), ("heads", 1), ("ffn_dim", 0), ("max_positions", 1)):
        value = getattr(cfg, key, low)
        if not isinstance(value, int) or value < low:
            raise ValueError(f"config.adapter.{key}={value!r}; expected an integer >= {low}")
    heads = getattr(cfg, "heads", 4)
    if cfg.target_dim % heads:
        raise ValueError(
            f"config.adapter.target_dim={cfg.target_dim} is not divisible by "
            f"config.adapter.heads={heads}"
        )


def init(rng: jax.Array, rows: jax.Array, cfg: Any, weights: jax.Array | None = None) -> dict:
    """The rows as given (already in the student's basis; scaled by ``weights`` if any),
    zero positions, and blocks whose output projections are zero (so ``apply`` starts as
    the static rows)."""
    layers, heads, f, d = _sizes(cfg)
    if rows.shape[1] != d:
        raise ValueError(
            f"the attention adapter starts from rows {d} wide (config.adapter.target_dim); "
            f"got rows {rows.shape[1]} wide"
        )
    rows = jnp.asarray(rows, jnp.float32)
    params = {"table": rows if weights is None else rows * jnp.asarray(weights)[:, None]}
    params["pos"] = jnp.zeros((getattr(cfg, "max_positions", 64), d))
    width = d // heads
    for i, key in enumerate(jax.random.split(rng, layers)):
        pre = f"block{i}."
        rq, rk, rv, r1 = jax.random.split(key, 4)
        normal = lambda r, shape, fan_in: jax.random.normal(r, shape) / jnp.sqrt(fan_in)  # noqa: E731
        params.update(
            {
                pre + "ln1_scale": jnp.ones((d,)),
                pre + "ln1_bias": jnp.zeros((d,)),
                pre + "wq": normal(rq, (d, heads, width), d),
                pre + "bq": jnp.zeros((heads, width)),
                pre + "wk": normal(rk, (d, heads, width), d),
                pre + "bk": jnp.zeros((heads, width)),
                pre + "wv": normal(rv, (d, heads, width), d),
                pre + "bv": jnp.zeros((heads, width)),
                pre + "wo": jnp.zeros((heads, width, d)),
                pre + "bo": jnp.zeros((d,)),
                pre + "ln2_scale": jnp.ones((d,)),
                pre + "ln2_bias": jnp.zeros((d,)),
                pre + "w1": normal(r1, (d, f), d),
                pre + "b1": jnp.zeros((f,)),
                pre + "w2": jnp.zeros((f, d)),
                pre + "b2": jnp.zeros((d,)),
            }
        )
    return params


def apply_states(params: dict, frozen: Any, ids: jax.Array, mask: jax.Array | None = None):
    """(token vectors [b, l, d], {"input": rows plus positions})."""
    del frozen
    mask = jnp.ones(ids.shape, jnp.int32) if mask is None else mask
    x = start = transfer.embed_rows(params, ids, mask)
    for i in range(blocks.count(params)):
        x = blocks.pre_ln_block(x, mask, params, f"block{i}.")
    return x, {"input": start}


def apply(params: dict, frozen: Any, ids: jax.Array, mask: jax.Array | None = None):
    """Token vectors [batch, length, target_dim] after the attention blocks."""
    return apply_states(params, frozen, ids, mask)[0]


def flops_per_token(params: dict, length: int = 16) -> int:
    """FLOPs per token of the blocks at sequence ``length`` (the lookup is free)."""
    return blocks.flops_per_token(params, length, basis_norm=False) + params["pos"].shape[1]
