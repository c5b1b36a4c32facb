"""Static and contextual students distilled from the teacher's sentence vectors.

The student starts from vocabulary distillation (each token through the teacher on its own,
SIF weights; :mod:`embres.distill`) and is trained so the mean of its token vectors matches
the teacher's sentence vector projected onto the PCA basis the student's table starts in
(dimension i means the same on both sides; a Matryoshka loss over nested prefixes makes
every prefix a usable model).

Targets are always cached (:mod:`embres.data.cached`): the teacher embeds each training
sequence once, never inside the step. ``text:``/``tfds:`` corpora are cached line by line;
the corpus-free ``vocab`` source caches ``config.data.cache_rows`` sampled sequences.

Train and serve see the same tokens: batches carry the teacher's special tokens
(``[CLS]``/``[SEP]``) because the teacher needs them, but the student pools only the text's
own tokens (``frozen["content"]`` is 0 at the template ids), exactly as the served model
(:class:`embres.static.StaticEmbedder`, Model2Vec, sentence-transformers) tokenises
without special tokens.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from embres import linalg, tokenize
from embres import pooling as pooling_lib
from embres.objectives import Plan, common, losses

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
    matryoshka_dims(obj.get("matryoshka_dims", ""), width)
    if obj.get("loss", "cosine") not in losses.STATIC_LOSSES:
        raise ValueError(
            f"config.objective.loss={obj.loss!r}; expected one of {losses.STATIC_LOSSES}"
        )
    n = model.config.num_layers
    layer = obj.get("teacher_layer", -1)
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
    """(teacher rows [vocab, d], SIF weights [vocab]) from vocabulary distillation.

    Placeholder and special tokens get the mean row, so they add nothing to the PCA the
    student's table starts from (they never occur in text).
    """
    from embres.distill import sif_weights, teacher_token_rows

    obj = config.objective
    raw = teacher_token_rows(model, layer=obj.get("teacher_layer", -1))
    usable = tokenize.usable_token_mask(model.tokenizer, model.config.vocab_size)
    raw[~usable] = raw[usable].mean(0)
    weights = sif_weights(raw.shape[0], obj.get("sif_coefficient", 1e-4), None, usable)
    return raw.astype(np.float32), weights


def student_vectors(adapter: Any, params: Any, batch: dict, frozen: dict):
    """The pooled student vectors the loss sees: [b, target_dim], before normalisation.

    Only the text's own tokens count (``frozen["content"]`` drops the template ids), which
    is what the served model pools.
    """
    ids = batch["ids"]
    mask = batch["mask"] * frozen["content"][ids].astype(batch["mask"].dtype)
    vectors = adapter.apply(params, frozen["rows"], ids, mask)
    return pooling_lib.pool(vectors, mask, "mean")


def training_corpus(config: Any, model: Any) -> tuple[dict, list[str], Any]:
    """(cache key of the corpus, held-out texts, iterator of token-id rows)."""
    from embres import data
    from embres.data import cached

    spec = data.parse_spec(config.data.source)
    cfg = config.data
    if spec.kind == "vocab":
        from embres.data.vocab import VocabSource

        chunk = 1024
        sampler = VocabSource(
            model.tokenizer,
            vocab_size=model.config.vocab_size,
            pad_id=model.pad_id,
            batch_size=chunk,
            max_length=cfg.max_length,
            min_length=cfg.min_length,
            seed=config.seed,
        )
        count = int(cfg.cache_rows)
        rows = (
            np.asarray(row, np.int32)
            for start in range(0, count, chunk)
            for row in sampler.sample(start // chunk, min(chunk, count - start))
        )
        key = {"kind": "vocab", "seed": config.seed, "rows": count, "min": cfg.min_length}
        return key, sampler.heldout_texts(cfg.heldout), rows
    path = Path(data.text_file(spec)).expanduser().resolve()
    stat = path.stat()
    held, rows = cached.text_rows(path, model.tokenizer, cfg.max_length, cfg.heldout)
    key = {"kind": spec.kind, "path": str(path), "size": stat.st_size, "mtime": stat.st_mtime_ns}
    return key, held, rows


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
    from embres.data import cached
    from embres.export import export_static

    host = common.host_model(model)  # distillation and caching run on whole host arrays
    target_dim = _target_dim(config, model, adapter)
    raw, sif = source_rows(host, config)
    # One PCA, here: the student's rows and the targets share its basis exactly. The adapter
    # gets rows already in it, so its own PCA start is the identity (no second basis whose
    # signs or order could differ).
    mean, components = linalg.pca(raw, target_dim)
    projection = np.asarray(components, np.float32)  # [d, target_dim], targets @ projection
    rows = ((raw - mean) @ components).astype(np.float32)  # [vocab, target_dim]

    corpus_key, held, corpus_rows = training_corpus(config, host)
    key = {
        "teacher": str(host.path),
        "pooling": host.pooling,
        "normalize": bool(host.normalize),
        "dtype": str(config.dtype),
        "max_length": int(config.data.max_length),
        "heldout": int(config.data.heldout),
        "corpus": corpus_key,
    }
    cache_dir = Path(config.data.get("cache_dir") or (Path(workdir) / "cache"))
    if process_index == 0:
        cached.build_cache(
            host,
            corpus_rows,
            cache_dir,
            max_length=config.data.max_length,
            key=key,
            heldout_texts=held,
        )
    if process_count > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("embres_cache_built")
    source = cached.CachedSource(
        cache_dir,
        batch_size=config.batch_size // process_count,
        vocab_size=host.config.vocab_size,
        seed=config.seed,
        process_index=process_index,
        process_count=process_count,
        projection=projection,
    )

    # Pooled over the text's own tokens: not the template ([CLS]/[SEP]), which the served
    # model never sees, and not [UNK], which Model2Vec drops; its served row is zero, so
    # every reader's normalised mean is the same.
    unk = host.tokenizer.unk_token_id
    content = common.content_mask(host.tokenizer, host.config.vocab_size)
    obj = config.objective
    dims = matryoshka_dims(obj.get("matryoshka_dims", ""), target_dim)
    kind, temperature = obj.get("loss", "cosine"), obj.get("temperature", 0.05)

    def loss(params, batch, frozen, rng):
        del rng  # deterministic
        student = student_vectors(adapter, params, batch, frozen)
        per_example = losses.matryoshka_loss(student, batch["targets"], dims, kind, temperature)
        return jnp.mean(per_example), {"pooled_loss": jnp.mean(per_example)}

    def served_table(params, static_rows=False):
        """The plain table (None for a contextual adapter unless ``static_rows``)."""
        plain = adapter.materialize(params, rows)
        if plain is None and static_rows:
            plain = params["table"]
        return None if plain is None else common.unk_zeroed(plain, unk)

    def student(params):
        # fidelity in the student's space: the teacher's vectors as the targets see them
        fidelity_map = lambda vectors: vectors @ projection  # noqa: E731
        return common.served_student(
            adapter, params, served_table(params), host.tokenizer, rows.shape, fidelity_map
        )

    def export(params, directory):
        table = served_table(params)
        contextual = table is None
        meta = {
            "source_model": config.model,
            "target_dim": target_dim,
            "adapter": config.adapter.type,
            "objective": NAME,
        }
        return export_static(
            served_table(params, static_rows=True),
            host.tokenizer,
            directory,
            meta=meta,
            adapter_params=params if contextual else None,
        )

    return Plan(
        init_table=rows,
        init_weights=sif,
        frozen={"rows": rows, "content": content},
        source=source,
        loss=loss,
        in_batch=kind in losses.IN_BATCH_LOSSES,
        meta={
            "objective": NAME,
            "projection_sha256": hashlib.sha256(projection.tobytes()).hexdigest(),
            "cache_key": key,
        },
        student=student,
        teacher=lambda: common.teacher(host, config.eval.batch_size),
        export=export,
    )
