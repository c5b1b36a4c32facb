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


def attention_mask_bias(
    attention_mask: jax.Array, causal: bool, dtype: jnp.dtype = jnp.float32
) -> jax.Array:
    """Additive bias [batch, 1, q, k]: 0 where a query may attend to a key, a large negative value elsewhere.

    A finite minimum (not -inf) keeps rows with no visible key (left padding under a causal
    mask) finite: they become a uniform average, as in the PyTorch reference, instead of NaN.
    """
    keep = attention_mask[:, None, None, :].astype(bool)
    if causal:
        length = attention_mask.shape[-1]
        keep = keep & jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]
    return jnp.where(keep, 0.0, jnp.finfo(dtype).min).astype(dtype)


def dot_product_attention(
    query: jax.Array, key: jax.Array, value: jax.Array, bias: jax.Array
) -> jax.Array:
    """Scaled dot-product attention on [batch, length, heads, head_dim] inputs.

    Scores and softmax run in float32 whatever the compute dtype; the weighted sum runs in
    the input dtype.
    """
    head_dim = query.shape[-1]
    scores = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
    scores = scores / jnp.sqrt(jnp.float32(head_dim)) + bias
    probs = jax.nn.softmax(scores, axis=-1).astype(value.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, value)


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections (BERT layout)."""

    num_heads: int
    hidden_size: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden_states: jax.Array, bias: jax.Array) -> jax.Array:
        head_dim = self.hidden_size // self.num_heads
        dense = lambda name: nn.Dense(  # noqa: E731 - a local factory reads better here
            self.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype, name=name
        )
        split = lambda x: x.reshape(x.shape[:2] + (self.num_heads, head_dim))  # noqa: E731
        query = split(dense("query")(hidden_states))
        key = split(dense("key")(hidden_states))
        value = split(dense("value")(hidden_states))
        context = dot_product_attention(query, key, value, bias)
        return context.reshape(context.shape[:2] + (self.hidden_size,))
