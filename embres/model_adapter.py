"""``ModelAdapter``: a static embedding model adapted from a pretrained teacher.

Example::

    from embres import ModelAdapter
    adapter = ModelAdapter(source_model="all-MiniLM-L6-v2", target_dim=256)  # training-free
    vecs = adapter.adapt(["A man is playing a guitar."])                    # numpy [1, 256]
    adapter.save("my-static")              # a Model2Vec-format directory, float16 table
    same = ModelAdapter.load("my-static")

Construction runs vocabulary distillation (each token through the teacher on its own, SIF
weighting, PCA to ``target_dim``). Inference is numpy only: nothing compiles per batch shape.
For GPT-2 every vocabulary item is a single token with no special tokens around it, so its
last-token and mean poolings coincide; sentences are then the mean of their token rows, since
a static table has no notion of "the token that has seen the whole text".
"""

from __future__ import annotations

import hashlib
import os
import reprlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from embres.cli import UsageError
from embres.static_embedder import StaticEmbedder


class ModelAdapter:
    """A static student of ``source_model`` producing ``target_dim``-d sentence vectors.

    Args:
      source_model: the teacher (bundled name, HF directory or cached hub id).
      target_dim: output width (at most the teacher's width).
      layer: teacher layer to distil from (``-1`` last; ``"mean"`` averages the blocks).
      normalize: L2-normalise sentence vectors.
      corpus: optional texts whose token counts set the SIF weights (else a Zipf prior):
        a list of strings, or a text file (a path, ``str`` or ``os.PathLike``, or a
        ``"text:PATH"`` spec; read as UTF-8 under the rule of ``text:`` sources). A string
        is never taken as texts. :meth:`fit` trains on the same corpus.
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
        _check_layer(layer)
        corpus = _check_corpus(corpus)
        teacher = load_model(source_model)
        if target_dim > teacher.config.hidden_size:
            raise ValueError(
                f"target_dim={target_dim} exceeds the teacher's width {teacher.config.hidden_size}"
            )
        counts = None
        if corpus is not None:
            texts = _read_lines(corpus) if isinstance(corpus, Path) else corpus
            counts = token_counts(teacher.tokenizer, texts, teacher.config.vocab_size)
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
        Everything is checked before anything is trained or written. The workdir is named
        at the start (re-running the same call resumes from its last checkpoint), and the
        time taken and the export's folder at the end.

        Args:
          config_or_overrides: an ``ml_collections.ConfigDict`` used as it is, or a dict of
            dotted overrides (``{"total_steps": 100, "data.source": "text:x.txt"}``); an
            unknown key is refused by name, as the command line refuses it.
          workdir: where checkpoints, metrics and the export go
            (default ``workdirs/fit_<target_dim>``).

        Raises:
          ValueError: for overrides that are not a dict, an unknown override key,
            ``normalize=False``, a ``workdir`` that is a file, or texts other than those the
            workdir's checkpoint was trained on (naming both).
          LockedError: another run holds the workdir (checked before corpus.txt is written).
        """
        from embres.train import train_and_evaluate

        workdir = Path(workdir or f"workdirs/fit_{self.target_dim}")
        _check_workdir(workdir)
        config, texts = self._fit_config(config_or_overrides, workdir)
        if texts is not None:
            _write_corpus(texts, workdir)
        _report(_start_message(config, workdir))
        started = time.perf_counter()
        train_and_evaluate(config, workdir)
        export = workdir / "export"
        trained = ModelAdapter.load(export)
        self.embedder = trained.embedder
        self.tokenizer = trained.tokenizer
        self._distillation = None  # trained rows: new words get FVT over the trained table
        _report(
            f"done in {time.perf_counter() - started:.0f}s; the trained model is in "
            f"{export.absolute()} (this adapter now holds it; ModelAdapter.load"
            f"({str(export.absolute())!r}) reads it back)"
        )
        return self

    def _fit_config(self, config_or_overrides: Any, workdir: Path):
        """``(config, texts)``: the config :meth:`fit` trains, and texts to write as its corpus.

        Refuses a mistake before anything is written. Texts are returned (for
        ``<workdir>/corpus.txt``) only when the overrides do not name another source.
        """
        import ml_collections

        from embres import configlib

        if isinstance(config_or_overrides, ml_collections.ConfigDict):
            return config_or_overrides, None
        overrides = _check_overrides(config_or_overrides)
        if not self.embedder.normalize:
            raise UsageError(
                "ModelAdapter.fit trains normalised sentence vectors; normalize=False "
                "cannot be honoured (construct with normalize=True, or train with a config)"
            )
        config = configlib.static_student_config(self.target_dim)
        config.model = self.source_path or self.source_model
        config.objective.teacher_layer = self.layer
        corpus_spec, texts = _corpus_spec(self.corpus, workdir)
        if corpus_spec is not None:
            config.data.source = corpus_spec
        configlib.apply_overrides(config, overrides)
        if texts is not None and config.data.source == corpus_spec:
            return config, texts
        return config, None

    def save(
        self,
        directory: str | os.PathLike,
        int8: bool = False,
        keep_float32: bool = True,
        dtype: str = "float16",
    ) -> Path:
        """Writes a directory that embres, Model2Vec and sentence-transformers load.

        The table is stored in float16 by default (``model.safetensors``, half the bytes of
        float32, as Model2Vec stores its own): every entry within float16's rounding
        (2**-11 relative), sentence vectors within cosine 0.9999 of this adapter's.
        ``dtype="float32"`` stores it bit for bit. Loading upcasts to float32 either way.

        A model already in ``directory`` is replaced (and said so); weight files of an
        earlier save that this one does not write are removed, so the directory always
        holds one model. A training workdir (``checkpoints/``, ``train_config.json`` or
        ``export/`` in it) is refused: its model is in ``export/``. See :mod:`embres.export`.

        Args:
          directory: output directory.
          int8: add a per-row int8 copy of the table (``model_int8.safetensors``).
          keep_float32: with ``int8``, False ships the int8 table alone (embres loads it);
            True keeps ``model.safetensors`` (in ``dtype``), which every reader needs.
          dtype: ``"float16"`` (default) or ``"float32"``: how ``model.safetensors`` stores
            the table.
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
            dtype=dtype,
        )

    @classmethod
    def load(cls, directory: str | os.PathLike, int8: bool | None = None) -> ModelAdapter:
        """Loads a directory written by :meth:`save`, or a training workdir's ``export/``.

        Args:
          directory: the export (or a workdir holding one in ``export/``).
          int8: True reads the int8 table, False ``model.safetensors`` (float16 or float32,
            upcast to float32), None ``model.safetensors`` when present, else the int8 one
            (a directory saved int8-only loads on its own).

        Raises:
          FileNotFoundError: naming the files expected.
          ValueError: for a transformer checkpoint (naming it; ``ModelAdapter(directory)``
            distils a static model from one, ``EmbeddingExtractor`` embeds with it).
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


