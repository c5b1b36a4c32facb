"""Building blocks shared by the model ports: attention, LayerNorm, activation and dtype policy.

Dtype policy: every port computes in ``dtype`` (float32, bfloat16 or float16) while keeping its
parameters in ``param_dtype`` (float32 unless asked). Three things always run in float32,
whatever ``dtype``: LayerNorm (statistics and normalisation, :class:`LayerNorm`), the
attention softmax, and pooling (:mod:`embres.pooling`). That is what keeps bfloat16 sentence
vectors within cosine 0.999 of float32 (``tests/test_bf16.py``, ``bench/bf16_cosine.py``).

Attention (:func:`attend`) runs one of four implementations, the module field ``attention``:

* ``"reference"``: :func:`reference_attention`, plain einsums; the definition the others are
  tested against (``tests/test_attention.py``).
* ``"xla"``: ``jax.nn.dot_product_attention(implementation="xla")``.
* ``"cudnn"``: ``jax.nn.dot_product_attention(implementation="cudnn")``, cuDNN's fused kernel.
  Its errors are raised, never swallowed, with the setting that turns it off.
* ``"auto"`` (the default): cuDNN where :func:`cudnn_unsupported` finds nothing against it
  and the padding comes as lengths (below), XLA everywhere else.

How padding reaches attention depends on what the caller promises. With ``right_padded=True``
(each mask row is ones then zeros, as ``embres.tokenize`` pads) it goes in as sequence
lengths, which cuDNN turns into skipped work; otherwise the boolean mask goes in as ``mask=``,
exact for any mask (left padding included). Both forms keep two guarantees:

* a NaN or inf at a padded position never reaches a real one;
* a query with no visible key (a pad under a causal mask with left padding, a row that is all
  padding) gets zeros, not NaN.

Which implementation ran is logged to ``embres.models.layers`` at INFO, once per shape.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

log = logging.getLogger(__name__)

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

ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn", "reference")


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


class LayerNorm(nn.LayerNorm):
    """Flax's LayerNorm computed in float32 whatever ``dtype``; the result is cast to ``dtype``.

    Flax (0.12) already takes the statistics in float32 and normalises in float32 when the
    statistics are; casting the input first makes that explicit rather than a consequence of
    flax's promotion rules of the day. Parameters keep flax's names (``scale``, ``bias``), so
    checkpoints load unchanged.
    """

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        out_dtype = self.dtype or x.dtype
        return super().__call__(x.astype(jnp.float32), mask=mask).astype(out_dtype)


class AttentionMask(NamedTuple):
    """Which keys each query may see, in the forms the implementations take.

    Attributes:
      keep: boolean [batch, 1, 1 or q, k], True where a query may attend to a key (causality
        included); exact for any padding.
      lengths: int32 [batch], real tokens per row, when the caller promised that every row
        is a prefix of ones (right padding); None otherwise.
      causal: queries see no later key.
    """

    keep: jax.Array
    lengths: jax.Array | None
    causal: bool

    @classmethod
    def from_padding(
        cls, attention_mask: jax.Array, causal: bool, right_padded: bool = False
    ) -> AttentionMask:
        """Builds the mask of a [batch, length] padding mask (1 = real token).

        ``right_padded=True`` is a promise about ``attention_mask`` that is not checked (a
        check would cost a device-to-host sync per batch): a row like ``[0, 1, 1]`` would be
        read as two real tokens at positions 0 and 1. Leave it False for masks you did not
        build with ``embres.tokenize``.
        """
        keep = attention_keep(attention_mask, causal)
        lengths = None
        if right_padded:
            lengths = attention_mask.astype(bool).sum(-1, dtype=jnp.int32)
        return cls(keep, lengths, causal)


def attention_keep(attention_mask: jax.Array, causal: bool) -> jax.Array:
    """Boolean [batch, 1, q, k] (q is 1 when not causal): True where a query may see a key."""
    keep = attention_mask[:, None, None, :].astype(bool)
    if causal:
        length = attention_mask.shape[-1]
        keep = keep & jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]
    return keep


def _zero_where_not(real: jax.Array, x: jax.Array) -> jax.Array:
    """[batch, length, heads, head_dim] ``x`` with zeros where ``real`` [batch, length] is False."""
    return jnp.where(real[:, :, None, None], x, jnp.zeros((), x.dtype))


def reference_attention(
    query: jax.Array, key: jax.Array, value: jax.Array, keep: jax.Array
) -> jax.Array:
    """Scaled dot-product attention on [batch, length, heads, head_dim] inputs, in einsums.

    Scores and softmax run in float32 whatever the compute dtype; the weighted sum runs in
    the input dtype. Masked scores are *replaced* (``where``), not offset by a large negative
    bias, and values no query may see are zeroed: a NaN or inf at a padded position then
    never reaches a real one (NaN plus a bias is NaN, and zero weight times NaN is NaN).
    A query with no visible key gets zeros (its softmax would spread evenly over keys
    other queries see).
    """
    head_dim = query.shape[-1]
    scores = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
    scores = jnp.where(keep, scores / jnp.sqrt(jnp.float32(head_dim)), jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(value.dtype)
    seen = jnp.any(keep, axis=2)[:, 0]  # [batch, k]: some query sees the key
    context = jnp.einsum("bhqk,bkhd->bqhd", probs, _zero_where_not(seen, value))
    sees = jnp.any(keep, axis=3)[:, 0]  # [batch, q or 1]: the query sees some key
    return _zero_where_not(jnp.broadcast_to(sees, context.shape[:2]), context)


def fused_attention(
    query: jax.Array, key: jax.Array, value: jax.Array, mask: AttentionMask, implementation: str
) -> jax.Array:
    """``jax.nn.dot_product_attention`` (``"xla"`` or ``"cudnn"``) with the guarantees above.

    With ``mask.lengths`` the padding goes in as sequence lengths (and ``is_causal``), the
    form cuDNN skips work for; otherwise ``mask.keep`` goes in as ``mask=``. Either way keys
    and values no real query may see are zeroed first (jax's implementations multiply them
    by a zero weight, and zero times NaN is NaN), and queries that see nothing (past their
    row's length, or with no visible key) are zeroed after: jax's XLA path would give them
    the mean of all values, and cuDNN leaves what it leaves.
    """
    batch, length = query.shape[:2]
    if mask.lengths is not None:
        real = jnp.arange(length)[None, :] < mask.lengths[:, None]  # [batch, length]
        context = jax.nn.dot_product_attention(
            query,
            _zero_where_not(real, key),
            _zero_where_not(real, value),
            is_causal=mask.causal,
            query_seq_lengths=mask.lengths,
            key_value_seq_lengths=mask.lengths,
            implementation=implementation,
        )
        return _zero_where_not(real, context)
    # cuDNN wants the mask as a full [batch, 1, q, k] (it becomes an additive bias there).
    keep = jnp.broadcast_to(mask.keep, (batch, 1, length, length))
    seen, sees = jnp.any(keep, axis=2)[:, 0], jnp.any(keep, axis=3)[:, 0]
    context = jax.nn.dot_product_attention(
        query,
        _zero_where_not(seen, key),
        _zero_where_not(seen, value),
        mask=keep,
        is_causal=mask.causal,
        implementation=implementation,
    )
    return _zero_where_not(sees, context)


def _compute_capability(device: jax.Device) -> tuple[int, int] | None:
    """A CUDA device's compute capability as (major, minor); None for any other device."""
    if device.platform != "gpu":
        return None
    try:
        major, minor = str(device.compute_capability).split(".")[:2]
        return int(major), int(minor)
    except (AttributeError, ValueError):  # ROCm names its GPUs "gfx942": no cuDNN there
        return None


def cudnn_unsupported(
    dtype: jnp.dtype, head_dim: int, device: jax.Device | None = None
) -> str | None:
    """Why cuDNN's fused attention cannot run here (a phrase), or None when it can.

    It needs a CUDA GPU (``device``, default the default backend's first device), bfloat16 or
    float16 inputs, and a head dim that is a multiple of 8 and at most 256 (128 before
    Hopper). jax checks the same in ``jax/_src/cudnn/fused_attention_stablehlo.py``, but only
    by raising, which ``"auto"`` must not do.
    """
    device = jax.devices()[0] if device is None else device
    capability = _compute_capability(device)
    if capability is None:
        return f"the backend is {device.platform}, not a CUDA GPU"
    if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        return f"the compute dtype is {jnp.dtype(dtype).name}, not bfloat16 or float16"
    limit = 256 if capability >= (9, 0) else 128
    if head_dim % 8 or head_dim > limit:
        return f"head dim {head_dim} is not a multiple of 8 up to {limit}"
    return None


def choose_attention(
    requested: str, dtype: jnp.dtype, head_dim: int, right_padded: bool
) -> tuple[str, str]:
    """The implementation ``attention=requested`` runs here, and why (for the log).

    ``"auto"`` takes cuDNN when :func:`cudnn_unsupported` finds nothing against it and the
    padding comes as lengths (``right_padded``): an arbitrary mask would reach cuDNN as an
    additive bias, a path auto does not bet on. Everything else runs XLA. Any other value is
    taken as asked.

    Raises:
      ValueError: for a value not in :data:`ATTENTION_IMPLEMENTATIONS`.
    """
    if requested not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"attention={requested!r} is not supported; expected one of {ATTENTION_IMPLEMENTATIONS}"
        )
    if requested != "auto":
        return requested, "asked for"
    problem = cudnn_unsupported(dtype, head_dim)
    if problem is None and not right_padded:
        problem = "the padding is not promised right-aligned (right_padded=False)"
    if problem is None:
        return "cudnn", "auto: CUDA GPU, half precision, supported head dim, lengths"
    return "xla", f"auto: no cuDNN because {problem}"


