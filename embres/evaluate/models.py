"""What ``--model`` may name: ``load_embedder(spec) -> (name, embed_fn, info)``.

Specs understood here:

* a model name or path: the teacher as it is, through :class:`embres.EmbeddingExtractor`;
* ``sentence-transformers:<name or path>``: a peer through ``SentenceTransformer``;
* ``model2vec:<name or path>``: a peer through ``StaticModel.from_pretrained``.

``info`` holds what the tasks other than quality need: ``params`` (array tree) and ``table``
([vocab, d]) for ``memory``; ``count_tokens`` and ``device`` for ``speed``; and plain
JSON values (``kind``, ``dim``, ...) that go into the report.

Extending (e.g. training workdirs or export dirs)::

    from embres.evaluate import models
    models.register_loader("workdir", load_workdir)            # spec "workdir:<path>"
    models.register_detector(lambda s: Path(s, "checkpoints").is_dir(), load_workdir)

A loader is ``loader(target, batch_size=..., dtype=...) -> (embed_fn, info)``; detectors are
tried, in order, on specs without a known prefix before the extractor default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from embres.evaluate.common import EmbedFn

Loader = Callable[..., tuple[EmbedFn, dict[str, Any]]]
LOADERS: dict[str, Loader] = {}
DETECTORS: list[tuple[Callable[[str], bool], Loader]] = []


def register_loader(prefix: str, loader: Loader) -> None:
    """Makes ``<prefix>:<target>`` specs load through ``loader(target, **options)``."""
    LOADERS[prefix] = loader


def register_detector(matches: Callable[[str], bool], loader: Loader) -> None:
    """Loads specs without a prefix through ``loader`` when ``matches(spec)`` is true."""
    DETECTORS.append((matches, loader))


def load_embedder(
    spec: str, batch_size: int = 64, dtype: str = "float32"
) -> tuple[str, EmbedFn, dict[str, Any]]:
    """Loads what ``spec`` names; see the module docstring for the forms.

    Args:
      spec: ``<name or path>``, ``sentence-transformers:<path>``, ``model2vec:<path>`` or a
        registered ``<prefix>:<target>``.
      batch_size: texts per forward pass.
      dtype: compute dtype for embres models.

    Returns:
      (display name, embed_fn mapping list[str] -> float32 [n, d], info dict).
    """
    prefix, sep, target = spec.partition(":")
    if sep and prefix in LOADERS:
        embed_fn, info = LOADERS[prefix](target, batch_size=batch_size, dtype=dtype)
        return spec, embed_fn, info
    for matches, loader in DETECTORS:
        if matches(spec):
            embed_fn, info = loader(spec, batch_size=batch_size, dtype=dtype)
            return spec, embed_fn, info
    embed_fn, info = load_extractor(spec, batch_size=batch_size, dtype=dtype)
    return spec, embed_fn, info


def load_extractor(target: str, batch_size: int = 64, dtype: str = "float32", **_):
    """An embres model (bundled name, HF directory or cached hub id) as it is."""
    from embres import EmbeddingExtractor, tokenize
    from embres.evaluate.speed import default_device

    ex = EmbeddingExtractor(model=target, dtype=dtype, batch_size=batch_size)

    def embed_fn(texts: list[str]) -> np.ndarray:
        return ex.extract_embeddings(texts)

    def count_tokens(texts: list[str]) -> int:
        return sum(len(t) for t in tokenize.encode(ex.model.tokenizer, texts, ex.max_length))

    info = {
        "kind": "embres",
        "path": str(ex.model.path),
        "dim": ex.dim,
        "dtype": dtype,
        "pooling": ex.model.pooling,
        "normalize": ex.model.normalize,
        "params": ex.params,
        "table": ex.model.embedding_table(),
        "count_tokens": count_tokens,
        "device": default_device(),
    }
    return embed_fn, info


def _bundled_path(target: str) -> str:
    """Bundled embres names (e.g. all-MiniLM-L6-v2) map to their directory for peers too."""
    from embres.models import BUNDLED, resolve

    return str(resolve(target)) if target in BUNDLED else target


def load_sentence_transformer(target: str, batch_size: int = 64, **_):
    """A sentence-transformers model (name or path) as a peer."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(_bundled_path(target))

    def embed_fn(texts: list[str]) -> np.ndarray:
        return model.encode(
            texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
        ).astype(np.float32)

    def count_tokens(texts: list[str]) -> int:
        ids = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]
        return sum(len(i) for i in ids)

    first = model[0]
    auto = getattr(first, "auto_model", None)
    table = auto.get_input_embeddings().weight if auto is not None else None
    info = {
        "kind": "sentence-transformers",
        "path": _bundled_path(target),
        "dim": int(model.encode(["dim"], convert_to_numpy=True).shape[1]),
        "params": dict(model.state_dict()),
        "table": None if table is None else table.detach(),
        "count_tokens": count_tokens,
        "device": str(model.device),
    }
    return embed_fn, info


def load_model2vec(target: str, batch_size: int = 64, **_):
    """A Model2Vec static model (name or path) as a peer."""
    from model2vec import StaticModel

    model = StaticModel.from_pretrained(target)

    def embed_fn(texts: list[str]) -> np.ndarray:
        return np.asarray(
            model.encode(texts, batch_size=batch_size, use_multiprocessing=False), np.float32
        )

    def count_tokens(texts: list[str]) -> int:
        return sum(len(ids) for ids in model.tokenize(texts))

    info = {
        "kind": "model2vec",
        "path": target,
        "dim": int(model.dim),
        "params": {"embedding": model.embedding},
        "table": model.embedding,
        "count_tokens": count_tokens,
        "device": "cpu (numpy)",
    }
    return embed_fn, info


register_loader("sentence-transformers", load_sentence_transformer)
register_loader("model2vec", load_model2vec)
