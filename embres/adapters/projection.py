"""Projection: table rows mapped to ``target_dim`` by a learned affine map ``x W + b``.

``init="pca"`` starts ``W`` from the top principal directions of the (optionally
frequency-weighted) table rows and ``b`` from the centring, so the initial output is the
PCA of the table; ``init="random"`` starts from a scaled Gaussian.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from embres import linalg

INITS = ("pca", "random")

# No params with one row per vocabulary entry: the rows come from the frozen table.
VOCAB_ROWS = ()


def check_config(cfg: Any, table_shape: tuple[int, int]) -> None:
    """Checks ``target_dim`` and ``init``; raises ``ValueError`` naming the key."""
    _, dim = table_shape
    target = getattr(cfg, "target_dim", None)
    if not isinstance(target, int) or target <= 0:
        raise ValueError(
            f"config.adapter.target_dim={target!r}; expected a positive integer "
            f"(the table's width is {dim})"
        )
    init = getattr(cfg, "init", "pca")
    if init not in INITS:
        raise ValueError(f"config.adapter.init={init!r}; expected one of {INITS}")
    if init == "pca" and target > dim:
        raise ValueError(
            f"config.adapter.target_dim={target} exceeds the table width {dim}; PCA init "
            f"needs target_dim <= {dim} (or set config.adapter.init='random')"
        )


def output_dim(cfg: Any, table_shape: tuple[int, int]) -> int:
    """Width of the vectors ``apply`` returns."""
    return cfg.target_dim


def init(rng: jax.Array, rows: jax.Array, cfg: Any, weights: jax.Array | None = None) -> dict:
    """``{"kernel": [d, target_dim], "bias": [target_dim]}`` from PCA of the rows or random."""
    rows = jnp.asarray(rows, jnp.float32)
    dim, target = rows.shape[1], cfg.target_dim
    if getattr(cfg, "init", "pca") == "pca":
        mean, kernel = linalg.pca(rows, target, weights)
        return {"kernel": kernel, "bias": -mean @ kernel}
    kernel = jax.random.normal(rng, (dim, target)) / jnp.sqrt(dim)
    return {"kernel": kernel, "bias": jnp.zeros((target,))}


def apply(params: dict, frozen: jax.Array, ids: jax.Array, mask: jax.Array | None = None):
    """Token vectors [batch, length, target_dim]: ``frozen[ids] · W + b``."""
    del mask
    return jnp.take(frozen, ids, axis=0) @ params["kernel"] + params["bias"]


def materialize(params: dict, frozen: jax.Array) -> jax.Array:
    """The plain [vocab, target_dim] table ``frozen · W + b`` (``frozen``: the source rows)."""
    return frozen @ params["kernel"] + params["bias"]


def table_bytes(params: dict, table_shape: tuple[int, int]) -> int:
    """Bytes of the materialised table (float32): the projection itself is folded in."""
    return int(table_shape[0] * params["kernel"].shape[1] * 4)