@functools.cache
def _log_choice(implementation: str, reason: str, shape: tuple[int, ...], dtype: str) -> None:
    """Logs the implementation once per (choice, shape, dtype): traced once per layer."""
    log.info("attention %s for %s %s (%s)", implementation, dtype, shape, reason)


def attend(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    mask: AttentionMask,
    attention: str = "auto",
) -> jax.Array:
    """Multi-head attention on [batch, length, heads, head_dim] inputs; see the module docstring.

    Raises:
      RuntimeError: cuDNN was chosen (asked for, or by ``"auto"``) and failed while tracing;
        the message names ``attention="xla"``, the setting that turns it off.
    """
    chosen, reason = choose_attention(
        attention, query.dtype, query.shape[-1], mask.lengths is not None
    )
    _log_choice(chosen, reason, tuple(query.shape), jnp.dtype(query.dtype).name)
    if chosen == "reference":
        return reference_attention(query, key, value, mask.keep)
    if chosen == "xla":
        return fused_attention(query, key, value, mask, "xla")
    try:
        return fused_attention(query, key, value, mask, "cudnn")
    except Exception as error:  # re-raised with the way out; never a silent fallback
        raise RuntimeError(
            f"cuDNN attention ({reason}) failed for {jnp.dtype(query.dtype).name} query "
            f"{tuple(query.shape)}: {error}. Turn it off with the model's attention='xla' "
            "setting, e.g. loaded.module = loaded.module.clone(attention='xla')."
        ) from error


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections (BERT layout)."""

    num_heads: int
    hidden_size: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    attention: str = "auto"

    @nn.compact
    def __call__(self, hidden_states: jax.Array, mask: AttentionMask) -> jax.Array:
        head_dim = self.hidden_size // self.num_heads
        dense = lambda name: nn.Dense(  # noqa: E731 - a local factory reads better here
            self.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype, name=name
        )
        split = lambda x: x.reshape(x.shape[:2] + (self.num_heads, head_dim))  # noqa: E731
        query = split(dense("query")(hidden_states))
        key = split(dense("key")(hidden_states))
        value = split(dense("value")(hidden_states))
        context = attend(query, key, value, mask, self.attention)
        return context.reshape(context.shape[:2] + (self.hidden_size,))
