"""Static and hybrid students trained by ``embres.train`` (objective ``static_distill``).

The student starts from vocabulary distillation (:mod:`embres.distill`) and is trained so
the mean of its token vectors matches the teacher's sentence vector, projected onto the
same PCA basis the student's table starts in (so dimension i means the same thing on both
sides, and a Matryoshka loss over nested prefixes makes every prefix a usable model).

Targets come from a cache (``text:PATH`` corpora: the teacher runs once per sentence, see
:mod:`embres.data.cached`) or, corpus-free (``vocab``), from the teacher inside the step.
These are the pieces ``train.py`` calls; the step itself stays the one ``train_step``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from embres import objectives
from embres import pooling as pooling_lib

PROJECTION_KEY = "_target_projection"  # added to the frozen tree for in-step targets


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


def source_table(model: Any, config: Any) -> tuple[np.ndarray, np.ndarray]:
    """(teacher rows [vocab, d], SIF weights [vocab]) from vocabulary distillation.

    Placeholder and special tokens get the mean row, so they add nothing to the PCA the
    student's table starts from (they never occur in text).
    """
    from embres.distill import sif_weights, teacher_token_rows, usable_tokens

    obj = config.objective
    raw = teacher_token_rows(model, layer=obj.get("teacher_layer", -1))
    usable = usable_tokens(model)
    raw[~usable] = raw[usable].mean(0)
    weights = sif_weights(raw.shape[0], obj.get("sif_coefficient", 1e-4), None, usable)
    return raw.astype(np.float32), weights


def projection(table: np.ndarray, target_dim: int) -> np.ndarray:
    """[d, target_dim] PCA basis of the table's rows (the one ``adapters.static.init`` uses)."""
    from embres.adapters import static

    return np.asarray(static.pca_basis(jnp.asarray(table), target_dim)[1], np.float32)


def make_source(config, model, workdir: Path, proj: np.ndarray, process_index, process_count):
    """A cached-target source for ``text:`` corpora, else ``None`` (targets in the step)."""
    spec = config.data.source
    if not spec.startswith("text:"):
        return None
    from embres.data.cached import CachedSource, build_cache

    cache_dir = config.data.get("cache_dir") or str(workdir / "cache")
    if process_index == 0:
        build_cache(
            model, spec[len("text:") :], cache_dir, config.data.max_length, config.data.heldout
        )
    if process_count > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("embres_cache_built")
    return CachedSource(
        cache_dir,
        batch_size=config.batch_size // process_count,
        vocab_size=model.config.vocab_size,
        seed=config.seed,
        process_index=process_index,
        process_count=process_count,
        projection=proj,
    )


def loss(params, batch, teacher, rng=None, *, model, adapter, config, dims):
    """Per-batch loss of a static/hybrid student against (projected) teacher sentence vectors."""
    del rng
    ids, mask = batch["ids"], batch["mask"]
    vectors = adapter.apply(params, None, ids, mask)  # static/hybrid carry their own table
    student = pooling_lib.pool(vectors, mask, "mean")
    if "targets" in batch:
        targets = batch["targets"]
    else:  # corpus-free: the frozen teacher gives its sentence vector in the step
        frozen = {k: v for k, v in teacher.items() if k != PROJECTION_KEY}
        out = model.apply(frozen, ids, mask)
        pooled = pooling_lib.pool(
            jax.lax.stop_gradient(out["last_hidden_state"]), mask, model.pooling
        )
        if model.normalize:
            pooled = pooling_lib.l2_normalize(pooled)
        targets = pooled @ teacher[PROJECTION_KEY]
    per_example = objectives.matryoshka_loss(
        student,
        targets,
        dims,
        config.objective.get("loss", "cosine"),
        config.objective.get("temperature", 0.05),
    )
    return jnp.mean(per_example), {"pooled_loss": jnp.mean(per_example)}


