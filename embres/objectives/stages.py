"""The stages every objective composes, each data in, data out (as model2vec's distill →
post-process → model).

An objective's ``prepare`` reads as a short sequence of these:

* the teacher: :func:`teacher_embedder` (the teacher as the evaluators see it),
  :func:`vocabulary_rows` (each token through the teacher on its own);
* the basis: :class:`Basis` (one PCA; the student's rows and the targets share it);
* the rows: :func:`split_rows` (rows kept exact, rows trained), :func:`served_table` (the
  one table a static student serves, with the one ``[UNK]`` rule: :func:`unk_zeroed`);
* the student: :func:`static_student`, :func:`contextual_student`,
  :func:`transformer_student` (``(embed_fn, info)`` for the evaluators);
* the export, one per student kind: :func:`export_static_student`,
  :func:`export_contextual_student`, :func:`export_transformer_student`.

Every artefact computed once (teacher targets, token-state caches, vocabularies) goes
through :func:`embres.cache.build_once` (build once on process 0, atomically, keyed by what
it depends on; every process waits).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

from embres import adapters, cache, linalg, tokenize

# ----------------------------------------------------------------------------- the teacher


def extractor_fn(model: Any, batch_size: int, params: Any = None, **options: Any):
    """``texts -> [n, d]`` through the (possibly adapted) model, progress off; ``options`` go
    to ``extract_embeddings`` (e.g. ``normalize=False``)."""
    from embres.extract import EmbeddingExtractor

    extractor = EmbeddingExtractor(model, batch_size=batch_size, params=params)
    return functools.partial(extractor.extract_embeddings, progress=False, **options)


def teacher_embedder(model: Any, batch_size: int):
    """The teacher as ``(embed_fn, info)`` for the evaluators."""
    info = {
        "table_bytes": model.config.vocab_size * model.config.hidden_size * 4,
        "total_bytes": adapters.param_bytes(model.params),
        "params": model.params,
        "path": str(model.path),  # identifies the teacher to the evaluators' caches
    }
    return extractor_fn(model, batch_size), info


def vocabulary_rows(host: Any, layer: int | str = -1, pooling: str = "mean") -> np.ndarray:
    """float32 [V, d]: each token of the teacher's vocabulary through the teacher on its own.

    Placeholder and special tokens get the mean row: they never occur in text, and so add
    nothing to a PCA of the rows.
    """
    from embres.distill import teacher_token_rows

    raw = teacher_token_rows(host, layer=layer, pooling=pooling)
    usable = tokenize.usable_token_mask(host.tokenizer, host.config.vocab_size)
    raw[~usable] = raw[usable].mean(0)
    return raw.astype(np.float32)


# ----------------------------------------------------------------------------- the basis


@dataclasses.dataclass(frozen=True)
class Basis:
    """One PCA of a table: ``rows`` are centred coordinates, ``targets`` are not.

    The student's rows start as ``(raw - mean) @ components`` and the teacher's vectors are
    compared as ``targets @ projection``, so dimension i means the same on both sides. The
    PCA's own precision (float64 for numpy input) is kept for the rows; ``projection`` is
    its float32 copy, the one the targets are projected with.
    """

    mean: np.ndarray  # [d]
    components: np.ndarray  # [d, width]

    @classmethod
    def fit(cls, raw: np.ndarray, width: int) -> Basis:
        mean, components = linalg.pca(raw, width)
        return cls(np.asarray(mean), np.asarray(components))

    @property
    def projection(self) -> np.ndarray:
        return np.asarray(self.components, np.float32)

    def rows(self, raw: np.ndarray) -> np.ndarray:
        return ((raw - self.mean) @ self.components).astype(np.float32)

    def targets(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors, np.float32) @ self.projection


# Resume facts and cache keys are the *inputs* of a computation (teacher, layer, width,
# corpus), never a float result, which another backend may round differently.
digest = cache.digest  # sha256 of JSON facts, sorted keys
file_digest = cache.file_digest  # sha256 of a file's bytes


# ----------------------------------------------------------------------------- the rows


def unk_zeroed(table: Any, unk: int | None) -> np.ndarray:
    """A float32 copy of a served table with the ``[UNK]`` row zeroed: the one ``[UNK]`` rule.

    ``[UNK]`` adds nothing to a mean, as in training (the loss pools with
    :func:`embres.objectives.common.content_mask`), and Model2Vec drops it.
    """
    table = np.array(table, np.float32)
    if unk is not None and unk < len(table):
        table[unk] = 0.0
    return table


def split_rows(rows: np.ndarray, kept: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows kept exact, rows trained): the first ``kept`` rows (e.g. the teacher's own in a
    bilingual vocabulary) are frozen arrays, never parameters, so neither the gradient nor
    the optimizer (weight decay included) can move them."""
    return rows[:kept], rows[kept:]


def joined_rows(kept: Any, trained: Any, n_trained: int, xp: Any = np) -> Any:
    """The whole table: the kept rows, then the first ``n_trained`` trained rows (the rest is
    the trainer's row padding). ``xp`` is ``numpy`` or ``jax.numpy``."""
    return xp.concatenate([kept, trained[:n_trained]], axis=0)