def _report(message: str) -> None:
    """One ``[embres.fit]`` line on stdout (process 0 only, as embres.train reports)."""
    import jax

    if jax.process_index() == 0:
        print(f"[embres.fit] {message}", flush=True)


def _check_overrides(overrides: Any) -> dict[str, Any]:
    """``overrides`` as a dict of dotted keys; anything else is refused, naming what it got."""
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise UsageError(
            f"ModelAdapter.fit got {reprlib.repr(overrides)} ({type(overrides).__name__}); "
            "expected a dict of dotted overrides, e.g. {'total_steps': 100, "
            "'data.source': 'text:corpus.txt'}, or an ml_collections.ConfigDict (nothing "
            "was trained)"
        )
    keys = [k for k in overrides if not isinstance(k, str)]
    if keys:
        raise UsageError(
            f"ModelAdapter.fit overrides have keys {keys!r} that are not strings; expected "
            "dotted config keys such as 'data.source' (nothing was trained)"
        )
    return dict(overrides)


def _start_message(config: Any, workdir: Path) -> str:
    """What fit is about to do, where, and how to resume it."""
    checkpoints = workdir / "checkpoints"
    resuming = checkpoints.is_dir() and any(checkpoints.iterdir())
    every = config.get("checkpoint", {}).get("every_steps", "?")
    return (
        f"training {config.get('model')!s} for {config.get('total_steps')} steps (batch "
        f"{config.get('batch_size')}) in workdir {workdir.absolute()}"
        + (", resuming from its last checkpoint" if resuming else "")
        + f" (a checkpoint every {every} steps: re-running this fit() with the same workdir "
        f"resumes from the last one); the loss and an ETA are printed every "
        f"{config.get('log_every_steps')} steps"
    )


# The teacher layers ModelAdapter distils from besides an index (embres.distill).
LAYER_NAMES = ("mean",)


def _check_layer(layer: Any) -> None:
    """Refuses a ``layer`` that is neither an int index nor one of :data:`LAYER_NAMES`."""
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
        return  # its range is checked against the teacher's depth (embres.distill)
    if isinstance(layer, str) and layer in LAYER_NAMES:
        return
    raise ValueError(
        f"layer={layer!r}; expected an int layer index (-1 = the last layer, 0 = the input "
        f"embeddings) or one of {list(LAYER_NAMES)} (the average of all blocks)"
    )


_CORPUS_FORMS = "a list of texts, a text file's path, or a 'text:PATH' spec"


