"""Cross-lingual distillation: a student that reads a new language where the teacher reads English.

For each translation pair (source ``s`` in the teacher's language, target ``t`` in the new
one) the student is trained so that

    student(t) -> teacher(s)          and, with ``english_weight``,  student(s) -> teacher(s)

with a cosine or MSE loss (optionally over Matryoshka prefixes) and an optional in-batch
contrastive term. The teacher's vectors of the source side are computed once and cached.
Dictionary entries (word pairs, ``config.objective.dictionary``) are items of their own
with their own weight (``dictionary_weight``): they are noisy, and at a sentence's weight
they cost points.

The student's vocabulary and starting rows come from :mod:`embres.objectives.language`;
the students themselves are in :mod:`embres.objectives.students`
(``config.objective.student``):

* ``static`` (adapters ``static``, ``projection``, ``hybrid``): rows over the student's
  vocabulary, in the PCA basis of the starting rows (the targets are projected onto it, as
  in ``static_distill``), pooled over the text's own tokens (no template, no ``[UNK]``);
* ``transfer`` (adapter ``table``): the embedding-layer transfer. A new input table feeds
  the **frozen** teacher transformer; it starts from FVT rows and is trained so the teacher
  reading the new language reproduces the teacher reading the translation. With a
  ``bilingual`` vocabulary and ``freeze_teacher_rows`` (default), the teacher's own rows
  never change, so English input gives exactly the teacher's vectors;
* ``full`` (adapter ``table``): the transfer with the teacher's whole transformer trained
  as well (multilingual knowledge distillation, Reimers & Gurevych 2020); English rows are
  still kept exact, but the blocks move, so English vectors move too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from embres.objectives import Plan, common, language, losses, stages
from embres.objectives.static_distill import matryoshka_dims
from embres.objectives.students import (
    ContextualStudent,
    FullStudent,
    StaticStudent,
    TransferStudent,
)

NAME = "cross_lingual"
STUDENTS = {
    "static": ("static", "projection", "hybrid"),
    "transfer": ("table",),
    "full": ("table",),
    # an English contextual export (config.objective.init_from) carried to the new language
    "contextual": ("transfer", "conv_transfer", "attention", "hybrid"),
}
ADAPTERS = tuple(dict.fromkeys(a for names in STUDENTS.values() for a in names))
IN_INPUT_SPACE = ("transfer", "full")  # students whose rows feed the transformer


def check(config: Any, model: Any, adapter: Any) -> None:
    """Student × adapter, vocabulary, rule, losses, weights, files; before anything runs."""
    from embres import data

    obj = config.objective
    if obj.student not in STUDENTS:
        raise ValueError(
            f"config.objective.student={obj.student!r}; expected one of {sorted(STUDENTS)}"
        )
    allowed = STUDENTS[obj.student]
    if config.adapter.type not in allowed:
        reason = f"the {obj.student!r} student trains adapters {allowed}"
        common.refuse_pair(NAME, config.adapter.type, reason, allowed)
    shape = (model.config.vocab_size, model.config.hidden_size)
    adapter.check_config(config.adapter, shape)
    matryoshka_dims(obj.matryoshka_dims, int(adapter.output_dim(config.adapter, shape)))
    for key, choices in (("vocab", language.VOCABS), ("init", language.INITS)):
        if obj[key] not in choices:
            raise ValueError(f"config.objective.{key}={obj[key]!r}; expected one of {choices}")
    if obj.student == "contextual":
        _check_english_student(config)
    if obj.student in IN_INPUT_SPACE and obj.init == "teacher":
        raise ValueError(
            "config.objective.init='teacher' gives rows in the teacher's output space, but the "
            f"{obj.student!r} student feeds its rows to the transformer's input; use 'fvt', "
            "'dictionary' or 'random'"
        )
    if obj.loss not in losses.STATIC_LOSSES:
        raise ValueError(
            f"config.objective.loss={obj.loss!r}; expected one of {losses.STATIC_LOSSES}"
        )
    for key in ("english_weight", "dictionary_weight", "contrastive_weight"):
        if not obj[key] >= 0:
            raise ValueError(f"config.objective.{key}={obj[key]!r}; expected >= 0")
    spec = data.parse_spec(config.data.source)
    if spec.kind not in ("pairs", "mixture"):
        raise ValueError(
            f"objective {NAME!r} trains on translation pairs; config.data.source="
            f"{config.data.source!r} is a {spec.kind!r} source; expected 'pairs:PATH' or "
            "'mixture' with config.data.columns='<teacher language>,<new language>', "
            "e.g. 'en,tr'"
        )
    if obj.dictionary and not Path(obj.dictionary).expanduser().is_file():
        raise FileNotFoundError(f"config.objective.dictionary={obj.dictionary!r} does not exist")
    language.text_files(obj.vocab_text)
    common.check_sizes(config, model)


def _check_english_student(config: Any) -> None:
    """``init_from`` holds a contextual export of ``config.adapter.type``; rows by fvt/random."""
    import json

    obj = config.objective
    path = english_export_dir(obj.init_from)
    meta = path / "embres_static.json"
    if not obj.init_from or not (path / "adapter.safetensors").is_file() or not meta.is_file():
        raise ValueError(
            f"config.objective.init_from={obj.init_from!r}: the 'contextual' student starts from "
            "a trained contextual export (a configs/hybrid.py workdir or its export/ folder, "
            "holding adapter.safetensors and embres_static.json)"
        )
    saved = json.loads(meta.read_text()).get("adapter")
    if saved != config.adapter.type:
        raise ValueError(
            f"config.objective.init_from={obj.init_from!r} is a student of adapter {saved!r}; "
            f"config.adapter.type={config.adapter.type!r} must name it"
        )
    if obj.init not in ("fvt", "random"):
        raise ValueError(
            f"config.objective.init={obj.init!r}: the 'contextual' student's rows feed its own "
            "blocks, so only 'fvt' (the mean of its rows of a token's pieces) or 'random' apply"
        )


def english_export_dir(init_from: str) -> Path:
    """``init_from``, or the ``export/`` folder of the workdir it names."""
    path = Path(str(init_from or "")).expanduser()
    return path / "export" if (path / "export").is_dir() else path


def training_sources(config: Any) -> dict[str, str]:
    """Sources besides ``config.data.source`` that training reads (for the overlap check)."""
    obj = config.objective
    return {"objective.dictionary": f"dict:{obj.dictionary}"} if obj.dictionary else {}


# ----------------------------------------------------------------------------- stages


@dataclasses.dataclass
class Items:
    """What one run trains on: ``(source, target)`` items (translation pairs, and dictionary
    entries as items of their own weight), their loss weights, the pairs held out, and, for
    a mixture, how items are drawn and what the checkpoint records."""

    pairs: list[tuple[str, str]]
    weights: np.ndarray  # float32 [len(pairs)]
    held: list[tuple[str, str]]
    names: list[str]  # the two column names, e.g. ["en", "tr"]
    sampling: list[tuple[int, int, float]] | None = None  # a mixture's component ranges
    description: dict | None = None  # a mixture's describe()


def read_items(config: Any, log) -> Items:
    """The items of ``config.data.source``: a ``mixture`` of pair files and dictionaries
    (each drawn with its own probability), or one ``pairs:`` file (the first ``heldout``
    pairs kept out) plus, with a positive ``dictionary_weight``, the dictionary's entries."""
    from embres import data

    exclude = data.overlap.eval_exclusion(config)  # config.data.drop_eval_overlap
    if data.parse_spec(config.data.source).kind == "mixture":
        return _mixture_items(config, exclude, log)
    from embres.data.translation import read_pairs

    obj, cfg = config.objective, config.data
    pairs, names = read_pairs(data.parse_spec(cfg.source).path, cfg.columns)
    train, entries = pairs[cfg.heldout :], []
    if obj.dictionary and obj.dictionary_weight > 0:
        entries, _ = read_pairs(obj.dictionary, ",".join(names), exclude)
    weights = [1.0] * len(train) + [float(obj.dictionary_weight)] * len(entries)
    extra = f" + {len(entries):,} dictionary entries (weight {obj.dictionary_weight})"
    log(
        f"{NAME}: {len(train):,} {names[0]}->{names[1]} pairs"
        f"{extra if entries else ''}, {cfg.heldout} held out"
    )
    return Items(train + entries, np.asarray(weights, np.float32), pairs[: cfg.heldout], names)


