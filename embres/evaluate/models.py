"""What ``--model`` may name: ``load_embedder(spec) -> (name, embed_fn, info)``.

Specs understood here:

* a model name or path: the teacher as it is, through :class:`embres.EmbeddingExtractor`;
* ``sentence-transformers:<name or path>``: a peer through ``SentenceTransformer``;
* ``model2vec:<name or path>``: a peer through ``StaticModel.from_pretrained``;
* an embres static export (a directory holding ``embres_static.json``, a static table or an
  adapter over one such as a hybrid), or a training workdir whose ``export/`` holds one:
  through :func:`embres.export.load_student`; ``int8=True`` (CLI ``--int8``) evaluates its
  per-row int8 table; ``static:<path>`` and ``int8:<path>`` name these explicitly;
* a training workdir whose ``export/`` holds a Hugging Face ``config.json`` (the compressed
  teacher): through :class:`embres.EmbeddingExtractor`; the low-rank factors that
  ``embres.train`` keeps in ``export/adapter/adapter.safetensors`` go into ``info["factors"]``
  so ``memory`` reports the factored table size too.

``info`` holds what the tasks other than quality need: for ``memory``, ``params`` (every
array the loaded model holds in memory), ``table`` ([vocab, d], as held), ``disk_bytes`` (the
weight files it was read from) and optionally ``factors`` (array tree); for ``speed``,
``count_tokens`` and ``device``; and plain JSON values (``kind``, ``dim``, ...) that go into
the report.

Extending (e.g. training workdirs or export dirs)::

    from embres.evaluate import models
    models.register_loader("workdir", load_workdir)            # spec "workdir:<path>"
    models.register_detector(lambda s: Path(s, "checkpoints").is_dir(), load_workdir)

A loader is ``loader(target, batch_size=..., dtype=...) -> (embed_fn, info)``; detectors are
tried, in order, on specs without a known prefix before the extractor default.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
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
    spec: str, batch_size: int = 64, dtype: str = "float32", int8: bool = False
) -> tuple[str, EmbedFn, dict[str, Any]]:
    """Loads what ``spec`` names; see the module docstring for the forms.

    Args:
      spec: ``<name or path>``, ``sentence-transformers:<path>``, ``model2vec:<path>``, an
        embres static export or training workdir, or a registered ``<prefix>:<target>``.
      batch_size: texts per forward pass.
      dtype: compute dtype for embres models.
      int8: evaluate the per-row int8 table of an embres static export (its name gets
        `` [int8]``); other models raise ``ValueError``.

    Returns:
      (display name, embed_fn mapping list[str] -> float32 [n, d], info dict).
    """
    options: dict[str, Any] = {"batch_size": batch_size, "dtype": dtype}
    if int8:  # only passed when asked, so loaders without int8 support need not know it
        options["int8"] = True
    name = f"{spec} [int8]" if int8 else spec
    prefix, sep, target = spec.partition(":")
    if sep and prefix in LOADERS:
        embed_fn, info = LOADERS[prefix](target, **options)
        return name, embed_fn, info
    for matches, loader in DETECTORS:
        if matches(spec):
            embed_fn, info = loader(spec, **options)
            return name, embed_fn, info
    embed_fn, info = load_extractor(spec, **options)
    return name, embed_fn, info


def _refuse_int8(target: str, int8: bool) -> None:
    if int8:
        raise ValueError(
            f"int8=True (--int8) applies to embres static exports (a directory with "
            f"embres_static.json); {target!r} is not one"
        )


def weight_file_bytes(directory: str | Path, modules: bool = False) -> int | None:
    """Bytes of the weight files a model directory is read from, or None when it has none.

    ``model.safetensors``, else the shards of ``model.safetensors.index.json``, else
    ``pytorch_model.bin``; with ``modules`` (sentence-transformers), also those of the module
    folders (e.g. ``2_Dense/``).
    """
    path = Path(directory)
    if not path.is_dir():
        return None
    folders = [path]
    if modules:
        folders += sorted(p for p in path.iterdir() if p.is_dir() and p.name[:1].isdigit())
    total, found = 0, False
    for folder in folders:
        index = folder / "model.safetensors.index.json"
        if (folder / "model.safetensors").is_file():
            files = [folder / "model.safetensors"]
        elif index.is_file():
            shards = json.loads(index.read_text())["weight_map"].values()
            files = [folder / name for name in sorted(set(shards))]
        else:
            files = [f for f in (folder / "pytorch_model.bin",) if f.is_file()]
        total += sum(f.stat().st_size for f in files)
        found = found or bool(files)
    return total if found else None


def load_extractor(
    target: str, batch_size: int = 64, dtype: str = "float32", int8: bool = False, **_
):
    """An embres model (bundled name, HF directory or cached hub id) as it is."""
    _refuse_int8(target, int8)
    from embres import tokenize
    from embres.evaluate.speed import default_device
    from embres.extract import EmbeddingExtractor

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
        "disk_bytes": weight_file_bytes(ex.model.path),
        "count_tokens": count_tokens,
        "device": default_device(),
    }
    return embed_fn, info


def _bundled_path(target: str) -> str:
    """Bundled embres names (e.g. all-MiniLM-L6-v2) map to their directory for peers too."""
    from embres.models import BUNDLED, resolve

    return str(resolve(target)) if target in BUNDLED else target


def load_sentence_transformer(target: str, batch_size: int = 64, int8: bool = False, **_):
    """A sentence-transformers model (name or path) as a peer."""
    _refuse_int8(target, int8)
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
        "disk_bytes": weight_file_bytes(_bundled_path(target), modules=True),
        "count_tokens": count_tokens,
        "device": str(model.device),
    }
    return embed_fn, info


def load_model2vec(target: str, batch_size: int = 64, int8: bool = False, **_):
    """A Model2Vec static model (name or path) as a peer."""
    _refuse_int8(target, int8)
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
        "disk_bytes": weight_file_bytes(target),
        "count_tokens": count_tokens,
        "device": "cpu (numpy)",
    }
    return embed_fn, info


def static_export_dir(spec: str) -> Path | None:
    """The static export ``spec`` names (itself or ``<spec>/export``), or None."""
    from embres.export import META_FILE

    for path in (Path(spec), Path(spec, "export")):
        if (path / META_FILE).is_file():
            return path
    return None


def is_hf_workdir(spec: str) -> bool:
    """A training workdir whose ``export/`` is a Hugging Face model directory."""
    return Path(spec, "export", "config.json").is_file() and static_export_dir(spec) is None


def is_unknown_workdir(spec: str) -> bool:
    """A directory with ``export/`` that is neither form above (loading it would mislead)."""
    return Path(spec, "export").is_dir() and static_export_dir(spec) is None


def load_static(target: str, int8: bool = False, **_):
    """An embres static export (or a workdir with one in ``export/``) via ``load_student``.

    Static tables and adapters that run over them (e.g. a hybrid) load the same way; ``info``
    holds the arrays the loaded model keeps (``params``: with ``int8`` that is whatever the
    loader holds, e.g. the dequantised float32 table) and the bytes of the weight files it
    was read from (``disk_bytes``).

    Raises:
      FileNotFoundError: naming the directory and the files expected there.
    """
    from embres.evaluate.speed import default_device
    from embres.export import FLOAT_FILE, META_FILE, load_student

    path = static_export_dir(target)
    if path is None:
        raise FileNotFoundError(
            f"{target} is not an embres static export: expected {META_FILE} in it or in "
            f"{Path(target, 'export')}"
        )
    # int8=None: the float32 table when the export has one, else its int8 table (int8-only).
    student = load_student(path, int8=True if int8 else None)
    params = dict(student.params)
    int8 = bool(int8) or (student.kind == "static" and not (path / FLOAT_FILE).exists())

    def embed_fn(texts: list[str]) -> np.ndarray:
        return np.asarray(student.encode(list(texts)), np.float32)

    def count_tokens(texts: list[str]) -> int:
        return sum(len(ids) for ids in student.token_ids(list(texts)))

    meta = dict(student.meta or {})
    info = {
        "kind": "embres-static" if student.kind == "static" else f"embres-{student.kind}",
        "path": str(path),
        "dim": int(student.dim),
        "int8": bool(int8),
        "disk_bytes": int(student.disk_bytes),
        "params": params,
        "table": held_table(student, params),
        "count_tokens": count_tokens,
        "device": "cpu (numpy)" if student.kind == "static" else default_device(),
    }
    if meta.get("source_model"):
        info["source_model"] = str(meta["source_model"])
    return embed_fn, info


def held_table(student: Any, params: dict[str, Any]) -> Any:
    """The [vocab, d] table a loaded student holds: its ``table``, else the params' one."""
    table = getattr(student, "table", None)
    if table is None:
        table = params.get("table", params.get("embeddings"))
    return table if table is not None and np.ndim(table) == 2 else None


