"""Building blocks shared by the model ports: attention, MLP, activation and dtype policy.

Every port computes in ``dtype`` (float32 or bfloat16) while keeping its parameters in
``param_dtype`` (float32 unless asked). Softmax statistics are always taken in float32,
which is what keeps bf16 extraction within cosine 0.999 of float32.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    # Hugging Face's "gelu" is the exact erf form; "gelu_new" is GPT-2's tanh form.
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def resolve_dtype(dtype: str | jnp.dtype | None) -> jnp.dtype:
    """Turns ``"bfloat16"``/``jnp.bfloat16``/None into a dtype; raises on anything else."""
    if dtype is None:
        return jnp.float32
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is not supported; expected one of {sorted(DTYPES)}")
        return DTYPES[dtype]
    return jnp.dtype(dtype)


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Looks up a Hugging Face activation name (``hidden_act``/``activation_function``)."""
    if name not in ACTIVATIONS:
        raise ValueError(
            f"activation {name!r} is not supported; expected one of {sorted(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]


def valid_id(token_id: int | None, vocab_size: int) -> int:
    """``token_id`` if it is a row of a ``vocab_size``-row table, else 0 (always a row)."""
    return int(token_id) if token_id is not None and 0 <= token_id < vocab_size else 0


def pad_ids(input_ids: jax.Array, attention_mask: jax.Array, pad_id: int) -> jax.Array:
    """``input_ids`` with ``pad_id`` (a row of the table) at every padded position.

    Whatever a caller pads with (an end-of-text id past a small table, -1, ...), the table
    lookup then never leaves the table: JAX fills an out-of-bounds gather with NaN instead of
    raising.
    """
    return jnp.where(attention_mask.astype(bool), input_ids, pad_id)


def zero_padding(vectors: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """[batch, length, d] input vectors with zeros at padded positions.

    Every path into a port (its own table, a table padded for sharding, an adapter's
    ``inputs_embeds``) then gives padded positions the same finite input, so their outputs
    are finite and the same whichever path ran; real positions never see them anyway.
    """
    return jnp.where(attention_mask.astype(bool)[..., None], vectors, jnp.zeros((), vectors.dtype))


def attention_keep(attention_mask: jax.Array, causal: bool) -> jax.Array:
    """Boolean [batch, 1, q, k]: True where a query may attend to a key."""
    keep = attention_mask[:, None, None, :].astype(bool)
    if causal:
        length = attention_mask.shape[-1]
        keep = keep & jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]
    return keep


def dot_product_attention(
    query: jax.Array, key: jax.Array, value: jax.Array, keep: jax.Array
) -> jax.Array:
    """Scaled dot-product attention on [batch, length, heads, head_dim] inputs.

    Scores and softmax run in float32 whatever the compute dtype; the weighted sum runs in
    the input dtype. Masked scores are *replaced* (``where``), not offset by a large negative
    bias, and values no query may see are zeroed: a NaN or inf at a padded position then
    never reaches a real one (NaN plus a bias is NaN, and zero weight times NaN is NaN).
    A query with no visible key (a pad under a causal mask with left padding) gets zeros
    instead of NaN.
    """
    head_dim = query.shape[-1]
    scores = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
    scores = jnp.where(keep, scores / jnp.sqrt(jnp.float32(head_dim)), jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(value.dtype)
    seen = jnp.any(keep, axis=2)[:, 0, :, None, None]  # [batch, k, 1, 1]: some query sees it
    value = jnp.where(seen, value, jnp.zeros((), value.dtype))
    return jnp.einsum("bhqk,bkhd->bqhd", probs, value)


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections (BERT layout)."""

    num_heads: int
    hidden_size: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden_states: jax.Array, keep: jax.Array) -> jax.Array:
        head_dim = self.hidden_size // self.num_heads
        dense = lambda name: nn.Dense(  # noqa: E731 - a local factory reads better here
            self.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype, name=name
        )
        split = lambda x: x.reshape(x.shape[:2] + (self.num_heads, head_dim))  # noqa: E731
        query = split(dense("query")(hidden_states))
        key = split(dense("key")(hidden_states))
        value = split(dense("value")(hidden_states))
        context = dot_product_attention(query, key, value, keep)
        return context.reshape(context.shape[:2] + (self.hidden_size,))