def served_table(adapter: Any, params: Any, rows: Any, unk: int | None, vocab_size: int):
    """The [vocab, width] table a static student serves (``None`` for a contextual adapter)."""
    table = adapter.materialize(params, rows)
    return None if table is None else unk_zeroed(np.asarray(table)[:vocab_size], unk)


def contextual_params(adapter: Any, params: Any, vocab_size: int, base: Any = None) -> dict:
    """A contextual student's whole params as served: float32 host arrays, frozen carried-over
    weights merged in (``adapter.merge``), the table cut to the vocabulary."""
    params = {k: np.asarray(v, np.float32) for k, v in params.items()}
    if hasattr(adapter, "merge"):
        params = adapter.merge(params, base)
    params = {k: np.asarray(v, np.float32) for k, v in params.items()}
    return {**params, "table": params["table"][:vocab_size]}


# ----------------------------------------------------------------------------- the student


def _token_counter(embedder: Any):
    return lambda texts: sum(len(r) for r in embedder.token_ids(texts))


def static_student(table: np.ndarray, tokenizer: Any, params: Any, table_bytes: int):
    """``(encode, info)`` of a static table (served as :class:`embres.static_embedder.StaticEmbedder`)."""
    from embres.export import STATIC_MAX_LENGTH
    from embres.static_embedder import StaticEmbedder

    embedder = StaticEmbedder(table, tokenizer, True, STATIC_MAX_LENGTH)
    info = {
        "table_bytes": table_bytes,
        "total_bytes": table_bytes,
        "params": params,
        "count_tokens": _token_counter(embedder),
    }
    return embedder.encode, info


def contextual_student(adapter: Any, params: Any, tokenizer: Any, table_bytes: int):
    """``(encode, info)`` of an adapter run over its params (a contextual student)."""
    from embres.export import STATIC_MAX_LENGTH
    from embres.static_embedder import AdapterEmbedder

    embedder = AdapterEmbedder(adapter, params, tokenizer, True, STATIC_MAX_LENGTH)
    info = {
        "table_bytes": table_bytes,
        "total_bytes": table_bytes,
        "params": params,
        "count_tokens": _token_counter(embedder),
    }
    return embedder.encode, info


def transformer_student(model: Any, batch_size: int, params: Any, table_bytes: int, teacher: Any):
    """``(encode, info)`` of a transformer student (``model`` holds its table and blocks);
    ``teacher`` is the model whose table the student's replaces, for the byte count."""
    other = sum(x.size * 4 for x in jax.tree.leaves(teacher.params))
    other -= teacher.config.vocab_size * teacher.config.hidden_size * 4
    info = {"table_bytes": table_bytes, "total_bytes": table_bytes + other, "params": params}
    return extractor_fn(model, batch_size), info


def with_fidelity(student: tuple, fidelity_map) -> tuple:
    """``student`` with the map the fidelity evaluator applies to the teacher's vectors (the
    student's own space: e.g. the basis the targets were projected onto)."""
    embed, info = student
    return embed, {**info, "fidelity_map": fidelity_map}


# ----------------------------------------------------------------------------- the export


def export_static_student(table: np.ndarray, tokenizer: Any, directory: Any, meta: dict):
    """A static table: Model2Vec / sentence-transformers / embres directory."""
    from embres.export import export_static

    return export_static(table, tokenizer, directory, meta=meta)


def export_contextual_student(params: dict, tokenizer: Any, unk: int | None, directory, meta):
    """A contextual student: its whole params (``adapter.safetensors``), read by
    :class:`embres.static_embedder.AdapterEmbedder`; ``model.safetensors`` holds its rows with the
    ``[UNK]`` rule applied, for readers that take the rows alone."""
    from embres.export import export_contextual

    meta = dict(meta)
    table = unk_zeroed(params["table"], unk)
    return export_contextual(
        params, table, tokenizer, directory, adapter=meta.pop("adapter"), meta=meta
    )


def export_transformer_student(model: Any, meta: dict, directory: Any):
    """A transformer reading the student's vocabulary: a Hugging Face checkpoint plus
    sentence-transformers' module files."""
    from embres.export import export_transfer

    return export_transfer(model, meta, directory)


# ----------------------------------------------------------------------------- the data


def training_corpus(config: Any, model: Any) -> tuple[dict, list[str], Any]:
    """(cache key of the corpus, held-out texts, iterator of token-id rows) of a sentence
    source (``vocab``, ``text:``, ``tfds:``, ``sentences:``).

    ``config.data.cache_rows`` > 0 keeps only the first that many training rows, for every
    source; the corpus-free ``vocab`` source samples ``config.data.vocab_samples`` rows.
    """
    from embres import data
    from embres.data import cached

    spec, cfg = data.parse_spec(config.data.source), config.data
    if spec.kind == "vocab":
        key, held, rows = _vocab_rows(config, model)
    else:
        path = Path(data.text_file(spec)).expanduser().resolve()
        held, rows = cached.text_rows(path, model.tokenizer, cfg.max_length, cfg.heldout)
        key = {"kind": spec.kind, "path": str(path), **_file_facts(path)}
    limit = int(cfg.cache_rows)
    if limit:  # (absent when 0, so caches of the whole corpus built before still match)
        key, rows = {**key, "rows": limit}, itertools.islice(rows, limit)
    return key, held, rows