def _check_corpus(corpus: Any) -> Any:
    """``corpus`` as texts or a :class:`Path` to a text file; a string is never texts.

    Raises:
      FileNotFoundError: a path (or ``text:`` spec) that names no file.
      ValueError: a ``tfds:`` spec (read by :meth:`ModelAdapter.fit` only), or a corpus
        whose file is not UTF-8 text (the rule of ``text:`` sources).
    """
    if corpus is None or not isinstance(corpus, (str, os.PathLike)):
        return corpus
    if isinstance(corpus, str) and corpus.startswith("tfds:"):
        raise UsageError(
            f"corpus={corpus!r}: a tfds source is read by training only; pass it to fit as "
            f"{{'data.source': {corpus!r}}}, or give here {_CORPUS_FORMS}"
        )
    shown = corpus
    if isinstance(corpus, str) and corpus.startswith("text:"):
        corpus = corpus[len("text:") :]
    path = Path(corpus).expanduser()
    if not path.is_file():
        what = "a directory" if path.is_dir() else "not an existing file"
        raise FileNotFoundError(f"corpus={str(shown)!r} is {what}; expected {_CORPUS_FORMS}")
    from embres.data.text import check_utf8

    check_utf8(path)  # warns about a few bad lines, refuses a file that is mostly not UTF-8
    return path.absolute()


def _read_lines(path: Path):
    """The non-empty lines of a text file (bad bytes read as U+FFFD, as ``text:`` reads)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                yield line.rstrip("\n")


def _check_workdir(workdir: Path) -> None:
    """Refuses, before any work, a ``workdir`` that exists and is not a directory."""
    if workdir.exists() and not workdir.is_dir():
        raise UsageError(
            f"workdir={str(workdir)!r} is a file; expected a directory (new or holding an "
            "earlier fit) for checkpoints, metrics and the export (nothing was trained)"
        )


def _corpus_spec(corpus: Any, workdir: Path) -> tuple[str | None, Any]:
    """(the ``config.data.source`` for ``corpus``, texts to write there or None).

    A text file is trained on where it is; texts go to ``<workdir>/corpus.txt`` (written
    later, by :func:`_write_corpus`, once the rest of the config is known good).
    """
    if corpus is None:
        return None, None
    if isinstance(corpus, (str, os.PathLike)):
        return f"text:{_check_corpus(corpus)}", None
    return f"text:{workdir / 'corpus.txt'}", corpus


def _write_corpus(texts: Any, workdir: Path) -> None:
    """Writes texts one per line (whitespace collapsed, empty ones dropped) to corpus.txt.

    Under the workdir's lock (``<workdir>/.lock``, the one ``embres.train`` takes), so a
    fit on a busy workdir is refused before it touches the running run's corpus. A
    workdir holding a checkpoint keeps its corpus: texts that differ from it (by sha256)
    are refused, naming both, since the checkpoint's saved position is an offset into
    that file. Written aside and renamed, so an interrupted write never leaves half a
    corpus that a resumed fit would train on.
    """
    from embres.checkpointing import newest_meta
    from embres.locking import FileLock

    path = workdir / "corpus.txt"
    lock = FileLock(
        workdir / ".lock",
        f"workdir {workdir}",
        hint="Wait for that run to finish, or give this fit another workdir",
    )
    with lock:
        partial = path.with_name(f"corpus.txt.partial-{os.getpid()}")
        try:
            digest, lines = _write_lines(texts, partial)
            newest = newest_meta(workdir / "checkpoints")
            if newest is not None:
                _check_same_corpus(path, newest[0], digest, lines)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)


def _write_lines(texts: Any, path: Path) -> tuple[str, int]:
    """Writes ``texts`` one per line to ``path``; returns (sha256 of the bytes, lines)."""
    digest, lines = hashlib.sha256(), 0
    with open(path, "wb") as f:
        for text in texts:
            line = " ".join(str(text).split())
            if line:
                data = (line + "\n").encode("utf-8")
                f.write(data)
                digest.update(data)
                lines += 1
    return digest.hexdigest(), lines


NEWLINE = b"\n"


def _check_same_corpus(path: Path, step: int, digest: str, lines: int) -> None:
    """Refuses texts other than the ``corpus.txt`` a checkpoint (at ``step``) trained on."""
    if path.is_file():
        data = path.read_bytes()
        old = hashlib.sha256(data).hexdigest()
        if old == digest:
            return
        held = f"{path} (sha256 {old[:12]}, {data.count(NEWLINE):,} lines)"
    else:
        held = f"a {path} that is no longer there"
    raise UsageError(
        f"{path.parent} holds a checkpoint (step {step}) trained on {held}, but this fit's "
        f"texts differ (sha256 {digest[:12]}, {lines:,} lines); resuming would read its saved "
        f"position in other texts. Use another workdir, or delete {path.parent / 'checkpoints'}"
        " to start over"
    )
