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


def pool(hidden: jax.Array, mask: jax.Array, pooling: str) -> jax.Array:
    """Pools [batch, length, d] token vectors into [batch, d] (computed in float32).

    Args:
      hidden: token vectors.
      mask: [batch, length], 1 for real tokens and 0 for padding.
      pooling: ``mean`` (over real tokens), ``cls`` (first token), ``last`` (last real token,
        GPT-2's natural summary), or ``max`` (over real tokens).
    """
    check_pooling(pooling)
    hidden = hidden.astype(jnp.float32)
    weights = mask.astype(jnp.float32)[..., None]
    if pooling == "mean":
        # Same clamp as sentence-transformers, so an all-pad row gives zeros, not NaN.
        return (hidden * weights).sum(1) / jnp.maximum(weights.sum(1), 1e-9)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        index = last_token_index(mask)
        return jnp.take_along_axis(hidden, index[:, None, None], axis=1)[:, 0]
    if pooling == "max":
        masked = jnp.where(weights > 0, hidden, -1e9)
        return jnp.where(weights.sum(1) > 0, masked.max(1), 0.0)
    raise ValueError(f"pooling={pooling!r} returns token vectors; it cannot be pooled")


def l2_normalize(vectors: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Scales each row to unit length (zero rows stay zero)."""
    norm = jnp.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / jnp.maximum(norm, eps)
