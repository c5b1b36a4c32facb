"""Contextual students distilled from the teacher's token states and sentence vectors.

A hybrid student (static rows plus a context module: the conv mixer, small attention
layers, or the teacher's own last block carried over) trained only on pooled sentence
vectors sees the same signal as a static student, and learns little word order. Here every
token's output is trained against the teacher's state of that token in context
(``config.objective.token_weight``), alongside the pooled vector, and optionally the
context module's input against a middle layer (``mid_weight``: for a transferred block,
the states it was built to read).

Everything lives in one basis: the principal axes of the teacher's token states on the
first training sentences, at the layer the student's rows stand for (``row_layer``) and the
last. The rows, the cached token states and the
pooled targets are all ``h · P`` (not centred: see :func:`teacher_basis`), so a transferred block can read the rows and be compared
with the teacher's next layer directly. The teacher's states are cached once per sentence
(:mod:`embres.data.token_cache`: float16, memory-mapped, grouped by length), never
computed in the step (see ``bench/token_targets.py`` for the measured trade-off).

The student never sees the template ids (``[CLS]``/``[SEP]``): batches hold each
sentence's own tokens from position 0, exactly as the served model tokenises.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from embres import linalg
from embres import pooling as pooling_lib
from embres.objectives import Plan, common, losses, stages

NAME = "token_distill"
ADAPTERS = ("static", "hybrid", "attention", "transfer", "conv_transfer")
SOURCES = ("text", "tfds", "sentences")
POOLED_TARGETS = ("tokens", "sentence")
ROW_INITS = ("vocab", "corpus")


def row_layer(config: Any, model: Any, adapter: Any) -> int:
    """The hidden-state index the student's rows stand for, in 0..L.

    ``"auto"``: the input of the first transferred block for an adapter that carries the
    teacher's blocks over (``L - layers``), else the last layer.
    """
    n = model.config.num_layers
    layer = config.objective.row_layer
    if layer == "auto":
        layer = n - config.adapter.layers if hasattr(adapter, "from_teacher") else n
    return int(layer) % (n + 1)


def check(config: Any, model: Any, adapter: Any) -> None:
    """Adapter, sizes, losses, layers and data source, before anything is run."""
    from embres import data

    kind = config.adapter.type
    if kind not in ADAPTERS:
        common.refuse_pair(
            NAME,
            kind,
            "it needs token vectors in the basis of the teacher's hidden space",
            ADAPTERS,
        )
    adapter.check_config(config.adapter, (model.config.vocab_size, model.config.hidden_size))
    width = target_width(config, model, adapter)
    if width > model.config.hidden_size:
        raise ValueError(
            f"config.adapter.target_dim={width}; expected at most the teacher's width "
            f"{model.config.hidden_size}"
        )
    if hasattr(adapter, "resolve_sizes"):
        adapter.resolve_sizes(copy.deepcopy(config.adapter), model.config)
    obj = config.objective
    n = model.config.num_layers
    layer = obj.row_layer
    if layer != "auto" and not (isinstance(layer, int) and -(n + 1) <= layer <= n):
        raise ValueError(
            f"config.objective.row_layer={layer!r}; expected 'auto' or an int in -{n + 1}..{n}"
        )
    for key, allowed in (
        ("loss", losses.STATIC_LOSSES),
        ("token_loss", losses.TOKEN_LOSSES),
        ("pooled_target", POOLED_TARGETS),
        ("row_init", ROW_INITS),
        ("row_pooling", ("mean", "token")),
    ):
        if obj[key] not in allowed:
            raise ValueError(f"config.objective.{key}={obj[key]!r}; expected one of {allowed}")
    for key in ("token_weight", "mid_weight", "row_prior"):
        value = obj[key]
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"config.objective.{key}={value!r}; expected a number >= 0")
    if obj.mid_weight and not hasattr(adapter, "apply_states"):
        raise ValueError(
            f"config.objective.mid_weight={obj.mid_weight}: adapter {kind!r} exposes no "
            "middle states (no apply_states); set it to 0"
        )
    spec = data.parse_spec(config.data.source)
    if spec.kind not in SOURCES:
        raise ValueError(
            f"objective {NAME!r} learns context from real sentences; config.data.source="
            f"{config.data.source!r} is a {spec.kind!r} source; expected one of {SOURCES}"
        )
    common.check_sizes(config, model)


def teacher_basis(sample: dict, layers: tuple[int, ...], width: int):
    """(offset [D], basis [D, width]): principal axes of the teacher's states at ``layers``
    over the sample's own tokens (``sample`` from :func:`token_cache.sample_states`).

    Coordinates are *not* centred (``r = h · P``), so a pooled vector keeps the common
    direction the teacher's cosines include; ``offset = μ - P Pᵀ μ`` is the part of the
    states' mean outside the basis: a state is rebuilt as ``r · Pᵀ + offset`` (what a
    transferred block reads).
    """
    real = sample["content"].astype(bool)
    states = np.concatenate([sample["states"][k][real] for k in layers]).astype(np.float64)
    mean, basis = linalg.pca(states, width)
    mean, basis = np.asarray(mean, np.float64), np.asarray(basis, np.float64)
    offset = mean - basis @ (basis.T @ mean)
    return offset.astype(np.float32), basis.astype(np.float32)


def target_width(config: Any, model: Any, adapter: Any) -> int:
    """The width of the student's vectors (the basis's)."""
    shape = (model.config.vocab_size, model.config.hidden_size)
    return int(adapter.output_dim(config.adapter, shape))


def cached_layers(config: Any, start: int, last: int) -> tuple[int, ...]:
    """The hidden-state indices the token cache stores: the last, and the rows' layer where
    the loss (``mid_weight``) or the rows (``row_init="corpus"``) read it."""
    obj = config.objective
    need_start = obj.mid_weight > 0 or obj.row_init == "corpus"
    return tuple(sorted({last, start} if need_start else {last}))


def basis_facts(config: Any, host: Any, corpus_key: dict, start: int, width: int) -> dict:
    """What the basis and the cached states are computed from, exactly: stored in
    the checkpoint so a resume checks its inputs, never a float result (a PCA on another
    backend rounds differently)."""
    return {
        "teacher": str(host.path),
        "dtype": str(config.dtype),
        "heldout": int(config.data.heldout),
        "max_length": int(config.data.max_length),
        "corpus": corpus_key,
        "row_layer": start,
        "basis_layers": sorted({start, host.config.num_layers}),
        "width": width,
        "basis_sentences": int(config.objective.basis_sentences),
    }


def fitted_basis(config: Any, host: Any, corpus_rows, start: int, width: int):
    """(offset, basis, the sample of teacher states, the corpus rows again): the basis is
    fitted on the first ``basis_sentences`` training rows (cached later like the rest)."""
    from embres.data import token_cache

    last = host.config.num_layers
    first = list(itertools.islice(corpus_rows, int(config.objective.basis_sentences)))
    sample = token_cache.sample_states(host, first, range(start, last + 1))
    offset, basis = teacher_basis(sample, tuple(sorted({start, last})), width)
    return offset, basis, sample, itertools.chain(first, corpus_rows)


def token_state_source(config, host, workdir, corpus, basis, layers, process_index, process_count):
    """(source of the cached teacher token states in the basis, the cache's folder): the
    teacher runs over each training sentence once, on process 0, never inside the step.

    ``corpus`` is (facts of the basis's inputs, held-out texts, token-id rows); the cache is
    keyed by those facts and by the basis itself: it holds states in one basis, and a PCA on
    another backend may differ (signs of its axes included).
    """
    from embres.data import token_cache

    facts, held, rows = corpus
    key = {**facts, "basis_sha256": hashlib.sha256(basis.tobytes()).hexdigest()}
    directory = stages.cache_dir(config, workdir, "token_cache")
    token_cache.build_token_cache(  # process 0 builds, every process waits
        host,
        rows,
        directory,
        max_length=config.data.max_length,
        key=key,
        heldout_texts=held,
        mean=np.zeros(basis.shape[0], np.float32),
        basis=basis,
        layers=layers,
        process_index=process_index,
        process_count=process_count,
    )
    source = token_cache.TokenCacheSource(
        directory,
        batch_size=config.batch_size // process_count,
        seed=config.seed,
        process_index=process_index,
        process_count=process_count,
    )
    return source, directory


def initial_rows(config: Any, host: Any, start: int, basis: np.ndarray, cache: Path):
    """The student's rows in the basis, float32 [V, width]: each token through the teacher
    on its own at the rows' layer, or (``row_init="corpus"``) its mean state over the
    cached corpus, pulled towards that row when rare."""
    from embres.data import token_cache

    obj = config.objective
    rows = stages.vocabulary_rows(host, start, obj.row_pooling) @ basis
    if obj.row_init == "corpus":
        rows = token_cache.corpus_rows(cache, start, rows, obj.row_prior)
    return rows


def frozen_arrays(config, host, adapter, offset, basis, sample) -> dict:
    """What the loss reads but never trains: the pooled tokens (``content``), the carried-over
    teacher blocks (``base``), the basis for sentence targets (``projection``)."""
    frozen: dict[str, Any] = {
        "content": common.content_mask(host.tokenizer, host.config.vocab_size)
    }
    if hasattr(adapter, "from_teacher"):  # weights carried over: frozen, updates trained
        frozen["base"] = adapter.from_teacher(host, offset, basis, config.adapter, sample)
    if config.objective.pooled_target == "sentence":
        frozen["projection"] = basis
    return frozen


def student_fn(adapter: Any, host: Any, rows: np.ndarray, base: Any, basis: np.ndarray):
    """``student(params)``: the served table, or the adapter over its merged params."""
    tokenizer, vocab_size = host.tokenizer, host.config.vocab_size
    unk = tokenizer.unk_token_id

    def student(params):
        table = stages.served_table(adapter, params, rows, unk, vocab_size)
        if table is None:
            served = stages.contextual_params(adapter, params, vocab_size, base)
            size = adapter.table_bytes(served, rows.shape)
            out = stages.contextual_student(adapter, served, tokenizer, size)
        else:
            size = adapter.table_bytes(params, rows.shape)
            out = stages.static_student(table, tokenizer, params, size)
        # fidelity in the student's space: the teacher's vectors in the basis
        return stages.with_fidelity(out, lambda vectors: vectors @ basis)

    return student


def export_fn(config: Any, adapter: Any, host: Any, rows: np.ndarray, base: Any):
    """``export(params, directory)``: one export per student kind."""
    tokenizer, vocab_size = host.tokenizer, host.config.vocab_size
    unk = tokenizer.unk_token_id
    meta = {
        "source_model": config.model,
        "target_dim": int(rows.shape[1]),
        "adapter": config.adapter.type,
        "objective": NAME,
    }

    def export(params, directory):
        table = stages.served_table(adapter, params, rows, unk, vocab_size)
        if table is None:
            served = stages.contextual_params(adapter, params, vocab_size, base)
            return stages.export_contextual_student(served, tokenizer, unk, directory, meta)
        return stages.export_static_student(table, tokenizer, directory, meta)

    return export


def prepare(
    config: Any,
    model: Any,
    adapter: Any,
    workdir: Path,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> Plan:
    """The basis, the token-state cache, the rows in the basis, the transferred blocks."""
    host = common.host_model(model)
    width, start = target_width(config, host, adapter), row_layer(config, host, adapter)
    corpus_key, held, corpus_rows = stages.training_corpus(config, host)
    offset, basis, sample, corpus_rows = fitted_basis(config, host, corpus_rows, start, width)
    facts = basis_facts(config, host, corpus_key, start, width)
    layers = cached_layers(config, start, host.config.num_layers)
    corpus = (facts, held, corpus_rows)
    source, cache = token_state_source(
        config, host, workdir, corpus, basis, layers, process_index, process_count
    )
    rows = initial_rows(config, host, start, basis, cache)
    frozen = frozen_arrays(config, host, adapter, offset, basis, sample)
    del sample  # whole hidden states: free them before training
    base = frozen.get("base")  # (absent for an adapter that carries no teacher block over)
    return Plan(
        init_table=rows,
        init_weights=None,  # the rows stand for token states: no SIF scaling
        frozen=frozen,
        source=source,
        loss=make_loss(config, adapter, host.config.num_layers, start),
        in_batch=config.objective.loss in losses.IN_BATCH_LOSSES,
        meta={"objective": NAME, "basis": facts, "layers": list(layers)},
        student=student_fn(adapter, host, rows, base, basis),
        teacher=lambda: stages.teacher_embedder(host, config.eval.batch_size),
        export=export_fn(config, adapter, host, rows, base),
    )


def make_loss(config: Any, adapter: Any, last: int, start: int):
    """The pure loss: pooled vector + token states (+ the context module's input)."""
    obj = config.objective
    kind, temperature, token_kind = obj.loss, obj.temperature, obj.token_loss
    token_weight, mid_weight, pooled_target = obj.token_weight, obj.mid_weight, obj.pooled_target
    states_fn = getattr(adapter, "apply_states", None)

    def loss(params, batch, frozen, rng):
        del rng  # deterministic
        ids = batch["ids"]
        mask = batch["mask"] * frozen["content"][ids].astype(batch["mask"].dtype)
        carried = frozen.get("base")  # the carried-over blocks, when the adapter has them
        if states_fn is not None:
            tokens, inner = states_fn(params, carried, ids, mask)
        else:
            tokens, inner = adapter.apply(params, carried, ids, mask), {}
        teacher_tokens = batch[f"states_{last}"].astype(jnp.float32)
        student = pooling_lib.pool(tokens, mask, "mean")
        if pooled_target == "tokens":
            target = pooling_lib.pool(teacher_tokens, mask, "mean")
        else:
            target = batch["targets"] @ frozen["projection"]
        pooled = jnp.mean(
            losses.matryoshka_loss(student, target, (student.shape[-1],), kind, temperature)
        )
        token = jnp.mean(losses.token_state_loss(tokens, teacher_tokens, mask, token_kind))
        total = pooled + token_weight * token
        aux = {"pooled_loss": pooled, "token_loss": token}
        if mid_weight:
            mid = losses.token_state_loss(
                inner["input"], batch[f"states_{start}"], mask, token_kind
            )
            total = total + mid_weight * jnp.mean(mid)
            aux["mid_loss"] = jnp.mean(mid)
        return total, aux

    return loss