def _mixture_items(config: Any, exclude: set[str] | None, log) -> Items:
    from embres.data.mixture import read_mixture

    mixture = read_mixture(config.data, exclude)
    if config.objective.dictionary:
        log(
            f"{NAME}: config.objective.dictionary serves init='dictionary' only; a mixture "
            "trains on the dictionaries among its components"
        )
    description = mixture.describe()
    parts = [
        f"{name} {c['pairs']:,} (p={c['probability']:.2f}"
        + (f", item weight {c['item_weight']}" if c["item_weight"] != 1 else "")
        + ")"
        for name, c in description["components"].items()
    ]
    log(f"{NAME}: mixture of {len(mixture.pairs):,} items: " + ", ".join(parts))
    return Items(
        mixture.pairs, mixture.item_weights, mixture.held, mixture.names,
        mixture.sampling(), description,
    )  # fmt: skip


def student_vocabulary(
    config, host, items: Items, workdir: Path, process_index, process_count, log
):
    """(the student's tokenizer, kept teacher ids of a trimmed one), built once per workdir."""
    targets = [t for _, t in items.pairs]
    sources = [s for s, _ in items.pairs]
    vocab_dir = Path(workdir) / "vocab"
    build = lambda quiet=False: language.build_tokenizer(  # noqa: E731
        config.objective,
        host.tokenizer,
        targets,
        sources,
        vocab_dir,
        (lambda *_: None) if quiet else log,
    )
    if process_index == 0:
        result = build()
    stages.on_process_0(lambda: None, process_index, process_count, "vocab")
    return result if process_index == 0 else build(quiet=True)


