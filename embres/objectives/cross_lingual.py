"""Cross-lingual distillation: a student that reads a new language where the teacher reads English.

For each translation pair (source ``s`` in the teacher's language, target ``t`` in the new
one) the student is trained so that

    student(t) -> teacher(s)          and, with ``english_weight``,  student(s) -> teacher(s)

with a cosine or MSE loss (optionally over Matryoshka prefixes) and an optional in-batch
contrastive term. The teacher's vectors of the source side are computed once and cached.
Dictionary entries (word pairs, ``config.objective.dictionary``) are items of their own
with their own weight (``dictionary_weight``): they are noisy, and at a sentence's weight
they cost points.

The student's vocabulary and starting rows come from :mod:`embres.objectives.language`.
Three students (``config.objective.student``):

* ``static`` (adapters ``static``, ``projection``, ``hybrid``): rows over the student's
  vocabulary, in the PCA basis of the starting rows (the targets are projected onto it, as
  in ``static_distill``), pooled over the text's own tokens (no template, no ``[UNK]``);
* ``transfer`` (adapter ``table``): the embedding-layer transfer. A new input table feeds
  the **frozen** teacher transformer; it starts from FVT rows and is trained so the teacher
  reading the new language reproduces the teacher reading the translation. With a
  ``bilingual`` vocabulary and ``freeze_teacher_rows`` (default), the teacher's own rows
  never change, so English input gives exactly the teacher's vectors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from embres import linalg
from embres import pooling as pooling_lib
from embres.files import atomic_path
from embres.objectives import Plan, common, language, losses
from embres.objectives.static_distill import matryoshka_dims

NAME = "cross_lingual"
STUDENTS = {"static": ("static", "projection", "hybrid"), "transfer": ("table",)}
ADAPTERS = STUDENTS["static"] + STUDENTS["transfer"]


def check(config: Any, model: Any, adapter: Any) -> None:
    """Student × adapter, vocabulary, rule, losses, weights, files; before anything runs."""
    from embres import data

    obj = config.objective
    student = obj.get("student", "static")
    if student not in STUDENTS:
        raise ValueError(
            f"config.objective.student={student!r}; expected one of {sorted(STUDENTS)}"
        )
    if config.adapter.type not in STUDENTS[student]:
        common.refuse_pair(
            NAME,
            config.adapter.type,
            f"the {student!r} student trains adapters {STUDENTS[student]}",
            STUDENTS[student],
        )
    shape = (model.config.vocab_size, model.config.hidden_size)
    adapter.check_config(config.adapter, shape)
    width = int(adapter.output_dim(config.adapter, shape))
    matryoshka_dims(obj.get("matryoshka_dims", ""), width)
    for key, allowed in (("vocab", language.VOCABS), ("init", language.INITS)):
        if obj.get(key) not in allowed:
            raise ValueError(f"config.objective.{key}={obj.get(key)!r}; expected one of {allowed}")
    if student == "transfer" and obj.init == "teacher":
        raise ValueError(
            "config.objective.init='teacher' gives rows in the teacher's output space, but the "
            "transfer student feeds its rows to the transformer's input; use 'fvt', "
            "'dictionary' or 'random'"
        )
    if obj.get("loss", "cosine") not in losses.STATIC_LOSSES:
        raise ValueError(
            f"config.objective.loss={obj.loss!r}; expected one of {losses.STATIC_LOSSES}"
        )
    for key in ("english_weight", "dictionary_weight", "contrastive_weight"):
        if not obj.get(key, 0.0) >= 0:
            raise ValueError(f"config.objective.{key}={obj.get(key)!r}; expected >= 0")
    spec = data.parse_spec(config.data.source)
    if spec.kind != "pairs":
        raise ValueError(
            f"objective {NAME!r} trains on translation pairs; config.data.source="
            f"{config.data.source!r} is a {spec.kind!r} source; expected 'pairs:PATH' with "
            "config.data.columns='<teacher language>,<new language>', e.g. 'en,tr'"
        )
    if obj.get("dictionary", "") and not Path(obj.dictionary).expanduser().is_file():
        raise FileNotFoundError(f"config.objective.dictionary={obj.dictionary!r} does not exist")
    language.text_files(obj.get("vocab_text", ""))
    common.check_sizes(config, model)


def _teacher_targets(host: Any, texts: list[str], cache_dir: Path, key: dict, batch: int, log):
    """The teacher's vectors of ``texts``, computed once into ``cache_dir`` (atomic write)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir / f"teacher_targets-{digest}.npy"
    if path.exists():
        targets = np.load(path, mmap_mode="r")
        if targets.shape[0] == len(texts):
            return np.asarray(targets, np.float32)
        log(f"{path} holds {targets.shape[0]} vectors, not {len(texts)}: recomputing")
    log(f"teacher: embedding {len(texts):,} source-language texts once (cached in {cache_dir})")
    targets = np.asarray(common.extractor_fn(host, batch)(texts), np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as partial:
        np.save(partial, targets)
    return targets


def _cached_rows(path: Path, compute, log) -> np.ndarray:
    """``compute()`` once into ``path`` (atomic), read back on later calls."""
    if path.exists():
        return np.load(path)
    log(f"computing {path.name} once (cached in {path.parent})")
    rows = np.asarray(compute(), np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as partial:
        np.save(partial, rows)
    return rows


def transfer_model(host: Any, tokenizer: Any, table: Any) -> Any:
    """The teacher reading ``table`` through ``tokenizer``: a ``LoadedModel`` of that vocabulary."""
    rows = int(table.shape[0])
    cfg = dataclasses.replace(host.config, vocab_size=rows)
    module = type(host.module)(cfg, dtype=host.module.dtype, param_dtype=host.module.param_dtype)
    params = common.replace_table(host.params, host.table_path, jnp.asarray(table))
    return dataclasses.replace(host, config=cfg, module=module, params=params, tokenizer=tokenizer)


def prepare(
    config: Any,
    model: Any,
    adapter: Any,
    workdir: Path,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> Plan:
    """Vocabulary, starting rows, cached targets, the batches and the loss."""
    from embres import data
    from embres.data.parallel import ParallelSource, read_pairs
    from embres.distill import sif_weights, teacher_token_rows, token_counts

    log = print if process_index == 0 else (lambda *_: None)
    host = common.host_model(model)
    obj, cfg = config.objective, config.data
    student_kind = obj.get("student", "static")
    transfer = student_kind == "transfer"
    workdir = Path(workdir)

    # --- Pairs: (source, target) per item; the first `heldout` pairs are never trained on.
    spec = data.parse_spec(cfg.source)
    pairs, names = read_pairs(spec.path, cfg.columns)
    held, train = pairs[: cfg.heldout], pairs[cfg.heldout :]
    weights = [1.0] * len(train)
    entries: list[tuple[str, str]] = []
    if obj.get("dictionary", "") and obj.get("dictionary_weight", 0.0) > 0:
        entries, _ = read_pairs(obj.dictionary, ",".join(names))
        weights += [float(obj.dictionary_weight)] * len(entries)
    items = train + entries
    log(
        f"{NAME}: {len(train):,} {names[0]}->{names[1]} pairs"
        + (
            f" + {len(entries):,} dictionary entries (weight {obj.dictionary_weight})"
            if entries
            else ""
        )
        + f", {len(held)} held out"
    )

    # --- The student's vocabulary (built once per workdir by process 0).
    vocab_dir = workdir / "vocab"
    if process_index == 0:
        tokenizer, kept = language.build_tokenizer(
            obj, host.tokenizer, [t for _, t in train], [s for s, _ in train], vocab_dir, log
        )
    if process_count > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("embres_vocab_built")
        if process_index:
            tokenizer, kept = language.build_tokenizer(
                obj, host.tokenizer, [t for _, t in train], [s for s, _ in train], vocab_dir
            )
    vocab_size = len(tokenizer)

    # --- The teacher's vectors of every source side, once.
    key = {
        "teacher": str(host.path),
        "pooling": host.pooling,
        "normalize": bool(host.normalize),
        "dtype": str(config.dtype),
        "items": hashlib.sha256("\n".join(s for s, _ in items).encode()).hexdigest(),
    }
    cache_dir = Path(cfg.get("cache_dir") or (workdir / "cache"))
    targets = _teacher_targets(
        host, [s for s, _ in items], cache_dir, key, config.eval.batch_size, log
    )

    # --- Starting rows, in the teacher's input space (transfer) or output space (static).
    teacher_fn = common.extractor_fn(host, config.eval.batch_size)
    if transfer:
        source_table = np.asarray(host.embedding_table(), np.float32)
    else:
        # Vocabulary distillation of the teacher (each token through it on its own), shared by
        # every run with the same cache folder: the same rows whatever the student's vocabulary.
        layer = obj.get("teacher_layer", -1)
        rows_key = {"teacher": str(host.path), "layer": layer, "dtype": str(config.dtype)}
        digest = hashlib.sha256(json.dumps(rows_key, sort_keys=True).encode()).hexdigest()[:16]
        source_table = _cached_rows(
            cache_dir / f"teacher_token_rows-{digest}.npy",
            lambda: teacher_token_rows(host, layer=layer),
            log,
        )
    raw = language.initial_rows(
        obj.init,
        tokenizer,
        host.tokenizer,
        source_table,
        kept,
        embed_fn=None if transfer else teacher_fn,
        dictionary=read_pairs(obj.dictionary, ",".join(names))[0]
        if obj.get("dictionary", "")
        else None,
        seed=config.seed,
    )
    unk = tokenizer.unk_token_id
    if transfer:
        rows, projection = raw, None
        targets_student = targets
        init_weights = None
    else:
        # One PCA: the student's rows and the targets share its basis (as static_distill).
        width = int(adapter.output_dim(config.adapter, raw.shape))
        mean, components = linalg.pca(raw, width)
        projection = np.asarray(components, np.float32)
        rows = ((raw - mean) @ components).astype(np.float32)
        targets_student = targets @ projection
        counts = token_counts(tokenizer, [t for _, t in train], vocab_size)
        init_weights = sif_weights(vocab_size, obj.get("sif_coefficient", 1e-3), counts)

    source = ParallelSource(
        tokenizer,
        [t for _, t in items],
        [s for s, _ in items],
        targets_student,
        np.asarray(weights, np.float32),
        batch_size=config.batch_size,
        max_length=cfg.max_length,
        pad_id=tokenizer.pad_token_id or 0,
        add_special_tokens=transfer,
        heldout=held,
        seed=config.seed,
        process_index=process_index,
        process_count=process_count,
    )

    # --- The loss. A bilingual transfer with frozen teacher rows trains only the new rows:
    # the teacher's rows sit in `frozen`, so neither the gradient nor Adam touches them.
    teacher_rows = len(host.tokenizer)
    freeze = transfer and obj.get("freeze_teacher_rows", True) and obj.vocab == "bilingual"
    base_rows = rows[:teacher_rows] if freeze else rows[:0]
    trained_rows = rows[len(base_rows) :]
    dims = matryoshka_dims(obj.get("matryoshka_dims", ""), rows.shape[1])
    kind, temperature = obj.get("loss", "cosine"), obj.get("temperature", 0.05)
    english_weight = float(obj.get("english_weight", 1.0))
    contrastive_weight = float(obj.get("contrastive_weight", 0.0))
    frozen = {"rows": rows}
    if transfer:
        frozen["teacher"] = host.params
        frozen["base_rows"] = base_rows

    def embed(params, frozen, ids, mask):
        if transfer:
            # the whole table: frozen teacher rows, then the trained rows (padding cut off)
            trained = params["table"][: len(trained_rows)]
            table = jnp.concatenate([frozen["base_rows"], trained], axis=0)
            out = host.apply(
                frozen["teacher"], ids, mask, inputs_embeds=jnp.take(table, ids, axis=0)
            )
            return pooling_lib.pool(out["last_hidden_state"], mask, host.pooling)
        if unk is not None:  # [UNK] holds its place but adds nothing, as served
            mask = mask * (ids != unk).astype(mask.dtype)
        return pooling_lib.pool(adapter.apply(params, frozen["rows"], ids, mask), mask, "mean")

    def loss(params, batch, frozen, rng):
        del rng  # deterministic
        targets = batch["targets"]
        student = embed(params, frozen, batch["ids"], batch["mask"])
        per = losses.matryoshka_loss(student, targets, dims, kind, temperature)
        aux = {"target_loss": jnp.mean(per)}
        if english_weight:
            source_vecs = embed(params, frozen, batch["ids_b"], batch["mask_b"])
            english = losses.matryoshka_loss(source_vecs, targets, dims, kind, temperature)
            per = per + english_weight * english
            aux["source_loss"] = jnp.mean(english)
        if contrastive_weight:
            per = per + contrastive_weight * losses.contrastive_loss(student, targets, temperature)
        weight = batch["weight"]
        return jnp.sum(per * weight) / jnp.maximum(jnp.sum(weight), 1e-6), aux

    # --- Serving and export.
    def served_table(params) -> np.ndarray | None:
        table = adapter.materialize(params, rows)
        if table is None:
            return None
        table = np.array(table, np.float32)[: len(trained_rows)]
        if transfer:
            return np.concatenate([base_rows, table])
        if not transfer and unk is not None:
            table[unk] = 0.0  # [UNK] adds nothing, as in training
        return table

    def student(params):
        from embres.export import STATIC_MAX_LENGTH
        from embres.static import AdapterEmbedder, StaticEmbedder

        table = served_table(params)
        size = int(table.nbytes) if table is not None else adapter.table_bytes(params, rows.shape)
        if transfer:
            served = transfer_model(host, tokenizer, table)
            info = {
                "table_bytes": size,
                "total_bytes": size
                + sum(x.size * 4 for x in jax.tree.leaves(host.params))
                - host.config.vocab_size * host.config.hidden_size * 4,
                "params": params,
            }
            return common.extractor_fn(served, config.eval.batch_size), info
        if table is None:
            embedder = AdapterEmbedder(adapter, params, tokenizer, True, STATIC_MAX_LENGTH)
        else:
            embedder = StaticEmbedder(table, tokenizer, True, STATIC_MAX_LENGTH)
        info = {
            "table_bytes": size,
            "total_bytes": size,
            "params": params,
            "count_tokens": lambda texts: sum(len(r) for r in embedder.token_ids(texts)),
        }
        return embedder.encode, info

    def export(params, directory):
        from embres.export import export_static, export_transfer

        meta = {
            "source_model": config.model,
            "objective": NAME,
            "student": student_kind,
            "adapter": config.adapter.type,
            "vocab": obj.vocab,
            "lang": obj.lang,
            "teacher_rows": teacher_rows if obj.vocab == "bilingual" else 0,
        }
        if transfer:
            return export_transfer(
                transfer_model(host, tokenizer, served_table(params)), meta, directory
            )
        table = served_table(params)
        contextual = table is None
        if contextual:
            table = np.array(params["table"], np.float32)[:vocab_size]
        return export_static(
            table,
            tokenizer,
            directory,
            meta=meta,
            adapter_params=params if contextual else None,
        )

    return Plan(
        init_table=trained_rows,
        init_weights=init_weights,
        frozen=frozen,
        source=source,
        loss=loss,
        in_batch=bool(contrastive_weight) or kind in losses.IN_BATCH_LOSSES,
        meta={
            "objective": NAME,
            "student": student_kind,
            "tokenizer_sha256": language.tokenizer_hash(tokenizer),
            "frozen_teacher_rows": len(base_rows),
            "targets": key,
            "init": obj.init,
        },
        student=student,
        teacher=lambda: common.teacher(host, config.eval.batch_size),
        export=export,
        vocab_size=len(trained_rows),
    )
