"""Static student: a trainable [vocab, target_dim] table, started from PCA of the source rows.

The source ``rows`` given to :func:`init` is the teacher's vocabulary-distilled table (each
token through the teacher on its own, SIF-weighted; see :mod:`embres.distill`), so training
starts where corpus-free distillation ends and only improves it. PCA orders the output
dimensions by variance, which is what lets a Matryoshka-trained table be truncated.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from embres import linalg

# Params with one row per vocabulary entry (padded and row-sharded like the table).
VOCAB_ROWS = ("table",)


def check_config(cfg: Any, table_shape: tuple[int, int]) -> None:
    """``target_dim`` must be in 1..table width; raises ``ValueError`` naming the key."""
    _, dim = table_shape
    target = getattr(cfg, "target_dim", None)
    if not isinstance(target, int) or not 0 < target <= dim:
        raise ValueError(
            f"config.adapter.target_dim={target!r}; expected an integer in 1..{dim} "
            "(the width of the distilled teacher table)"
        )


def output_dim(cfg: Any, table_shape: tuple[int, int]) -> int:
    """Width of the vectors ``apply`` returns."""
    return cfg.target_dim


def init(rng: jax.Array, rows: jax.Array, cfg: Any, weights: jax.Array | None = None) -> dict:
    """``{"table": [vocab, target_dim]}``: the source rows, centred and PCA-projected.

    ``weights`` ([vocab], e.g. SIF weights) scale each row after the projection, as
    vocabulary distillation does; the PCA itself is unweighted.
    """
    del rng
    mean, components = linalg.pca(jnp.asarray(rows, jnp.float32), cfg.target_dim)
    rows = (jnp.asarray(rows, jnp.float32) - mean) @ components
    if weights is not None:
        rows = rows * jnp.asarray(weights, jnp.float32)[:, None]
    return {"table": rows}


def apply(params: dict, frozen: jax.Array, ids: jax.Array, mask: jax.Array | None = None):
    """Token vectors [batch, length, target_dim]: rows of the trained table."""
    del frozen, mask
    return jnp.take(params["table"], ids, axis=0)


def materialize(params: dict, frozen: jax.Array) -> jax.Array:
    """The trained table itself."""
    del frozen
    return params["table"]


def table_bytes(params: dict, table_shape: tuple[int, int]) -> int:
    """Bytes of the trained table."""
    return int(params["table"].size * params["table"].dtype.itemsize)
