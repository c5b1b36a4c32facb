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

import os
from pathlib import Path
from typing import Any

import numpy as np

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
        self.corpus = corpus
        self.tokenizer = teacher.tokenizer
        self.embedder = StaticEmbedder(result.table, teacher.tokenizer, normalize=normalize)
        self.teacher = teacher
        self._distillation = result  # the rule new words' rows are made by (add_words)

    @property
    def table(self) -> np.ndarray:
        """The static table [vocab, target_dim]."""
        return self.embedder.table

    def adapt(self, texts, dims: int | None = None) -> np.ndarray:
        """Sentence vectors, numpy [n, target_dim] (or [n, dims] for a truncated table)."""
        return self.embedder.encode(texts, dims=dims)

    def add_words(self, words, rows: np.ndarray | None = None) -> np.ndarray:
        """Makes each word one token of this model, its row made on the fly by the same rule.

        Before training (a freshly distilled adapter, teacher at hand) the rule is
        vocabulary distillation's: the teacher's vector of the word on its own, centred and
        projected on the table's PCA basis, with the SIF weight of a token never seen (the
        rarest weight). After ``fit`` or ``load`` the teacher and basis are gone, and the rule
        is Fast Vocabulary Transfer over this table: the mean of the rows of the pieces the
        word was split into. Texts without the new words embed exactly as before.

        Args:
          words: the words to add (each becomes one token).
          rows: optional [len(words), target_dim] rows to use instead of the rule.

        Returns:
          int64 token ids, one per word.
        """
        from embres import tokenize

        words = tokenize.check_texts(words)
        distilled = getattr(self, "_distillation", None)
        # Distillation pooled one layer (or the mean of all): a single layer is what the
        # extractor gives; the layer mean falls back to FVT.
        if rows is None and distilled is not None and isinstance(self.layer, int):
            from embres.extract import EmbeddingExtractor
            from embres.vocab import teacher_forward_rows

            extractor = EmbeddingExtractor(self.teacher)

            def embed(texts):
                return extractor.extract_embeddings(
                    texts, layer=self.layer, pooling="mean", normalize=False
                )

            raw = teacher_forward_rows(words, embed)
            weight = float(np.max(distilled.weights))
            rows = ((raw - distilled.mean) @ distilled.components.T) * weight
        ids = self.embedder.add_words(words, rows)
        self.tokenizer = self.embedder.tokenizer
        return ids

    def fit(self, config_or_overrides: Any = None, workdir: str | os.PathLike | None = None):
        """Trains this static student against its teacher with ``embres.train``.

        The run is ``configs/projection.py``'s (``configlib.static_student_config``) at this
        adapter's width, with the constructor's ``layer`` (the teacher layer the table is
        distilled from) and ``corpus`` (texts, or a ``text:PATH`` / ``tfds:`` spec, become
        the training corpus, written to ``<workdir>/corpus.txt`` when given as texts).
        Sentence vectors are L2-normalised when trained, so ``normalize=False`` is refused.

        Args:
          config_or_overrides: an ``ml_collections.ConfigDict`` used as it is, or a dict of
            dotted overrides (``{"total_steps": 100, "data.source": "text:x.txt"}``); an
            unknown key is refused by name, as the command line refuses it.
          workdir: where checkpoints, metrics and the export go.

        Raises:
          ValueError: for an unknown override key or ``normalize=False``.
        """
        import ml_collections

        from embres import configlib
        from embres.train import train_and_evaluate

        workdir = Path(workdir or f"workdirs/fit_{self.target_dim}")
        if isinstance(config_or_overrides, ml_collections.ConfigDict):
            config = config_or_overrides
        else:
            if not self.embedder.normalize:
                raise ValueError(
                    "ModelAdapter.fit trains normalised sentence vectors; normalize=False "
                    "cannot be honoured (construct with normalize=True, or train with a config)"
                )
            config = configlib.static_student_config(self.target_dim)
            config.model = self.source_path or self.source_model
            config.objective.teacher_layer = self.layer
            if self.corpus is not None:
                config.data.source = _corpus_spec(self.corpus, workdir)
            configlib.apply_overrides(config, dict(config_or_overrides or {}))
        train_and_evaluate(config, workdir)
        trained = ModelAdapter.load(workdir / "export")
        self.embedder = trained.embedder
        self.tokenizer = trained.tokenizer
        self._distillation = None  # trained rows: new words get FVT over the trained table
        return self

    def save(
        self, directory: str | os.PathLike, int8: bool = False, keep_float32: bool = True
    ) -> Path:
        """Writes a directory that embres, Model2Vec and sentence-transformers load.

        A model already in ``directory`` is replaced (and said so); weight files of an
        earlier save that this one does not write are removed, so the directory always
        holds one model. See :mod:`embres.export`.

        Args:
          directory: output directory.
          int8: add a per-row int8 copy of the table (``model_int8.safetensors``).
          keep_float32: with ``int8``, False ships the int8 table alone (embres loads it).
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
            keep_float32=keep_float32,
        )

    @classmethod
    def load(cls, directory: str | os.PathLike, int8: bool | None = None) -> ModelAdapter:
        """Loads a directory written by :meth:`save`, or a training workdir's ``export/``.

        Args:
          directory: the export (or a workdir holding one in ``export/``).
          int8: True reads the int8 table, False the float32 one, None the float32 one when
            present, else the int8 one (a directory saved int8-only loads on its own).

        Raises:
          FileNotFoundError: naming the files expected.
        """
        from embres.export import load_student

        embedder = load_student(directory, int8=int8, static=True)
        meta = embedder.meta
        state = {
            "source_model": meta.get("source_model", ""),
            "source_path": None,
            "target_dim": int(embedder.dim),
            "layer": meta.get("layer", -1),
            "distill_seconds": None,
            "tokenizer": embedder.tokenizer,
            "embedder": embedder,
            "teacher": None,
            "corpus": None,
            "_distillation": None,
        }
        return cls(_state=state)


def _corpus_spec(corpus: Any, workdir: Path) -> str:
    """A ``config.data.source`` for ``corpus``: a spec string as it is, texts to a file."""
    if isinstance(corpus, str) and corpus.split(":", 1)[0] in ("text", "tfds"):
        return corpus
    if isinstance(corpus, (str, os.PathLike)):
        raise ValueError(
            f"corpus={str(corpus)!r}; expected texts, or a 'text:PATH' / 'tfds:NAME' spec"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "corpus.txt"
    with open(path, "w", encoding="utf-8") as f:
        for text in corpus:
            line = " ".join(str(text).split())
            if line:
                f.write(line + "\n")
    return f"text:{path}"
