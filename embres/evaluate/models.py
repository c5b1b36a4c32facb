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
tried, in order, on specs without a known prefix before the extractor default. Either may come
with a ``check(target, int8) -> problem or None``: a cheap test (files on disk, names; no model
load) that :func:`check_specs` runs on every ``--model`` before anything is evaluated, so that
a typo in the third model is reported at once rather than after the first two were measured.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embres.evaluate.common import EmbedFn

Loader = Callable[..., tuple[EmbedFn, dict[str, Any]]]
# check(target, int8) -> what is wrong with it (one line), or None when it looks loadable.
Check = Callable[[str, bool], str | None]
LOADERS: dict[str, Loader] = {}
CHECKS: dict[str, Check] = {}
DETECTORS: list[tuple[Callable[[str], bool], Loader, Check | None]] = []
# A Hugging Face hub id: "name" or "org/name" (huggingface_hub's validate_repo_id, simplified).
HUB_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)?$")


def register_loader(prefix: str, loader: Loader, check: Check | None = None) -> None:
    """Makes ``<prefix>:<target>`` specs load through ``loader(target, **options)``.

    ``check(target, int8)``, when given, is run up front by :func:`check_specs`.
    """
    LOADERS[prefix] = loader
    if check is None:
        CHECKS.pop(prefix, None)
    else:
        CHECKS[prefix] = check


def register_detector(
    matches: Callable[[str], bool], loader: Loader, check: Check | None = None
) -> None:
    """Loads specs without a prefix through ``loader`` when ``matches(spec)`` is true.

    ``check(spec, int8)``, when given, is run up front by :func:`check_specs`.
    """
    DETECTORS.append((matches, loader, check))


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
    for matches, loader, _ in DETECTORS:
        if matches(spec):
            embed_fn, info = loader(spec, **options)
            return name, embed_fn, info
    embed_fn, info = load_extractor(spec, **options)
    return name, embed_fn, info


def check_spec(spec: str, int8: bool = False) -> str | None:
    """What is wrong with ``spec`` as :func:`load_embedder` would read it, or None.

    Cheap checks only (names, files on disk, a config's model type; nothing is loaded): the
    prefix's own check, else the first matching detector's, else that of the extractor
    default. A ``<prefix>:`` registered without a check passes.
    """
    prefix, sep, target = spec.partition(":")
    if sep and prefix in LOADERS:
        check = CHECKS.get(prefix)
        return None if check is None else check(target, int8)
    for matches, _, check in DETECTORS:
        if matches(spec):
            return None if check is None else check(spec, int8)
    if sep and not Path(spec).exists() and re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", prefix):
        # "sentence-transformer:x" (a typo) would otherwise be looked up as a model name.
        return f"unknown prefix {prefix + ':'!r}; known prefixes: {sorted(LOADERS)}"
    return check_extractor(spec, int8)


def check_specs(specs: Sequence[str], int8: bool = False) -> list[str]:
    """One line per spec that :func:`check_spec` finds wrong, each naming the spec."""
    problems = []
    for spec in specs:
        problem = check_spec(spec, int8)
        if problem is not None:
            problems.append(f"--model {spec}: {problem}")
    return problems


