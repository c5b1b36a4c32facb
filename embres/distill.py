"""Vocabulary distillation: a static table from a contextual teacher, with no corpus.

Each vocabulary item is run through the teacher on its own (between the family's special
tokens), its output is pooled into the item's row, rows are weighted by how informative the
token is (SIF weights from a Zipf prior or measured counts), and PCA maps them to
``target_dim``. A sentence vector is then the mean of its tokens' rows.

Where the time goes (all-MiniLM-L6-v2, 30,522 ids, CPU): the teacher's forward over every
item is over 90% of it, and it is compute-bound (about 21 MFLOP per position, three positions
per item), so what is cheap to save is work: items no text can produce (BERT's ``[unusedN]``)
are not run, batches are cut evenly (no padded tail), 512 items per call (fastest per item
on CPU: bigger batches push the feed-forward activations out of cache), and the compiled
forward is shared by every call with the same teacher and settings.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from embres import pooling as pooling_lib
from embres import tokenize
from embres.linalg import pca
from embres.models import LoadedModel

# Items per compiled call. Measured on CPU (single thread, all-MiniLM-L6-v2): 256-512 items
# cost 23.2 s per vocabulary, 1024 items 24.6 s, 64 items 24.8 s.
DEFAULT_BATCH_SIZE = 512


@dataclass
class VocabDistillation:
    """The result of :func:`distill_vocabulary`."""

    table: np.ndarray  # [vocab, target_dim] float32, weights applied; zero rows: no text
    raw: np.ndarray  # [vocab, d] teacher rows before weighting and PCA; zero rows: not run
    weights: np.ndarray  # [vocab] SIF weights
    mean: np.ndarray  # [d] PCA centre
    components: np.ndarray  # [target_dim, d] PCA basis (rows), from embres.linalg.pca
    seconds: float


@dataclasses.dataclass(frozen=True)
class _RowSpec:
    """Everything the compiled forward depends on besides its arrays (hashable, so one
    compilation serves every call, and every load, of the same teacher and settings)."""

    module: Any  # the teacher's flax module (hashable by value: its config and dtypes)
    depth: int | None  # layers run; None: all of them, averaged ("mean")
    pooling: str
    position: int  # the item's own position ("token" pooling)


def _pooled(apply: Callable, spec: _RowSpec, params, batch_ids: jax.Array) -> jax.Array:
    """[batch, d] float32 rows of single items (already wrapped in special tokens)."""
    mask = jnp.ones_like(batch_ids)
    out = apply(
        params, batch_ids, mask, output_hidden_states=spec.depth is None, num_layers=spec.depth
    )
    if spec.depth is None:
        hidden = jnp.mean(jnp.stack(out["hidden_states"][1:]), axis=0)
    else:
        hidden = out["last_hidden_state"]
    if spec.pooling == "token":
        return hidden[:, spec.position].astype(jnp.float32)
    return pooling_lib.pool(hidden, mask, spec.pooling)


@functools.partial(jax.jit, static_argnums=0)
def _module_rows(spec: _RowSpec, params, batch_ids: jax.Array) -> jax.Array:
    """:func:`_pooled` through the bare module: compiled once per spec and batch shape."""
    return _pooled(
        lambda p, *a, **k: spec.module.apply({"params": p}, *a, **k), spec, params, batch_ids
    )


def _row_function(model: LoadedModel, spec: _RowSpec, params) -> Callable:
    """The compiled ``(params, ids) -> rows`` for ``model``.

    A table of exactly ``vocab_size`` rows (every teacher ``load_model`` gives unsharded)
    needs nothing of ``LoadedModel.apply`` but the module, so the shared compilation serves.
    A table padded for a mesh is looked up through ``model.apply``, compiled for this call.
    """
    table = params
    for part in model.table_path:
        table = table[part]
    if table.shape[0] == model.config.vocab_size:
        return functools.partial(_module_rows, spec)
    return jax.jit(functools.partial(_pooled, model.apply, spec))


def _even_batch(n: int, batch_size: int) -> int:
    """Rows per call covering ``n`` rows in as few calls as ``batch_size`` allows, cut evenly:
    the last call then pads fewer than one row per call instead of most of a batch."""
    calls = max(1, -(-n // batch_size))
    return max(1, -(-n // calls))


def _run_batches(forward: Callable, params, ids: np.ndarray, size: int, width: int) -> np.ndarray:
    """Runs ``forward`` over ``ids`` [n, length] in calls of ``size`` rows: float32 [n, width].

    The next call is dispatched before the last one's rows are read back, so the host copy
    and Python overlap the teacher's compute instead of leaving it idle between calls.
    """
    out = np.zeros((len(ids), width), np.float32)
    pending: list[tuple[int, int, jax.Array]] = []
    for start in range(0, len(ids), size):
        chunk = ids[start : start + size]
        # A fresh array per call (a reused buffer could be overwritten while a dispatched
        # call still reads it); a short last call is filled with its first item, a real one.
        batch = np.concatenate([chunk, np.repeat(chunk[:1], size - len(chunk), axis=0)])
        pending.append((start, len(chunk), forward(params, batch)))
        if len(pending) > 1:
            begin, count, rows = pending.pop(0)
            out[begin : begin + count] = np.asarray(rows)[:count]
    for begin, count, rows in pending:
        out[begin : begin + count] = np.asarray(rows)[:count]
    return out


def teacher_token_rows(
    model: LoadedModel,
    layer: int | str = -1,
    pooling: str = "mean",
    batch_size: int = DEFAULT_BATCH_SIZE,
    params=None,
    ids: np.ndarray | None = None,
) -> np.ndarray:
    """The teacher's pooled output for vocabulary items on their own: [vocab or len(ids), d].

    Args:
      model: the teacher.
      layer: a layer index (0 = input embeddings, negative from the end) or ``"mean"`` for the
        average over all layers 1..L.
      pooling: ``mean`` over the item and its special tokens (as sentence-transformers pools a
        one-token text), ``token`` for the item's own position only, or ``last``.
      batch_size: at most this many items per compiled call (the calls are cut evenly, one
        shape, one compilation).
      params: the teacher's params (default ``model.params``).
      ids: the vocabulary ids to run, row i of the result being ``ids[i]``'s; default every
        id, row i being id i's.
    """
    n_layers = model.config.num_layers
    if layer != "mean" and not -(n_layers + 1) <= int(layer) <= n_layers:
        raise ValueError(
            f"layer={layer!r} is out of range; expected -{n_layers + 1}..{n_layers} or 'mean'"
        )
    if pooling not in ("mean", "token", "last"):
        raise ValueError(f"pooling={pooling!r}; expected 'mean', 'token' or 'last'")
    vocab = model.config.vocab_size
    items = np.arange(vocab, dtype=np.int32) if ids is None else np.asarray(ids, np.int32)
    if items.ndim != 1 or (items.size and not 0 <= items.min() <= items.max() < vocab):
        raise ValueError(f"ids must be a 1-d array of ids in 0..{vocab - 1}")
    before, after = tokenize.special_template(model.tokenizer)
    wrapped = np.concatenate(
        [
            np.tile(np.asarray(before, np.int32), (len(items), 1)),
            items[:, None],
            np.tile(np.asarray(after, np.int32), (len(items), 1)),
        ],
        axis=1,
    )
    depth = None if layer == "mean" else int(layer) % (n_layers + 1)
    spec = _RowSpec(model.module, depth, pooling, len(before))
    params = model.params if params is None else params
    width = model.config.hidden_size
    if not len(items):
        return np.zeros((0, width), np.float32)
    size = _even_batch(len(items), batch_size)
    return _run_batches(_row_function(model, spec, params), params, wrapped, size, width)


def text_token_mask(model: LoadedModel) -> np.ndarray:
    """Boolean [vocab]: ids a text can tokenise to, the rows a static model ever reads.

    False for ids past the tokenizer (a table padded beyond the vocabulary) and for
    placeholders (``[unusedN]``, ...) that are not added tokens and whose own text does not
    tokenise to them (BERT's ``[unused5]`` splits into ``[``, ``unused``, ``##5``, ``]``).
    Special and added tokens stay: ``[UNK]`` stands for unknown characters in any text.
    """
    tokenizer = model.tokenizer
    vocab = model.config.vocab_size
    known = min(vocab, len(tokenizer))
    mask = np.zeros(vocab, bool)
    mask[:known] = True
    names = tokenizer.convert_ids_to_tokens(list(range(known)))
    added = set(tokenizer.get_added_vocab().values()) | set(tokenizer.all_special_ids)
    placeholders = [
        i
        for i, name in enumerate(names)
        if name is not None and i not in added and tokenize.PLACEHOLDER_TOKEN.fullmatch(name)
    ]
    if placeholders:
        texts = [tokenizer.convert_tokens_to_string([names[i]]) for i in placeholders]
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        for i, pieces in zip(placeholders, encoded, strict=True):
            mask[i] = i in pieces
    return mask


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

    Rows of ids no text tokenises to (:func:`text_token_mask`) are zeros: they are never
    read, so the teacher does not run them.

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
    # Rows no text can reach are never read: not running them is 3% of BERT's forward.
    reachable = text_token_mask(model)
    raw = np.zeros((model.config.vocab_size, width), np.float32)
    raw[reachable] = teacher_token_rows(
        model, layer=layer, pooling=pooling, ids=np.flatnonzero(reachable)
    )
    usable = usable_tokens(model)  # a subset of the reachable rows
    mean, basis = pca(raw[usable], target_dim)
    mean, components = mean.astype(np.float32), basis.T.astype(np.float32)
    if sif_coefficient is None:
        sif_coefficient = 1e-3 if counts is not None else 1e-4
    weights = sif_weights(raw.shape[0], sif_coefficient, counts, usable)
    table = ((raw - mean) @ components.T) * weights[:, None]
    table[~reachable] = 0.0
    return VocabDistillation(
        table=table.astype(np.float32),
        raw=raw,
        weights=weights,
        mean=mean,
        components=components,
        seconds=time.perf_counter() - start,
    )
