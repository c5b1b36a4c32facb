"""Losses, each a pure function of arrays returning one value per example.

A loss that is a mean of per-example values, each depending on its own example only
(``cosine_distance``, ``mse``, ``hidden_states_loss``, ``pooled_loss``), gives the same
global mean on the jit path (whole batch) and the pmap path (``lax.pmean`` of shard
means). The in-batch losses (``similarity_loss``, ``contrastive_loss``) compare each
example with the others in its batch, so a shard sees other negatives than the whole batch:
objectives that use them report ``in_batch`` and the pmap path refuses them.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def _normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    # Not x / max(norm(x), eps): the norm's gradient at a zero row is 0/0, and a padded
    # token's zero vector (masked out of the loss) would still turn every gradient NaN.
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(x), -1, keepdims=True), eps * eps))


def cosine_distance(student: jax.Array, teacher: jax.Array) -> jax.Array:
    """``1 - cos`` per row: [batch, d] pairs -> [batch]."""
    return 1.0 - jnp.sum(_normalize(student) * _normalize(teacher), axis=-1)


def mse(student: jax.Array, teacher: jax.Array) -> jax.Array:
    """Mean squared error over the last axis: [..., d] -> [...]."""
    return jnp.mean(jnp.square(student - teacher), axis=-1)


def masked_token_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of [batch, length] values over each row's real tokens -> [batch]."""
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)


def hidden_states_loss(
    student_states: Sequence[jax.Array],
    teacher_states: Sequence[jax.Array],
    mask: jax.Array,
    layers: Sequence[int],
    cosine_weight: float = 1.0,
    mse_weight: float = 1.0,
) -> jax.Array:
    """Per-example token-level distillation of the chosen layers -> [batch].

    Each layer contributes ``cosine_weight · (1 - cos) + mse_weight · mse`` per real token,
    averaged over tokens and layers.
    """
    total = 0.0
    for k in layers:
        s, t = student_states[k].astype(jnp.float32), teacher_states[k].astype(jnp.float32)
        per_token = cosine_weight * (1.0 - jnp.sum(_normalize(s) * _normalize(t), -1))
        per_token = per_token + mse_weight * mse(s, t)
        total = total + masked_token_mean(per_token, mask)
    return total / max(len(layers), 1)


TOKEN_LOSSES = ("mse", "cosine")


def token_state_loss(
    student: jax.Array, teacher: jax.Array, mask: jax.Array, kind: str = "mse"
) -> jax.Array:
    """Per-example distance of token states [batch, length, d] over real tokens -> [batch].

    ``mse``: squared error relative to the teacher's mean squared norm (scale-free, and it
    matches the states' norms, which a mean pooling weighs tokens by); ``cosine``: mean
    ``1 - cos`` per token.
    """
    s, t = student.astype(jnp.float32), teacher.astype(jnp.float32)
    if kind == "cosine":
        return masked_token_mean(1.0 - jnp.sum(_normalize(s) * _normalize(t), -1), mask)
    if kind != "mse":
        raise ValueError(f"config.objective.token_loss={kind!r}; expected one of {TOKEN_LOSSES}")
    error = masked_token_mean(jnp.sum(jnp.square(s - t), -1), mask)
    return error / jnp.maximum(masked_token_mean(jnp.sum(jnp.square(t), -1), mask), 1e-12)


def similarity_loss(student: jax.Array, teacher: jax.Array) -> jax.Array:
    """Per-example MSE between in-batch cosine-similarity rows -> [batch].

    Width-agnostic, so a student narrower than its teacher can match its geometry.
    """
    s, t = _normalize(student), _normalize(teacher)
    return jnp.mean(jnp.square(s @ s.T - t @ t.T), axis=-1)


def pooled_loss(
    student: jax.Array, teacher: jax.Array, cosine_weight: float = 1.0, mse_weight: float = 0.0
) -> jax.Array:
    """Per-example sentence-vector distillation -> [batch]."""
    return cosine_weight * cosine_distance(student, teacher) + mse_weight * mse(student, teacher)


STATIC_LOSSES = ("cosine", "mse", "contrastive")
IN_BATCH_LOSSES = ("contrastive",)


def contrastive_loss(
    student: jax.Array, teacher: jax.Array, temperature: float = 0.05
) -> jax.Array:
    """In-batch InfoNCE: each student row must pick its own teacher row -> [batch]."""
    logits = _normalize(student) @ _normalize(teacher).T / temperature
    return -jnp.diagonal(jax.nn.log_softmax(logits, axis=-1))


def matryoshka_loss(
    student: jax.Array,
    teacher: jax.Array,
    dims: Sequence[int],
    kind: str = "cosine",
    temperature: float = 0.05,
) -> jax.Array:
    """Mean over nested prefixes ``[:, :m]`` (m in ``dims``) of a sentence loss -> [batch].

    With ``dims=(d,)`` it is the plain loss; with (32, 64, ..., d) every prefix is trained to
    stand alone, so the table can be truncated after training.
    """
    if kind not in STATIC_LOSSES:
        raise ValueError(f"config.objective.loss={kind!r}; expected one of {STATIC_LOSSES}")
    total = 0.0
    for m in dims:
        s, t = student[:, :m], teacher[:, :m]
        if kind == "cosine":
            total = total + cosine_distance(s, t)
        elif kind == "mse":
            total = total + mse(_normalize(s), _normalize(t))
        else:
            total = total + contrastive_loss(s, t, temperature)
    return total / len(dims)


PAIR_LOSSES = ("cosent", "cosine_mse")


def cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
    """Row-wise cosine of [batch, d] pairs -> [batch]."""
    return jnp.sum(_normalize(a) * _normalize(b), axis=-1)


def cosent_loss(cosines: jax.Array, scores: jax.Array, scale: float = 20.0) -> jax.Array:
    """CoSENT: every pair scored higher must have the higher cosine -> scalar (in-batch).

    ``log(1 + sum over (i, j) with score_i > score_j of exp(scale · (cos_j - cos_i)))``; it
    depends only on the order of the scores, so their range does not matter.
    """
    diff = scale * (cosines[None, :] - cosines[:, None])  # [i, j] = s·(cos_j - cos_i)
    ordered = scores[:, None] > scores[None, :]
    diff = jnp.where(ordered, diff, -jnp.inf)
    flat = jnp.concatenate([jnp.zeros((1,), diff.dtype), diff.reshape(-1)])
    return jax.nn.logsumexp(flat)


def cosine_mse_loss(cosines: jax.Array, scores: jax.Array) -> jax.Array:
    """Per-pair ``(cos - score)^2`` -> [batch]; the scores are in the cosine's range (a scored
    source rescales its own, e.g. STS-B's 0-5 to [0, 1])."""
    return jnp.square(cosines - scores)