def embed_fn(model, adapter, params, table):
    """``texts -> [n, d]`` for the trained student (numpy for static, bucketed jit for hybrid)."""
    from embres.static import StaticEmbedder

    plain = adapter.materialize(params, table)
    if plain is not None:
        return StaticEmbedder(np.asarray(plain), model.tokenizer, normalize=True).encode
    return HybridEmbedder(params, model.tokenizer, model.max_length).encode


class HybridEmbedder:
    """Runs the hybrid adapter over length buckets (one compilation per bucket shape)."""

    def __init__(self, params, tokenizer, max_length: int = 256, batch_size: int = 256):
        from embres.adapters import hybrid

        self.params = jax.tree.map(jnp.asarray, params)
        self.tokenizer, self.max_length, self.batch_size = tokenizer, max_length, batch_size

        @jax.jit
        def forward(p, ids, mask):
            vectors = hybrid.apply(p, None, ids, mask)
            return pooling_lib.l2_normalize(pooling_lib.pool(vectors, mask, "mean"))

        self._forward = forward

    def encode(self, texts) -> np.ndarray:
        from embres import tokenize

        texts = tokenize.check_texts(texts)
        rows = (
            [
                r if r else [tokenize.fallback_token_id(self.tokenizer)]
                for r in self.tokenizer(
                    texts, add_special_tokens=False, truncation=True, max_length=self.max_length
                )["input_ids"]
            ]
            if texts
            else []
        )
        dim = self.params["table"].shape[1]
        out = np.zeros((len(rows), dim), np.float32)
        rows = [np.asarray(r, np.int32) for r in rows]
        for idx, ids, mask in tokenize.bucketed_batches(rows, self.batch_size, self.max_length, 0):
            out[idx] = np.asarray(self._forward(self.params, ids, mask))[: len(idx)]
        return out


def export(config, model, adapter, params, table, directory: Path) -> Path:
    """Static: a Model2Vec/sentence-transformers directory. Hybrid: params + the same files."""
    from safetensors.numpy import save_file

    from embres.export import export_static

    meta = {
        "source_model": config.model,
        "target_dim": int(config.adapter.target_dim),
        "adapter": config.adapter.type,
        "objective": "static_distill",
    }
    plain = adapter.materialize(params, table)
    static_table = np.asarray(plain if plain is not None else params["table"], np.float32)
    export_static(static_table, model.tokenizer, directory, meta=meta)
    if plain is None:  # the hybrid's mixer rides along; its static table alone also loads
        flat = {k: np.asarray(v, np.float32) for k, v in params.items()}
        save_file(flat, str(directory / "hybrid.safetensors"))
    return directory


def load_hybrid(directory: str | os.PathLike):
    """An exported hybrid as ``texts -> [n, d]`` (``HybridEmbedder.encode``)."""
    from safetensors.numpy import load_file
    from transformers import AutoTokenizer

    path = Path(directory)
    params = load_file(str(path / "hybrid.safetensors"))
    return HybridEmbedder(params, AutoTokenizer.from_pretrained(str(path))).encode


def fit_adapter(model_adapter, config_or_overrides=None, workdir=None):
    """Trains ``model_adapter`` as ``configs/projection.py`` does (or with a given config).

    The trained table replaces the adapter's table; the run's workdir keeps checkpoints,
    metrics and an export that ``ModelAdapter.load`` reads.
    """
    import ml_collections

    from embres import configlib
    from embres.model_adapter import ModelAdapter
    from embres.train import train_and_evaluate

    if isinstance(config_or_overrides, ml_collections.ConfigDict):
        config = config_or_overrides
    else:
        config = configlib.static_student_config()
        config.model = model_adapter.source_path or model_adapter.source_model
        config.adapter.target_dim = model_adapter.target_dim
        for key, value in (config_or_overrides or {}).items():
            node = config
            *parents, leaf = key.split(".")
            for part in parents:
                node = node[part]
            node[leaf] = value
    workdir = Path(workdir or f"workdirs/fit_{model_adapter.target_dim}")
    train_and_evaluate(config, workdir)
    trained = ModelAdapter.load(workdir / "export")
    model_adapter.embedder = trained.embedder
    return model_adapter
