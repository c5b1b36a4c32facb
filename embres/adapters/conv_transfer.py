"""The conv mixer standing in for the teacher's lower layers, its last block carried over.

A transferred block (:mod:`embres.adapters.transfer`) reads static rows, which know a
token but not its neighbours, while the teacher's block reads states that ``L - 1`` layers
of context have shaped. Here the gated depthwise-conv mixer of :mod:`embres.adapters.hybrid`
sits between the two: rows plus positions, then the mixer (local word order, cost
independent of length), then the teacher's last block(s). Trained with
``config.objective.mid_weight > 0``, the mixer's output is fitted to the teacher's layer
``L - n`` token states: the very states the carried-over block was built to read.

Config (``config.adapter``): that of :mod:`embres.adapters.transfer` plus ``kernel_size``
and ``hidden_dim`` of the mixer (:mod:`embres.adapters.hybrid`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from embres.adapters import hybrid, transfer

VOCAB_ROWS = ("table",)
output_dim = transfer.output_dim
resolve_sizes = transfer.resolve_sizes
from_teacher = transfer.from_teacher
merge = transfer.merge
materialize = transfer.materialize
table_bytes = transfer.table_bytes


def check_config(cfg: Any, table_shape: tuple[int, int]) -> None:
    """The transfer's keys, and the mixer's ``kernel_size`` (odd) and ``hidden_dim``."""
    transfer.check_config(cfg, table_shape)
    hybrid.check_config(cfg, table_shape)


def init(rng: jax.Array, rows: jax.Array, cfg: Any, weights: jax.Array | None = None) -> dict:
    """The transfer's params (rows as given, zero updates) plus a fresh mixer."""
    params = transfer.init(rng, rows, cfg, weights)
    k, h = getattr(cfg, "kernel_size", 5), getattr(cfg, "hidden_dim", 256)
    return {**params, **hybrid.mixer_init(rng, cfg.target_dim, k, h)}


def apply_states(params: dict, frozen: Any, ids: jax.Array, mask: jax.Array | None = None):
    """(token vectors [b, l, d], {"input": the mixer's output, read by the blocks})."""
    p = merge(params, frozen if isinstance(frozen, dict) else None)
    mask = jnp.ones(ids.shape, jnp.int32) if mask is None else mask
    start = hybrid.mix(p, transfer.embed_rows(p, ids, mask))
    return transfer.run_blocks(p, start, mask), {"input": start}


def apply_pooled(params: dict, frozen: Any, ids: jax.Array, mask: jax.Array) -> jax.Array:
    """The served sentence vector, as :func:`transfer.apply_pooled`: [b, d]."""
    p = merge(params, frozen if isinstance(frozen, dict) else None)
    return transfer.run_blocks(p, hybrid.mix(p, transfer.embed_rows(p, ids, mask)), mask, True)


def apply(params: dict, frozen: Any, ids: jax.Array, mask: jax.Array | None = None):
    """Token vectors [batch, length, target_dim]; ``frozen`` as in :func:`transfer.apply`."""
    return apply_states(params, frozen, ids, mask)[0]


def flops_per_token(params: dict, length: int = 16) -> int:
    """The mixer's FLOPs plus the transferred blocks', per token at sequence ``length``."""
    return hybrid.flops_per_token(params, length) + transfer.flops_per_token(params, length)
