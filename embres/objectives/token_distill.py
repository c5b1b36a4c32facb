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

from embres import linalg, tokenize
from embres import pooling as pooling_lib
from embres.objectives import Plan, common, losses, static_distill

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
    layer = config.objective.get("row_layer", "auto")
    if layer == "auto":
        layer = n - config.adapter.get("layers", 1) if hasattr(adapter, "from_teacher") else n
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
    shape = (model.config.vocab_size, model.config.hidden_size)
    adapter.check_config(config.adapter, shape)
    width = int(adapter.output_dim(config.adapter, shape))
    if width > model.config.hidden_size:
        raise ValueError(
            f"config.adapter.target_dim={width}; expected at most the teacher's width "
            f"{model.config.hidden_size}"
        )
    if hasattr(adapter, "resolve_sizes"):
        adapter.resolve_sizes(copy.deepcopy(config.adapter), model.config)
    obj = config.objective
    n = model.config.num_layers
    layer = obj.get("row_layer", "auto")
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
        if key in obj and obj[key] not in allowed:
            raise ValueError(f"config.objective.{key}={obj[key]!r}; expected one of {allowed}")
    for key in ("token_weight", "mid_weight", "row_prior"):
        value = obj.get(key, 0.0)
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"config.objective.{key}={value!r}; expected a number >= 0")
    if obj.get("mid_weight", 0.0) and not hasattr(adapter, "apply_states"):
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


def vocabulary_rows(host: Any, layer: int, pooling: str, basis: np.ndarray) -> np.ndarray:
    """The teacher's vocabulary rows at ``layer`` in the basis, float32 [V, width]
    (placeholders and specials get the mean row)."""
    from embres.distill import teacher_token_rows

    raw = teacher_token_rows(host, layer=layer, pooling=pooling)
    usable = tokenize.usable_token_mask(host.tokenizer, host.config.vocab_size)
    raw[~usable] = raw[usable].mean(0)
    return (raw @ basis).astype(np.float32)


def prepare(
    config: Any,
    model: Any,
    adapter: Any,
    workdir: Path,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> Plan:
    """Vocabulary rows and their basis, the token-state cache, the transferred blocks."""
    from embres.data import token_cache
    from embres.export import export_static

    host = common.host_model(model)
    obj, n = config.objective, host.config.num_layers
    width = int(
        adapter.output_dim(config.adapter, (host.config.vocab_size, host.config.hidden_size))
    )
    start = row_layer(config, host, adapter)
    corpus_key, held, corpus_rows = static_distill.training_corpus(config, host)
    limit = int(config.data.get("cache_rows", 0) or 0)  # 0: the whole corpus
    if limit:
        corpus_rows = itertools.islice(corpus_rows, limit)
    # The basis: principal axes of the teacher's own states, at the rows' layer and the
    # last, on the first training sentences (which are then cached like the rest).
    first = list(itertools.islice(corpus_rows, int(obj.get("basis_sentences", 1024))))
    corpus_rows = itertools.chain(first, corpus_rows)
    sample = token_cache.sample_states(host, first, range(start, n + 1))
    offset, basis = teacher_basis(sample, tuple(sorted({start, n})), width)
    rows = vocabulary_rows(host, start, obj.get("row_pooling", "mean"), basis)
    basis_hash = hashlib.sha256(basis.tobytes() + offset.tobytes()).hexdigest()
    need_mid = obj.get("mid_weight", 0.0) > 0 or obj.get("row_init", "vocab") == "corpus"
    layers = tuple(sorted({n, start} if need_mid else {n}))
    key = {
        "teacher": str(host.path),
        "dtype": str(config.dtype),
        "heldout": int(config.data.heldout),
        "corpus": corpus_key,
        "basis_sha256": basis_hash,
    }
    if limit:  # (absent when 0, so caches of the whole corpus built before it still match)
        key["rows"] = limit
    cache_dir = Path(config.data.get("cache_dir") or (Path(workdir) / "token_cache"))
    if process_index == 0:
        token_cache.build_token_cache(
            host,
            corpus_rows,
            cache_dir,
            max_length=config.data.max_length,
            key=key,
            heldout_texts=held,
            mean=np.zeros_like(offset),
            basis=basis,
            layers=layers,
        )
    if process_count > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("embres_token_cache_built")
    source = token_cache.TokenCacheSource(
        cache_dir,
        batch_size=config.batch_size // process_count,
        seed=config.seed,
        process_index=process_index,
        process_count=process_count,
    )
    if obj.get("row_init", "vocab") == "corpus":
        rows = token_cache.corpus_rows(cache_dir, start, rows, obj.get("row_prior", 1.0))

    frozen: dict[str, Any] = {
        "content": common.content_mask(host.tokenizer, host.config.vocab_size)
    }
    if hasattr(adapter, "from_teacher"):  # weights carried over: frozen, updates trained
        frozen["base"] = adapter.from_teacher(host, offset, basis, config.adapter, sample)
    del sample  # whole hidden states: free them before training
    if obj.get("pooled_target", "tokens") == "sentence":
        frozen["projection"] = basis
    loss = _loss_fn(config, adapter, n, start)
    unk = host.tokenizer.unk_token_id

    def served(params):
        """(plain table or None, the params a served contextual student holds)."""
        params = {k: np.asarray(v, np.float32) for k, v in params.items()}
        if hasattr(adapter, "merge"):
            params = adapter.merge(params, frozen.get("base"))
        table = adapter.materialize(params, rows)
        return (None if table is None else common.unk_zeroed(table, unk)), params

    def student(params):
        table, merged = served(params)
        fidelity_map = lambda vectors: vectors @ basis  # noqa: E731
        return common.served_student(
            adapter, merged, table, host.tokenizer, rows.shape, fidelity_map
        )

    def export(params, directory):
        table, merged = served(params)
        meta = {
            "source_model": config.model,
            "target_dim": width,
            "adapter": config.adapter.type,
            "objective": NAME,
        }
        if table is not None:
            return export_static(table, host.tokenizer, directory, meta=meta)
        return export_static(
            np.asarray(merged["table"]),
            host.tokenizer,
            directory,
            meta=meta,
            adapter_params=merged,
        )

    return Plan(
        init_table=rows,
        init_weights=None,  # the rows stand for token states: no SIF scaling
        frozen=frozen,
        source=source,
        loss=loss,
        in_batch=obj.get("loss", "cosine") in losses.IN_BATCH_LOSSES,
        meta={
            "objective": NAME,
            "basis_sha256": basis_hash,
            "cache_key": key,
            "layers": list(layers),
        },
        student=student,
        teacher=lambda: common.teacher(host, config.eval.batch_size),
        export=export,
    )


def _loss_fn(config: Any, adapter: Any, last: int, start: int):
    """The pure loss: pooled vector + token states (+ the context module's input)."""
    obj = config.objective
    kind, temperature = obj.get("loss", "cosine"), obj.get("temperature", 0.05)
    token_kind = obj.get("token_loss", "mse")
    token_weight, mid_weight = obj.get("token_weight", 1.0), obj.get("mid_weight", 0.0)
    pooled_target = obj.get("pooled_target", "tokens")
    states_fn = getattr(adapter, "apply_states", None)

    def loss(params, batch, frozen, rng):
        del rng  # deterministic
        ids = batch["ids"]
        mask = batch["mask"] * frozen["content"][ids].astype(batch["mask"].dtype)
        table = frozen.get("base")
        if states_fn is not None:
            tokens, inner = states_fn(params, table, ids, mask)
        else:
            tokens, inner = adapter.apply(params, table, ids, mask), {}
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
