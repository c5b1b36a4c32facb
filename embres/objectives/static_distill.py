"""Static and contextual students distilled from the teacher's sentence vectors.

The student starts from vocabulary distillation (each token through the teacher on its own,
SIF weights; :mod:`embres.distill`) and is trained so the mean of its token vectors matches
the teacher's sentence vector projected onto the PCA basis the student's table starts in
(dimension i means the same on both sides; a Matryoshka loss over nested prefixes makes
every prefix a usable model).

Targets are always cached (:mod:`embres.data.cached`): the teacher embeds each training
sequence once, never inside the step. ``text:``/``tfds:`` corpora are cached line by line;
the corpus-free ``vocab`` source caches ``config.data.vocab_samples`` sampled sequences
(``config.data.cache_rows`` > 0 keeps the first that many rows of any source).

Train and serve see the same tokens: batches carry the teacher's special tokens
(``[CLS]``/``[SEP]``) because the teacher needs them, but the student pools only the text's
own tokens (``frozen["content"]`` is 0 at the template ids), exactly as the served model
(:class:`embres.static_embedder.StaticEmbedder`, Model2Vec, sentence-transformers) tokenises
without special tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from embres import pooling as pooling_lib
from embres import tokenize
from embres.objectives import Plan, common, losses, stages

NAME = "static_distill"
# Adapters that start from the distilled rows in the targets' PCA basis.
ADAPTERS = ("static", "hybrid", "projection")
SOURCES = ("vocab", "text", "tfds", "sentences")


def matryoshka_dims(spec: str, target_dim: int) -> tuple[int, ...]:
    """``"32,64,128"`` -> (32, 64, 128, target_dim); ``""`` -> (target_dim,).

    Raises:
      ValueError: naming ``config.objective.matryoshka_dims`` and the allowed values.
    """
    dims = []
    for part in filter(None, (p.strip() for p in str(spec or "").split(","))):
        if not part.isdigit() or not 0 < int(part) <= target_dim:
            raise ValueError(
                f"config.objective.matryoshka_dims={spec!r}: {part!r} is not an integer in "
                f"1..{target_dim} (config.adapter.target_dim)"
            )
        dims.append(int(part))
    return tuple(sorted(set(dims) | {target_dim}))


def _target_dim(config: Any, model: Any, adapter: Any) -> int:
    shape = (model.config.vocab_size, model.config.hidden_size)
    return int(adapter.output_dim(config.adapter, shape))


def check(config: Any, model: Any, adapter: Any) -> None:
    """Adapter, widths, loss, layer and data source, before anything is distilled."""
    from embres import data

    kind = config.adapter.type
    if kind not in ADAPTERS:
        common.refuse_pair(
            NAME,
            kind,
            "its factors start from the teacher's own table, not the PCA basis the targets "
            "are projected onto",
            ADAPTERS,
        )
    shape = (model.config.vocab_size, model.config.hidden_size)
    adapter.check_config(config.adapter, shape)
    width = _target_dim(config, model, adapter)
    if width > model.config.hidden_size:
        raise ValueError(
            f"config.adapter.target_dim={width}; expected at most the teacher's width "
            f"{model.config.hidden_size} (targets are the teacher's vectors in PCA basis)"
        )
    obj = config.objective
    matryoshka_dims(obj.matryoshka_dims, width)
    if obj.loss not in losses.STATIC_LOSSES:
        raise ValueError(
            f"config.objective.loss={obj.loss!r}; expected one of {losses.STATIC_LOSSES}"
        )
    n = model.config.num_layers
    layer = obj.teacher_layer
    if layer != "mean" and not (isinstance(layer, int) and -(n + 1) <= layer <= n):
        raise ValueError(
            f"config.objective.teacher_layer={layer!r}; expected 'mean' or an int in -{n + 1}..{n}"
        )
    spec = data.parse_spec(config.data.source)
    if spec.kind not in SOURCES:
        raise ValueError(
            f"objective {NAME!r} distils from sentences one at a time; "
            f"config.data.source={config.data.source!r} is a {spec.kind!r} source; expected "
            f"one of {SOURCES}"
        )
    common.check_sizes(config, model)


def source_rows(model: Any, config: Any) -> tuple[np.ndarray, np.ndarray]:
    """(teacher rows [vocab, d], SIF weights [vocab]) from vocabulary distillation."""
    from embres.distill import sif_weights

    obj = config.objective
    raw = stages.vocabulary_rows(model, layer=obj.teacher_layer)
    usable = tokenize.usable_token_mask(model.tokenizer, model.config.vocab_size)
    weights = sif_weights(raw.shape[0], obj.sif_coefficient, None, usable)
    return raw, weights


def student_vectors(adapter: Any, params: Any, batch: dict, frozen: dict):
    """The pooled student vectors the loss sees: [b, target_dim], before normalisation.

    Only the text's own tokens count (``frozen["content"]`` drops the template ids), which
    is what the served model pools.
    """
    ids = batch["ids"]
    mask = batch["mask"] * frozen["content"][ids].astype(batch["mask"].dtype)
    vectors = adapter.apply(params, frozen["rows"], ids, mask)
    return pooling_lib.pool(vectors, mask, "mean")


def cached_targets(config, host, workdir, projection, process_index, process_count):
    """(source of the cached teacher targets projected onto the basis, its cache key): the
    teacher embeds each training sequence once, on process 0, never inside the step."""
    from embres.data import cached

    corpus_key, held, corpus_rows = stages.training_corpus(config, host)
    key = {
        "teacher": str(host.path),
        "pooling": host.pooling,
        "normalize": bool(host.normalize),
        "dtype": str(config.dtype),
        "max_length": int(config.data.max_length),
        "heldout": int(config.data.heldout),
        "corpus": corpus_key,
    }
    directory = stages.cache_dir(config, workdir, "cache")
    build = lambda: cached.build_cache(  # noqa: E731
        host,
        corpus_rows,
        directory,
        max_length=config.data.max_length,
        key=key,
        heldout_texts=held,
    )
    stages.on_process_0(build, process_index, process_count, "cache")
    source = cached.CachedSource(
        directory,
        batch_size=config.batch_size // process_count,
        vocab_size=host.config.vocab_size,
        seed=config.seed,
        process_index=process_index,
        process_count=process_count,
        projection=projection,
    )
    return source, key


def make_loss(config: Any, adapter: Any, target_dim: int):
    """``loss(params, batch, frozen, rng)``: the pooled student against the projected target,
    over every Matryoshka prefix."""
    obj = config.objective
    dims = matryoshka_dims(obj.matryoshka_dims, target_dim)

    def loss(params, batch, frozen, rng):
        del rng  # deterministic
        student = student_vectors(adapter, params, batch, frozen)
        per_example = losses.matryoshka_loss(
            student, batch["targets"], dims, obj.loss, obj.temperature
        )
        return jnp.mean(per_example), {"pooled_loss": jnp.mean(per_example)}

    return loss


def prepare(
    config: Any,
    model: Any,
    adapter: Any,
    workdir: Path,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> Plan:
    """Distils the vocabulary, caches the teacher's targets, projects them onto the PCA basis."""
    host = common.host_model(model)  # distillation and caching run on whole host arrays
    target_dim = _target_dim(config, model, adapter)
    raw, sif = source_rows(host, config)
    # One PCA, here: the student's rows and the targets share its basis exactly. The adapter
    # gets rows already in it, so its own PCA start is the identity.
    basis = stages.Basis.fit(raw, target_dim)
    rows = basis.rows(raw)
    source, key = cached_targets(
        config, host, workdir, basis.projection, process_index, process_count
    )
    tokenizer, vocab_size = host.tokenizer, host.config.vocab_size
    unk = tokenizer.unk_token_id
    size = lambda params: adapter.table_bytes(params, rows.shape)  # noqa: E731

    def student(params):
        table = stages.served_table(adapter, params, rows, unk, vocab_size)
        if table is None:
            served = stages.contextual_student(adapter, params, tokenizer, size(params))
        else:
            served = stages.static_student(table, tokenizer, params, size(params))
        # fidelity in the student's space: the teacher's vectors as the targets see them
        return stages.with_fidelity(served, basis.targets)

    def export(params, directory):
        meta = {
            "source_model": config.model,
            "target_dim": target_dim,
            "adapter": config.adapter.type,
            "objective": NAME,
        }
        table = stages.served_table(adapter, params, rows, unk, vocab_size)
        if table is None:
            served = stages.contextual_params(adapter, params, vocab_size)
            return stages.export_contextual_student(served, tokenizer, unk, directory, meta)
        return stages.export_static_student(table, tokenizer, directory, meta)

    return Plan(
        init_table=rows,
        init_weights=sif,
        frozen={"rows": rows, "content": common.content_mask(tokenizer, vocab_size)},
        source=source,
        loss=make_loss(config, adapter, target_dim),
        in_batch=config.objective.loss in losses.IN_BATCH_LOSSES,
        meta={
            "objective": NAME,
            # the basis's inputs, exactly (a float hash of it would differ across backends)
            "basis": {
                "teacher": str(host.path),
                "layer": config.objective.teacher_layer,
                "width": target_dim,
                "dtype": str(config.dtype),
            },
            "cache_key": key,
        },
        student=student,
        teacher=lambda: stages.teacher_embedder(host, config.eval.batch_size),
        export=export,
    )
