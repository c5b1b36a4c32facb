"""embres: study, compress, adapt and distil the embedding layers of pretrained models.

Public API (imports are lazy, so ``import embres`` does no heavy work):
  * :class:`EmbeddingExtractor` — static tables and layer-k sentence embeddings.
  * :class:`ModelAdapter` — a static student of a teacher: distil, adapt, fit, save, load.
  * :func:`load_model` — a Hugging Face checkpoint in our Flax ports.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["EmbeddingExtractor", "ModelAdapter", "load_model"]


def __getattr__(name: str):
    if name == "EmbeddingExtractor":
        from embres.extract import EmbeddingExtractor

        return EmbeddingExtractor
    if name == "ModelAdapter":
        from embres.model_adapter import ModelAdapter

        return ModelAdapter
    if name == "load_model":
        from embres.models import load_model

        return load_model
    raise AttributeError(f"module 'embres' has no attribute {name!r}")