def teacher_targets(config, host, items: Items, directory: Path, log, english=None):
    """(the teacher's vectors of the items' source side, or, for a contextual student, the
    English student's own (``english``); the facts they depend on), through a per-text store
    in ``directory`` that other runs over the same sentences share.

    Of a mixture, only the items the run's ``total_steps`` batches draw are embedded (the
    draws are seeded, so they are known before the first step; a resumed run with more steps
    embeds what it adds); the others hold zeros and are never drawn.
    """
    key = {
        "teacher": str(host.path),
        "pooling": host.pooling,
        "normalize": bool(host.normalize),
        "dtype": str(config.dtype),
    }
    compute = stages.extractor_fn(host, config.eval.batch_size)
    if english is not None:
        key = {
            "english_student": str(english.path.resolve()),
            "weights": stages.file_digest(english.path / "adapter.safetensors"),
        }
        compute = english.encode
    texts = [s for s, _ in items.pairs]
    needed = drawn_items(config, items)
    what = "teacher: embedding the source-language texts not embedded before"
    wanted = [texts[i] for i in needed]
    vectors = stages.cached_text_vectors(directory, "text_vectors", key, wanted, compute, log, what)
    targets = np.zeros((len(texts), vectors.shape[1]), np.float32)
    targets[needed] = vectors
    facts = {**key, "items": stages.digest("\n".join(texts))}  # not the draws: resumable
    return targets, facts


