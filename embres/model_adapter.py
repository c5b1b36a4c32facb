"""``ModelAdapter``: a static embedding model adapted from a pretrained teacher.

Example::

    from embres import ModelAdapter
    adapter = ModelAdapter(source_model="all-MiniLM-L6-v2", target_dim=256)  # training-free
    vecs = adapter.adapt(["A man is playing a guitar."])                    # numpy [1, 256]
    adapter.save("my-static")              # a Model2Vec-format directory
    same = ModelAdapter.load("my-static")

Construction runs vocabulary distillation (each token through the teacher on its own, SIF
weighting, PCA to ``target_dim``). Inference is numpy only: nothing compiles per batch shape.
For GPT-2 every vocabulary item is a single token with no special tokens around it, so its
last-token and mean poolings coincide; sentences are then the mean of their token rows, since
a static table has no notion of "the token that has seen the whole text".
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from embres.export import META_FILE
from embres.static import StaticEmbedder


class ModelAdapter:
    """A static student of ``source_model`` producing ``target_dim``-d sentence vectors.

    Args:
      source_model: the teacher (bundled name, HF directory or cached hub id).
      target_dim: output width (at most the teacher's width).
      layer: teacher layer to distil from (``-1`` last; ``"mean"`` averages the blocks).
      normalize: L2-normalise sentence vectors.
      corpus: optional texts whose token counts set the SIF weights (else a Zipf prior).
    """

    def __init__(
        self,
        source_model: str | os.PathLike = "all-MiniLM-L6-v2",
        target_dim: int = 256,
        layer: int | str = -1,
        normalize: bool = True,
        corpus: Any = None,
        *,
        _state: dict[str, Any] | None = None,
    ):
        if _state is not None:  # from load()
            self.__dict__.update(_state)
            return
        from embres.distill import distill_vocabulary, token_counts
        from embres.models import load_model

        if not isinstance(target_dim, int) or target_dim <= 0:
            raise ValueError(f"target_dim={target_dim!r}; expected a positive integer")
        teacher = load_model(source_model)
        if target_dim > teacher.config.hidden_size:
            raise ValueError(
                f"target_dim={target_dim} exceeds the teacher's width {teacher.config.hidden_size}"
            )
        counts = None
        if corpus is not None:
            counts = token_counts(teacher.tokenizer, corpus, teacher.config.vocab_size)
        result = distill_vocabulary(teacher, target_dim, layer=layer, counts=counts)
        self.source_model = str(source_model)
        self.source_path = str(teacher.path)
        self.target_dim = target_dim
        self.layer = layer
        self.distill_seconds = result.seconds
        self.tokenizer = teacher.tokenizer
        self.embedder = StaticEmbedder(result.table, teacher.tokenizer, normalize=normalize)
        self.teacher = teacher

    @property
    def table(self) -> np.ndarray:
        """The static table [vocab, target_dim]."""
        return self.embedder.table

    def adapt(self, texts, dims: int | None = None) -> np.ndarray:
        """Sentence vectors, numpy [n, target_dim] (or [n, dims] for a truncated table)."""
        return self.embedder.encode(texts, dims=dims)

    def fit(self, config_or_overrides: Any = None, workdir: str | os.PathLike | None = None):
        """Trains the static student against the teacher with ``embres.train``.

        Args:
          config_or_overrides: an ``ml_collections.ConfigDict`` or a dict of overrides applied
            to ``configs/projection.py``'s defaults.
          workdir: where checkpoints, metrics and the export go.
        """
        from embres.static_training import fit_adapter

        return fit_adapter(self, config_or_overrides, workdir)

    def save(self, directory: str | os.PathLike, int8: bool = False) -> Path:
        """Writes a directory that embres, Model2Vec and sentence-transformers load.

        See :mod:`embres.export`; ``int8=True`` adds a per-row int8 copy of the table.
        """
        from embres.export import export_static

        meta = {
            "source_model": self.source_model,
            "target_dim": self.target_dim,
            "layer": self.layer,
        }
        return export_static(
            self.table,
            self.tokenizer,
            directory,
            normalize=self.embedder.normalize,
            meta=meta,
            int8=int8,
        )

    @classmethod
    def load(cls, directory: str | os.PathLike, int8: bool = False) -> ModelAdapter:
        """Loads a directory written by :meth:`save`, or a training workdir's ``export/``.

        ``int8=True`` reads the per-row int8 table instead of the float32 one.
        """
        from transformers import AutoTokenizer

        from embres.export import load_static_table

        path = Path(directory)
        if not (path / "model.safetensors").exists() and (path / "export").is_dir():
            path = path / "export"
        if not (path / "model.safetensors").exists():
            raise FileNotFoundError(
                f"{directory} holds no static model: expected model.safetensors (from "
                "ModelAdapter.save) or a training workdir with export/"
            )
        table = load_static_table(path, int8=int8)
        meta = json.loads((path / META_FILE).read_text()) if (path / META_FILE).exists() else {}
        config = json.loads((path / "config.json").read_text())
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        normalize = bool(meta.get("normalize", config.get("normalize", True)))
        state = {
            "source_model": meta.get("source_model", config.get("tokenizer_name", "")),
            "source_path": None,
            "target_dim": int(table.shape[1]),
            "layer": meta.get("layer", -1),
            "distill_seconds": None,
            "tokenizer": tokenizer,
            "embedder": StaticEmbedder(table, tokenizer, normalize=normalize),
            "teacher": None,
        }
        return cls(_state=state)