def load_hf_workdir(target: str, batch_size: int = 64, dtype: str = "float32", **options):
    """A training workdir's ``export/`` Hugging Face directory (e.g. the compressed teacher)."""
    embed_fn, info = load_extractor(
        str(Path(target, "export")), batch_size=batch_size, dtype=dtype, **options
    )
    factors_file = Path(target, "export", "adapter", "adapter.safetensors")
    info["kind"] = "embres-workdir"
    if factors_file.is_file():
        from safetensors.numpy import load_file

        info["factors"] = load_file(str(factors_file))
        info["factor_bytes"] = int(sum(v.nbytes for v in info["factors"].values()))
    return embed_fn, info


def refuse_unknown_workdir(target: str, **_):
    """Raises for a workdir whose ``export/`` holds no model embres knows how to load."""
    from embres.export import META_FILE

    raise FileNotFoundError(
        f"{Path(target, 'export')} holds neither {META_FILE} (a static export) nor config.json "
        "(a Hugging Face model); was the training run's export step reached?"
    )


register_loader("sentence-transformers", load_sentence_transformer)
register_loader("model2vec", load_model2vec)
register_loader("static", load_static)
register_loader("int8", lambda target, **options: load_static(target, **{**options, "int8": True}))
register_detector(lambda spec: static_export_dir(spec) is not None, load_static)
register_detector(is_hf_workdir, load_hf_workdir)
register_detector(is_unknown_workdir, refuse_unknown_workdir)