def drawn_items(config, items: Items) -> np.ndarray:
    """The item indices a run reads the targets of: a mixture's draws, else every item."""
    if items.sampling is None:
        return np.arange(len(items.pairs))
    from embres.data.translation import drawn_items as mixture_draws

    return mixture_draws(items.sampling, config.seed, config.batch_size, config.total_steps)


def source_table(config, host, directory: Path, student: str, log, english=None) -> np.ndarray:
    """The table new rows are transferred from: the English student's own rows (contextual),
    the teacher's input table (input-space students), else its vocabulary distillation
    (shared by every run using ``directory``)."""
    if english is not None:
        return np.asarray(english.params["table"], np.float32)
    if student in IN_INPUT_SPACE:
        return np.asarray(host.embedding_table(), np.float32)
    from embres.distill import teacher_token_rows

    layer = config.objective.teacher_layer
    key = {"teacher": str(host.path), "layer": layer, "dtype": str(config.dtype)}
    compute = lambda: teacher_token_rows(host, layer=layer)  # noqa: E731
    return stages.cached_array(directory, "teacher_token_rows", key, compute, log)


def starting_rows(config, host, tokenizer, kept_ids, items: Items, table, student: str):
    """[len(tokenizer), d]: the teacher's rows where it has the token, transferred ones else.

    Rows from the teacher's output (``init=teacher``/``dictionary``) are taken unnormalised,
    on the scale of the vocabulary-distilled rows they join in one PCA.
    """
    obj = config.objective
    embed_fn = None
    if student == "static":
        embed_fn = stages.extractor_fn(host, config.eval.batch_size, normalize=False)
    dictionary = None
    if obj.dictionary:
        from embres import data
        from embres.data.translation import read_pairs

        exclude = data.overlap.eval_exclusion(config)  # config.data.drop_eval_overlap
        dictionary = read_pairs(obj.dictionary, ",".join(items.names), exclude)[0]
    return language.initial_rows(
        obj.init,
        tokenizer,
        host.tokenizer,
        table,
        kept_ids,
        embed_fn=embed_fn,
        dictionary=dictionary,
        seed=config.seed,
    )


def make_student(config, adapter, host, tokenizer, raw, english=None):
    """The student of ``config.objective.student`` starting from ``raw`` rows."""
    obj = config.objective
    if obj.student == "static":
        return StaticStudent.start(adapter, config, tokenizer, raw)
    if obj.student == "contextual":
        scale = obj.transformer_lr_scale
        return ContextualStudent.start(adapter, tokenizer, english.params, raw, scale)
    kept = len(host.tokenizer) if obj.freeze_teacher_rows and obj.vocab == "bilingual" else 0
    if obj.student == "full":
        return FullStudent.start(host, tokenizer, raw, kept, obj.transformer_lr_scale)
    return TransferStudent.start(host, tokenizer, raw, kept)


def english_student(config: Any):
    """The English contextual export a ``contextual`` student extends (else None)."""
    if config.objective.student != "contextual":
        return None
    from embres.export import load_student

    return load_student(english_export_dir(config.objective.init_from))


def make_loss(config: Any, student: Any, width: int):
    """``loss(params, batch, frozen, rng)``: student(target side) and, with ``english_weight``,
    student(source side) onto the teacher's vector of the source; items weighted."""
    obj = config.objective
    dims = matryoshka_dims(obj.matryoshka_dims, width)
    english_weight, contrastive_weight = float(obj.english_weight), float(obj.contrastive_weight)

    def loss(params, batch, frozen, rng):
        del rng  # deterministic
        targets = batch["targets"]
        vectors = student.embed(params, frozen, batch["ids"], batch["mask"])
        per = losses.matryoshka_loss(vectors, targets, dims, obj.loss, obj.temperature)
        aux = {"target_loss": jnp.mean(per)}
        if english_weight:
            source = student.embed(params, frozen, batch["ids_b"], batch["mask_b"])
            english = losses.matryoshka_loss(source, targets, dims, obj.loss, obj.temperature)
            per = per + english_weight * english
            aux["source_loss"] = jnp.mean(english)
        if contrastive_weight:
            per = per + contrastive_weight * losses.contrastive_loss(
                vectors, targets, obj.temperature
            )
        weight = batch["weight"]
        return jnp.sum(per * weight) / jnp.maximum(jnp.sum(weight), 1e-6), aux

    return loss


