"""Pooling token vectors into sentence vectors, honouring the attention mask."""

from __future__ import annotations

import jax
import jax.numpy as jnp

POOLINGS = ("mean", "cls", "last", "max", "none")


def check_pooling(pooling: str) -> str:
    """Returns ``pooling`` if known, else raises naming the accepted values."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r} is not supported; expected one of {POOLINGS}")
    return pooling


def last_token_index(mask: jax.Array) -> jax.Array:
    """Index of the last real token in each row, for right or left padding (0 if none)."""
    positions = jnp.arange(mask.shape[-1])
    return jnp.max(jnp.where(mask.astype(bool), positions, 0), axis=-1)


def first_token_index(mask: jax.Array) -> jax.Array:
    """Index of the first real token in each row, for right or left padding (0 if none)."""
    return jnp.argmax(mask.astype(bool), axis=-1)


def pool(hidden: jax.Array, mask: jax.Array, pooling: str) -> jax.Array:
    """Pools [batch, length, d] token vectors into [batch, d] (computed in float32).

    Padded positions are left out with ``where``, never multiplied by a zero mask, so they
    cannot reach the result even if they hold NaN or inf; a row with no real token (a row
    that only fills a bucketed batch) gives zeros whatever the pooling.

    Args:
      hidden: token vectors.
      mask: [batch, length], 1 for real tokens and 0 for padding.
      pooling: ``mean`` (over real tokens), ``cls`` (first real token: position 0 with right
        padding), ``last`` (last real token, GPT-2's natural summary), or ``max`` (over real
        tokens).
    """
    check_pooling(pooling)
    hidden = hidden.astype(jnp.float32)
    real = mask.astype(bool)[..., None]
    count = real.sum(1).astype(jnp.float32)
    if pooling == "mean":
        # Same clamp as sentence-transformers, so an all-pad row gives zeros, not NaN.
        return jnp.where(real, hidden, 0.0).sum(1) / jnp.maximum(count, 1e-9)
    if pooling in ("cls", "last"):
        index = first_token_index(mask) if pooling == "cls" else last_token_index(mask)
        picked = jnp.take_along_axis(hidden, index[:, None, None], axis=1)[:, 0]
        return jnp.where(count > 0, picked, 0.0)
    if pooling == "max":
        return jnp.where(count > 0, jnp.where(real, hidden, -jnp.inf).max(1), 0.0)
    raise ValueError(f"pooling={pooling!r} returns token vectors; it cannot be pooled")


def l2_normalize(vectors: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Scales each row to unit length (zero rows stay zero)."""
    norm = jnp.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / jnp.maximum(norm, eps)