def _file_facts(path: Path) -> dict:
    """What a corpus file's cache depends on: its bytes (a same-size edit rebuilds it)."""
    return {"sha256": file_digest(path)}


def _vocab_rows(config: Any, model: Any) -> tuple[dict, list[str], Any]:
    """Sequences sampled from the teacher's vocabulary (its Zipf prior): the corpus-free source."""
    from embres.data.vocab import VocabSource

    cfg, chunk = config.data, 1024
    sampler = VocabSource(
        model.tokenizer,
        vocab_size=model.config.vocab_size,
        pad_id=model.pad_id,
        batch_size=chunk,
        max_length=cfg.max_length,
        min_length=cfg.min_length,
        seed=config.seed,
    )
    count = int(cfg.vocab_samples)
    rows = (
        np.asarray(row, np.int32)
        for start in range(0, count, chunk)
        for row in sampler.sample(start // chunk, min(chunk, count - start))
    )
    key = {"kind": "vocab", "seed": config.seed, "rows": count, "min": cfg.min_length}
    return key, sampler.heldout_texts(cfg.heldout), rows


def cache_dir(config: Any, workdir: Path, default: str) -> Path:
    """``config.data.cache_dir``, or ``<workdir>/<default>``."""
    return Path(config.data.cache_dir or (Path(workdir) / default))


def on_process_0(build, process_index: int, process_count: int, name: str) -> None:
    """``build()`` on process 0; every process waits until it is done."""
    if process_index == 0:
        build()
    if process_count > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"embres_{name}_built")


def cached_array(directory: Path, name: str, key: Any, compute, log, what: str = "") -> np.ndarray:
    """``compute()`` once into ``directory/<name>-<digest of key>.npy``, read back after
    (:func:`embres.cache.build_once`: built atomically, a corrupt file reported and rebuilt)."""
    from embres.cache import build_once, keyed_path

    path = keyed_path(directory, name, key, ".npy")

    def build(tmp: Path) -> None:
        log(f"{what or 'computing ' + name} once (cached in {directory})")
        np.save(tmp, np.asarray(compute(), np.float32))

    Path(directory).mkdir(parents=True, exist_ok=True)
    build_once(path, key, build, log=log, check=lambda p: np.load(p, mmap_mode="r"))
    return np.asarray(np.load(path), np.float32)


def cached_text_vectors(
    directory: Path, name: str, key: Any, texts: list[str], compute, log, what: str = ""
) -> np.ndarray:
    """float32 [len(texts), d]: ``compute(texts)`` through a per-text store in ``directory``.

    The store (``<name>-<digest of key>.json`` texts, ``.npy`` their vectors) grows by the
    texts a run asks for that it lacks, so runs over other mixtures, weights or subsets of
    the same sentences compute only what is new. The ``.npy`` is written first and the
    ``.json`` commits it: a reader takes as many rows as the ``.json`` lists, so a crash
    between the two leaves the previous store readable.
    """
    from embres.files import atomic_path

    base = Path(directory) / f"{name}-{digest(key)[:16]}"
    stored, vectors = _read_text_store(base, log)
    index = {t: i for i, t in enumerate(stored)}
    missing = list(dict.fromkeys(t for t in texts if t not in index))
    if missing:
        log(f"{what or name}: {len(missing):,} of {len(texts):,} texts (cached in {directory})")
        new = np.asarray(compute(missing), np.float32)
        vectors = new if vectors is None else np.concatenate([vectors, new])
        stored = stored + missing
        base.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(base.with_suffix(".npy")) as partial:
            np.save(partial, vectors)
        with atomic_path(base.with_suffix(".json")) as partial:
            Path(partial).write_text(json.dumps(stored, ensure_ascii=False))
        index = {t: i for i, t in enumerate(stored)}
    return vectors[np.asarray([index[t] for t in texts], np.int64)]


def _read_text_store(base: Path, log) -> tuple[list[str], np.ndarray | None]:
    texts_file, vectors_file = base.with_suffix(".json"), base.with_suffix(".npy")
    if not (texts_file.exists() and vectors_file.exists()):
        return [], None
    try:
        stored = json.loads(texts_file.read_text())
        vectors = np.load(vectors_file, mmap_mode="r")
        if len(vectors) < len(stored):
            raise ValueError(f"{len(vectors)} vectors for {len(stored)} texts")
        return stored, np.asarray(vectors[: len(stored)], np.float32)
    except (OSError, ValueError) as e:
        log(f"{base}.json/.npy is unreadable ({e}): starting it again")
        return [], None