def make_source(config, student, items: Items, targets, process_index, process_count):
    """The batches: target side (``ids``), source side (``ids_b``), projected targets, weights."""
    from embres.data.translation import TranslationSource

    tokenizer = student.tokenizer
    source = TranslationSource(
        tokenizer,
        [t for _, t in items.pairs],
        [s for s, _ in items.pairs],
        student.targets(targets),
        items.weights,
        batch_size=config.batch_size,
        max_length=config.data.max_length,
        pad_id=tokenizer.pad_token_id or 0,
        add_special_tokens=student.add_special_tokens,
        heldout=items.held,
        seed=config.seed,
        process_index=process_index,
        process_count=process_count,
        components=items.sampling,
    )
    if items.description is not None:  # the trainer records it: a changed mixture is refused
        source.describe = lambda: items.description
    return source


def init_weights(config, student, items: Items):
    """SIF weights from the target side's token counts (static students), else None."""
    if not isinstance(student, StaticStudent):
        return None
    from embres.distill import sif_weights, token_counts

    texts = [t for _, t in items.pairs]
    counts = token_counts(student.tokenizer, texts, student.vocab_size)
    return sif_weights(student.vocab_size, config.objective.sif_coefficient, counts)


def export_meta(config, host, student) -> dict:
    obj = config.objective
    return {
        "source_model": config.model,
        "objective": NAME,
        "student": obj.student,
        "adapter": config.adapter.type,
        "vocab": obj.vocab,
        "lang": obj.lang,
        "teacher_rows": len(host.tokenizer) if obj.vocab == "bilingual" else 0,
    }


# ----------------------------------------------------------------------------- prepare


def prepare(
    config: Any,
    model: Any,
    adapter: Any,
    workdir: Path,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> Plan:
    """Pairs → vocabulary → teacher targets → starting rows → student → batches and loss."""
    log = print if process_index == 0 else (lambda *_: None)
    host, obj = common.host_model(model), config.objective
    directory = stages.cache_dir(config, workdir, "cache")
    items = read_items(config, log)
    english = english_student(config)
    tokenizer, kept_ids = student_vocabulary(
        config, host, items, workdir, process_index, process_count, log
    )
    targets, targets_key = teacher_targets(config, host, items, directory, log, english)
    table = source_table(config, host, directory, obj.student, log, english)
    raw = starting_rows(config, host, tokenizer, kept_ids, items, table, obj.student)
    student = make_student(config, adapter, host, tokenizer, raw, english)
    batch_size, meta = config.eval.batch_size, export_meta(config, host, student)
    return Plan(
        init_table=student.trained_rows(),
        init_weights=init_weights(config, student, items),
        frozen=student.frozen(),
        source=make_source(config, student, items, targets, process_index, process_count),
        loss=make_loss(config, student, student.trained_rows().shape[1]),
        in_batch=bool(obj.contrastive_weight) or obj.loss in losses.IN_BATCH_LOSSES,
        meta={
            "objective": NAME,
            "student": obj.student,
            "tokenizer_sha256": language.tokenizer_hash(tokenizer),
            "frozen_teacher_rows": len(getattr(student, "kept", ())),
            "targets": targets_key,
            "init": obj.init,
            **({"mixture": items.description} if items.description else {}),
        },
        student=lambda params: student.student(params, batch_size),
        teacher=lambda: stages.teacher_embedder(host, batch_size),
        export=lambda params, directory: student.export(params, directory, meta),
        vocab_size=len(student.trained_rows()),
        init_params=student.start_params() if hasattr(student, "start_params") else None,
    )
