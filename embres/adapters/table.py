"""Table: a trainable copy of the source rows, at their own width (no PCA, no factors).

For students whose rows must stay in the space of the model that reads them: an input table
for a frozen transformer (the embedding-layer transfer of :mod:`embres.objectives.cross_lingual`,
where the teacher's blocks read the new rows) or an already-trained static table being
fine-tuned (:mod:`embres.objectives.sts_finetune`, where a PCA start would centre it and
change every cosine).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

# Params with one row per vocabulary entry (padded and row-sharded like the table).
VOCAB_ROWS = ("table",)


def check_config(cfg: Any, table_shape: tuple[int, int]) -> None:
    """A table adapter keeps the source width; ``target_dim``, if set, must equal it."""
    target = getattr(cfg, "target_dim", None)
    if target not in (None, table_shape[1]):
        raise ValueError(
            f"config.adapter.target_dim={target!r}; the 'table' adapter keeps the rows' width "
            f"{table_shape[1]} (leave target_dim unset, or use the 'static' adapter to narrow)"
        )


def output_dim(cfg: Any, table_shape: tuple[int, int]) -> int:
    """The source rows' width."""
    del cfg
    return int(table_shape[1])


def init(rng: jax.Array, rows: jax.Array, cfg: Any, weights: jax.Array | None = None) -> dict:
    """``{"table": rows}`` as float32; ``weights`` scale rows when given."""
    del rng, cfg
    rows = jnp.asarray(rows, jnp.float32)
    if weights is not None:
        rows = rows * jnp.asarray(weights, jnp.float32)[:, None]
    return {"table": rows}


def apply(params: dict, frozen: jax.Array, ids: jax.Array, mask: jax.Array | None = None):
    """Token vectors [batch, length, width]: rows of the trained table."""
    del frozen, mask
    return jnp.take(params["table"], ids, axis=0)


def materialize(params: dict, frozen: jax.Array) -> jax.Array:
    """The trained table itself."""
    del frozen
    return params["table"]


def table_bytes(params: dict, table_shape: tuple[int, int]) -> int:
    """Bytes of the trained table."""
    del table_shape
    return int(params["table"].size * params["table"].dtype.itemsize)
