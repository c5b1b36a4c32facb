"""Vocabulary distillation: a static table from a contextual teacher, with no corpus.

Each vocabulary item is run through the teacher on its own (between the family's special
tokens), its output is pooled into the item's row, rows are weighted by how informative the
token is (SIF weights from a Zipf prior or measured counts), and PCA maps them to
``target_dim``. A sentence vector is then the mean of its tokens' rows.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from embres import pooling as pooling_lib
from embres import tokenize
from embres.linalg import pca
from embres.models import LoadedModel


@dataclass
class VocabDistillation:
    """The result of :func:`distill_vocabulary`."""

    table: np.ndarray  # [vocab, target_dim] float32, weights applied
    raw: np.ndarray  # [vocab, d] teacher rows before weighting and PCA
    weights: np.ndarray  # [vocab] SIF weights
    mean: np.ndarray  # [d] PCA centre
    components: np.ndarray  # [target_dim, d] PCA basis (rows), from embres.linalg.pca
    seconds: float


def teacher_token_rows(
    model: LoadedModel,
    layer: int | str = -1,
    pooling: str = "mean",
    batch_size: int = 1024,
    params=None,
) -> np.ndarray:
    """The teacher's pooled output for every vocabulary item on its own: [vocab, d].

    Args:
      model: the teacher.
      layer: a layer index (0 = input embeddings, negative from the end) or ``"mean"`` for the
        average over all layers 1..L.
      pooling: ``mean`` over the item and its special tokens (as sentence-transformers pools a
        one-token text), ``token`` for the item's own position only, or ``last``.
      batch_size: rows per compiled call (one shape, one compilation).
    """
    n_layers = model.config.num_layers
    if layer != "mean" and not -(n_layers + 1) <= int(layer) <= n_layers:
        raise ValueError(
            f"layer={layer!r} is out of range; expected -{n_layers + 1}..{n_layers} or 'mean'"
        )
    if pooling not in ("mean", "token", "last"):
        raise ValueError(f"pooling={pooling!r}; expected 'mean', 'token' or 'last'")
    before, after = tokenize.special_template(model.tokenizer)
    vocab = model.config.vocab_size
    ids = np.concatenate(
        [
            np.tile(np.asarray(before, np.int32), (vocab, 1)),
            np.arange(vocab, dtype=np.int32)[:, None],
            np.tile(np.asarray(after, np.int32), (vocab, 1)),
        ],
        axis=1,
    )
    position = len(before)
    depth = None if layer == "mean" else int(layer) % (n_layers + 1)
    params = model.params if params is None else params

    @jax.jit
    def rows(p, batch_ids):
        mask = jnp.ones_like(batch_ids)
        out = model.apply(
            p, batch_ids, mask, output_hidden_states=layer == "mean", num_layers=depth
        )
        if layer == "mean":
            hidden = jnp.mean(jnp.stack(out["hidden_states"][1:]), axis=0)
        else:
            hidden = out["last_hidden_state"]
        if pooling == "token":
            return hidden[:, position].astype(jnp.float32)
        return pooling_lib.pool(hidden, mask, pooling)

    out = np.zeros((vocab, model.config.hidden_size), np.float32)
    padded = np.zeros((batch_size, ids.shape[1]), np.int32)
    for start in range(0, vocab, batch_size):
        chunk = ids[start : start + batch_size]
        padded[: len(chunk)] = chunk
        out[start : start + len(chunk)] = np.asarray(rows(params, padded))[: len(chunk)]
    return out


def usable_tokens(model: LoadedModel) -> np.ndarray:
    """Boolean [vocab]: :func:`embres.tokenize.usable_token_mask` of the model's tokenizer."""
    return tokenize.usable_token_mask(model.tokenizer, model.config.vocab_size)


def sif_weights(
    vocab_size: int,
    coefficient: float = 1e-4,
    counts: np.ndarray | None = None,
    usable: np.ndarray | None = None,
) -> np.ndarray:
    """SIF weights a / (a + p(token)).

    ``p`` comes from measured ``counts`` (add-one smoothed) when given, else from the Zipf
    prior over the rank of each usable token id (:func:`embres.tokenize.zipf_prior`, the
    distribution the corpus-free ``vocab`` source samples from).
    """
    if not 0 < coefficient < 1:
        raise ValueError(f"coefficient={coefficient}; expected a value in (0, 1)")
    usable = np.ones(vocab_size, bool) if usable is None else usable
    if counts is not None:
        if counts.shape != (vocab_size,):
            raise ValueError(f"counts has shape {counts.shape}; expected ({vocab_size},)")
        prob = (counts + 1.0) / (counts.sum() + vocab_size)
    else:
        prob = tokenize.zipf_prior(usable)
    return (coefficient / (coefficient + prob)).astype(np.float32)


def token_counts(tokenizer, texts: Iterable[str], vocab_size: int) -> np.ndarray:
    """How often each token id occurs in ``texts`` (no special tokens)."""
    counts = np.zeros(vocab_size, np.int64)
    batch: list[str] = []

    def flush():
        for row in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            np.add.at(counts, np.asarray(row, np.int64), 1)
        batch.clear()

    for text in texts:
        batch.append(text)
        if len(batch) == 4096:
            flush()
    if batch:
        flush()
    return counts


def distill_vocabulary(
    model: LoadedModel,
    target_dim: int = 256,
    layer: int | str = -1,
    pooling: str = "mean",
    sif_coefficient: float | None = None,
    counts: np.ndarray | None = None,
) -> VocabDistillation:
    """Distils a static [vocab, target_dim] table from the teacher without any corpus.

    Args:
      model: the teacher.
      target_dim: width of the table (PCA components kept).
      layer: teacher layer, or ``"mean"`` for the average of all blocks.
      pooling: see :func:`teacher_token_rows`.
      sif_coefficient: SIF ``a``; default 1e-3 with measured ``counts``, else 1e-4 (tuned on
        STS-B dev for all-MiniLM-L6-v2).
      counts: measured token frequencies (:func:`token_counts`); a Zipf prior when None.
    """
    width = model.config.hidden_size
    if not 0 < target_dim <= width:  # before the teacher runs over the whole vocabulary
        raise ValueError(f"target_dim={target_dim}; expected 1..{width} for a {width}-d teacher")
    start = time.perf_counter()
    raw = teacher_token_rows(model, layer=layer, pooling=pooling)
    usable = usable_tokens(model)
    mean, basis = pca(raw[usable], target_dim)
    mean, components = mean.astype(np.float32), basis.T.astype(np.float32)
    if sif_coefficient is None:
        sif_coefficient = 1e-3 if counts is not None else 1e-4
    weights = sif_weights(raw.shape[0], sif_coefficient, counts, usable)
    table = ((raw - mean) @ components.T) * weights[:, None]
    return VocabDistillation(
        table=table.astype(np.float32),
        raw=raw,
        weights=weights,
        mean=mean,
        components=components,
        seconds=time.perf_counter() - start,
    )