def downloads_allowed() -> bool:
    """Whether a model missing from the local cache may be fetched (HF_HUB_OFFLINE unset)."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes", "on")


def in_hub_cache(repo_id: str, files: Sequence[str] = ("config.json",)) -> bool:
    """Whether the local Hugging Face cache holds one of ``files`` of ``repo_id`` (no network)."""
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in files)


def int8_problem(target: str, int8: bool) -> str | None:
    """The refusal of ``int8`` for a model that is not an embres static export, or None."""
    if not int8:
        return None
    return (
        f"int8=True (--int8) applies to embres static exports (a directory with "
        f"embres_static.json); {target!r} is not one"
    )


def _refuse_int8(target: str, int8: bool) -> None:
    problem = int8_problem(target, int8)
    if problem:
        raise ValueError(problem)


def check_extractor(target: str, int8: bool = False) -> str | None:
    """Problem with an embres model spec: the name resolves, config is ported, tokenizer files.

    A hub id ("org/name") absent from the cache passes while downloads are allowed: the load
    fetches it (or fails, and that failure is recorded for that model alone).
    """
    from embres.models import UnknownModelError, check_tokenizer_files, family_of, resolve

    try:
        path = resolve(target, allow_download=False)
    except UnknownModelError as e:
        hub_id = target.count("/") == 1 and HUB_ID.match(target) and not Path(target).exists()
        if not (hub_id and downloads_allowed()):
            return str(e)
        return int8_problem(target, int8)
    try:
        family_of(path, allow_download=False)
        check_tokenizer_files(path)
    except (ValueError, OSError) as e:
        return str(e)
    return int8_problem(target, int8)


def check_peer(
    target: str, int8: bool = False, files: Sequence[str] = ("config.json",)
) -> str | None:
    """Problem with a peer library's ``<name or path>``: the path exists or the id is known.

    Anything that reads as a path (absolute, ``./``, ``~``, or not a hub id) must exist; a
    hub id must be in the local cache unless downloads are allowed.
    """
    path = Path(target).expanduser()
    if path.exists():
        if not path.is_dir():
            return f"{path} is a file; expected a model directory"
    elif target.startswith(("/", ".", "~")) or not HUB_ID.match(target):  # meant as a path
        return f"path {target} does not exist"
    elif not (downloads_allowed() or in_hub_cache(target, files)):
        return (
            f"no directory {target}, and no hub id {target!r} in the local Hugging Face cache "
            "(HF_HUB_OFFLINE is set, so nothing is downloaded)"
        )
    return int8_problem(target, int8)


def check_sentence_transformer(target: str, int8: bool = False) -> str | None:
    """:func:`check_peer` for sentence-transformers; bundled embres names are local."""
    from embres.models import BUNDLED, UnknownModelError

    if target in BUNDLED:
        try:
            _bundled_path(target)
        except UnknownModelError as e:  # the package bundling it is not installed
            return str(e)
        return int8_problem(target, int8)
    files = ("modules.json", "config.json")
    problem = check_peer(target, files=files)
    # sentence-transformers also looks a bare name up under its own organisation.
    if (
        problem
        and "/" not in target
        and not check_peer(f"sentence-transformers/{target}", files=files)
    ):
        problem = None
    return problem or int8_problem(target, int8)


def _require(problem: str | None) -> None:
    """Raises the problem a check found (FileNotFoundError: it names a missing model)."""
    if problem is not None:
        raise FileNotFoundError(problem)


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
    _require(check_sentence_transformer(target))
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(_bundled_path(target))

    def embed_fn(texts: list[str]) -> np.ndarray:
        return model.encode(
            texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
        ).astype(np.float32)

    info = {
        "kind": "sentence-transformers",
        "path": _bundled_path(target),
        "dim": int(model.encode(["dim"], convert_to_numpy=True).shape[1]),
        "params": dict(model.state_dict()),
        "table": sentence_transformer_table(model),
        "disk_bytes": weight_file_bytes(_bundled_path(target), modules=True),
        "count_tokens": sentence_transformer_token_counter(model),
        "device": str(model.device),
    }
    return embed_fn, info


def sentence_transformer_token_counter(model: Any) -> Callable[[list[str]], int] | None:
    """Counts the tokens ``model`` embeds, for tokens/s; None when its tokenizer is unknown.

    A transformer module holds a ``transformers`` tokenizer (called on texts, special tokens
    and truncation included); a ``StaticEmbedding`` (e.g. an embres or Model2Vec static
    export) holds a ``tokenizers.Tokenizer``, which is not callable: it embeds
    ``encode_batch(texts, add_special_tokens=False)``, truncated by the tokenizer itself.
    """
    tokenizer = getattr(model, "tokenizer", None)
    if callable(tokenizer):

        def count_tokens(texts: list[str]) -> int:
            encoded = tokenizer(texts, truncation=True, max_length=model.max_seq_length)
            return sum(len(ids) for ids in encoded["input_ids"])

        return count_tokens
    if hasattr(tokenizer, "encode_batch"):

        def count_static_tokens(texts: list[str]) -> int:
            encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
            return sum(len(e.ids) for e in encodings)

        return count_static_tokens
    return None  # tokens/s is left out rather than guessed


def sentence_transformer_table(model: Any) -> Any:
    """The [vocab, d] input table of a sentence-transformers model (transformer or static)."""
    first = model[0]
    auto = getattr(first, "auto_model", None)
    if auto is not None:
        return auto.get_input_embeddings().weight.detach()
    embedding = getattr(first, "embedding", None)  # StaticEmbedding: an nn.EmbeddingBag
    weight = getattr(embedding, "weight", None)
    return None if weight is None else weight.detach()


def load_model2vec(target: str, batch_size: int = 64, int8: bool = False, **_):
    """A Model2Vec static model (name or path) as a peer."""
    _refuse_int8(target, int8)
    _require(check_peer(target))
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
    from embres.export import FLOAT_FILE, load_student

    _require(check_static(target))
    path = static_export_dir(target)
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


def unknown_workdir_problem(target: str, int8: bool = False) -> str:
    """Why a workdir whose ``export/`` holds no model embres knows cannot be evaluated."""
    from embres.export import META_FILE

    return (
        f"{Path(target, 'export')} holds neither {META_FILE} (a static export) nor config.json "
        "(a Hugging Face model); was the training run's export step reached?"
    )


def refuse_unknown_workdir(target: str, **_):
    """Raises for a workdir whose ``export/`` holds no model embres knows how to load."""
    raise FileNotFoundError(unknown_workdir_problem(target))


def check_static(target: str, int8: bool = False) -> str | None:
    """Problem with a ``static:``/``int8:`` target: it must be (or hold) a static export."""
    from embres.export import META_FILE

    if static_export_dir(target) is not None:
        return None
    if not Path(target).expanduser().exists():
        return f"path {target} does not exist"
    return (
        f"{target} is not an embres static export: expected {META_FILE} in it or in "
        f"{Path(target, 'export')}"
    )


def check_hf_workdir(target: str, int8: bool = False) -> str | None:
    """Problem with a workdir whose ``export/`` is a Hugging Face model directory."""
    return check_extractor(str(Path(target, "export")), int8)


register_loader("sentence-transformers", load_sentence_transformer, check_sentence_transformer)
register_loader("model2vec", load_model2vec, check_peer)
register_loader("static", load_static, check_static)
register_loader(
    "int8",
    lambda target, **options: load_static(target, **{**options, "int8": True}),
    check_static,
)
register_detector(lambda spec: static_export_dir(spec) is not None, load_static)
register_detector(is_hf_workdir, load_hf_workdir, check_hf_workdir)
register_detector(is_unknown_workdir, refuse_unknown_workdir, unknown_workdir_problem)
