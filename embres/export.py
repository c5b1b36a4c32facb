"""Every way embres writes a trained model, and reads its own exports back.

**Static models** (a table plus a tokenizer: :func:`export_static`) are written in Model2Vec's
format, which sentence-transformers also reads through its ``modules.json``:

* ``model.safetensors`` with one tensor ``embeddings`` [vocab, dim], float16 unless asked
  for float32 (``dtype="float32"``): half the bytes, and every reader's vectors stay within
  cosine 0.9999 of the float32 table's. embres upcasts it to float32 when it loads it (its
  sparse averaging runs on float32; a float16 table there costs a conversion per call);
* ``tokenizer.json``: the teacher's fast tokenizer, padding off, truncation at
  ``max_length`` tokens (512), so every reader cuts a long text at the same token;
* ``config.json`` (``model_type: model2vec``, ``normalize``, ``hidden_dim``, ``max_length``);
* ``modules.json`` + ``1_Normalize/`` for sentence-transformers' ``StaticEmbedding``;
* ``embres_static.json``: what embres needs to reload it (source model, adapter, ...).

``model2vec.StaticModel.from_pretrained(dir)`` and ``SentenceTransformer(dir)`` then give the
same vectors as embres. With ``int8=True`` the table is also stored as int8 rows with one
float32 scale per row (``model_int8.safetensors``, quantised from the float32 table), 4x
smaller than float32 on disk; with ``keep_float32=False`` that is the only weight file, and
embres loads it on its own (Model2Vec and sentence-transformers need ``model.safetensors``).

**Contextual students** (an adapter whose ``materialize`` is None: ``hybrid``,
``attention``, ``transfer``, ``conv_transfer``) are a static directory as above plus
``adapter.safetensors``: every param, float32, flat names (``table`` [V, d], ``pos``
[P, d], the mixer's ``conv``/``w_in``/``w_out``/``gate``, each block's ``block<i>.wq``
[d, H, k], ``block<i>.w1`` [d, f], ``block<i>.ln1.G`` ...; a transferred block is stored
merged, teacher weights plus trained updates), and ``embres_static.json`` names the adapter
(``"adapter": "transfer"``). Every size is read from the arrays' shapes, so nothing else is
needed to run it. :func:`load_student` (and ``python -m embres.evaluate --model DIR``) run
the adapter over them: the same vectors as the trained model (tested). Its ``modules.json``
names :class:`embres.sentence_transformers_module.ContextualStudentModule`, so
``SentenceTransformer(dir, trust_remote_code=True)`` runs the same context path through
embres (installed) and gives the same vectors (tested). Model2Vec loads
``model.safetensors`` alone: the student's static rows without any context (a different,
weaker model, not the trained one). No ONNX graph of the context path is written.

**Compressed teachers** (:func:`export_compressed_teacher`) are a plain Hugging Face
directory with the factorised table merged back, plus sentence-transformers' module files,
so ``transformers.AutoModel`` and ``SentenceTransformer`` load it; the small factors ride
along in ``adapter/``.

**Every save** writes a complete, self-consistent directory. It is written into a hidden
folder inside the target (``.embres-save-<host>-<pid>``) and moved into place only when
complete, so a failed save leaves the earlier model as it was, never half of a new one. A
model embres did not write (weights without embres's meta file) is never replaced. Files
an embres export may hold (weights, ``config.json``, tokenizer and module files, ...) that
an earlier save left and this one did not write are removed; other files are left alone.
Replacing a model is reported in one line, naming what was there and what was removed.
Files get the user's umask, as any file the user creates (safetensors writes ``0600``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from embres import files
from embres.cli import UsageError

log = logging.getLogger(__name__)

META_FILE = "embres_static.json"
FLOAT_FILE = "model.safetensors"
INT8_FILE = "model_int8.safetensors"
ADAPTER_FILE = "adapter.safetensors"
# The sentence-transformers module a contextual export names (it runs the context path)
CONTEXTUAL_ST_MODULE = "embres.sentence_transformers_module.ContextualStudentModule"
# The dtypes ``model.safetensors`` may store a static table in. float16 by default: Model2Vec
# ships float16 too, and its rounding (relative 2**-11 per entry) moves no sentence vector
# below cosine 0.9999 (tests/test_static_fp16.py).
TABLE_DTYPES = {"float16": np.float16, "float32": np.float32}
DEFAULT_TABLE_DTYPE = "float16"
TRANSFER_META_FILE = "embres_transfer.json"
# The token limit of a static model: Model2Vec's default, written where every reader sees it.
STATIC_MAX_LENGTH = 512
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "added_tokens.json",
)
# Every name (besides ``*.safetensors``) an embres export of any kind may hold: what a save
# removes when an earlier save left it and this one did not write it. Nothing else is touched.
_EXPORT_NAMES = frozenset(
    {
        META_FILE,
        TRANSFER_META_FILE,
        "config.json",
        "generation_config.json",
        "model.safetensors.index.json",
        "modules.json",
        "sentence_bert_config.json",
        "1_Normalize",
        "1_Pooling",
        "2_Normalize",
        "adapter",
        *TOKENIZER_FILES,
    }
)
_STAGE_PREFIX = ".embres-save-"


def quantize_int8(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8: ``table ≈ q * scale[:, None]``."""
    table = np.asarray(table, np.float32)
    scale = np.abs(table).max(axis=1) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(table / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def dequantize_int8(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Inverse of :func:`quantize_int8` (up to rounding)."""
    return q.astype(np.float32) * scale[:, None]


def stored_table(table: np.ndarray, dtype: str = DEFAULT_TABLE_DTYPE) -> np.ndarray:
    """``table`` as ``model.safetensors`` stores it: float16 (the default) or float32.

    Raises:
      ValueError: for a dtype not in :data:`TABLE_DTYPES`, or a finite entry float16 cannot
        hold (beyond +-65504: it would be stored as inf), naming the largest one.
    """
    if dtype not in TABLE_DTYPES:
        raise UsageError(f"dtype={dtype!r}; expected one of {sorted(TABLE_DTYPES)}")
    table = np.asarray(table, np.float32)
    if dtype == "float16":
        # Only finite entries can overflow: an inf or NaN stays what it was in float32.
        magnitudes = np.abs(table)
        biggest = float(magnitudes[np.isfinite(magnitudes)].max(initial=0.0))
        limit = float(np.finfo(np.float16).max)
        if biggest > limit:
            raise UsageError(
                f"the table holds {biggest:g}, beyond float16's largest {limit:g} (it would "
                "be stored as inf); save it with dtype='float32'"
            )
    return np.ascontiguousarray(table, dtype=TABLE_DTYPES[dtype])


def _save_tokenizer(tokenizer: Any, out: Path, max_length: int) -> None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError("static export needs a fast (Rust) tokenizer with tokenizer.json")
    backend = copy.deepcopy(backend)
    # Readers tokenise without special tokens; the stored limit makes them all cut a long
    # text at the same token (Model2Vec and sentence-transformers honour it as embres does).
    backend.enable_truncation(max_length)
    backend.no_padding()
    tokenizer.save_pretrained(str(out))  # tokenizer_config.json etc. for transformers
    backend.save(str(out / "tokenizer.json"))  # save_pretrained rewrites it; keep ours


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2))


_SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


def _is_export_file(name: str) -> bool:
    """A name an embres export writes: its fixed names and weight files, never a user's."""
    return (
        name in _EXPORT_NAMES
        or name in (FLOAT_FILE, INT8_FILE, ADAPTER_FILE)
        or bool(_SHARD.fullmatch(name))
    )


def _is_model_file(name: str) -> bool:
    """A file that says a model is there: weights or an embres meta file."""
    return name.endswith(".safetensors") or name in (META_FILE, TRANSFER_META_FILE)


def _remove_dead_stages(out: Path) -> None:
    """Removes staging folders left in ``out`` by saves on this host that were killed."""
    stages = list(out.glob(_STAGE_PREFIX + "*"))
    if not stages:
        return
    from embres.data.cached import pid_alive

    host = socket.gethostname()
    for folder in stages:
        owner, _, pid = folder.name[len(_STAGE_PREFIX) :].rpartition("-")
        if owner == host and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


# Files by which a directory says embres wrote the model in it (static, transfer, compressed).
_EMBRES_MARKERS = (META_FILE, TRANSFER_META_FILE, "adapter/adapter.json")


def _check_replaceable(out: Path) -> None:
    """Refuses to save over a model that embres did not write (a user's checkpoint).

    Replacing an earlier embres export is the expected re-use of a directory; a Hugging
    Face or Model2Vec model the user put there is work embres cannot give back.
    """
    weights = sorted(
        p.name for p in out.iterdir() if p.name.endswith((".safetensors", ".bin", ".pt"))
    )
    if weights and not any((out / marker).exists() for marker in _EMBRES_MARKERS):
        raise UsageError(
            f"{out} holds a model embres did not write ({', '.join(weights[:3])}, no "
            f"{META_FILE}); refusing to replace it: save to another directory, or move it "
            "away first"
        )


# What a training workdir holds (embres.train): a save there would sit beside its export/.
_WORKDIR_MARKERS = ("checkpoints", "train_config.json", "export")


def _check_not_a_workdir(out: Path) -> None:
    """Refuses to save into a training workdir (beside its ``export/``).

    ``load(workdir)`` would then read one model and ``load(workdir/export)`` another, and
    ``evaluate --model workdir`` would measure one of them: two models, one name.
    """
    found = [name for name in _WORKDIR_MARKERS if (out / name).exists()]
    if found:
        raise UsageError(
            f"{out} is a training workdir (it holds {', '.join(found)}); a model saved there "
            f"would sit beside the trained one in {out / 'export'}. Save to another directory, "
            f"e.g. {out.parent / (out.name + '-saved')}"
        )


class NonFiniteExportError(ValueError):
    """A model to export holds NaN or inf (a diverged run); nothing was written."""


def check_finite(arrays: dict[str, Any], what: str) -> None:
    """Refuses to export ``arrays`` ({name: array}) when one holds NaN or inf, naming it.

    Raises:
      NonFiniteExportError: naming ``what``, the first array with non-finite values, how
        many it holds and where the first one is.
    """
    from embres.arrays import to_host

    for name, value in arrays.items():
        array = np.asarray(to_host(value))
        if not np.issubdtype(array.dtype, np.floating) and array.dtype.name != "bfloat16":
            continue
        bad = ~np.isfinite(array.astype(np.float32))
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise NonFiniteExportError(
                f"refusing to export {what}: {name} {tuple(array.shape)} holds "
                f"{int(bad.sum()):,} non-finite values (NaN/inf; the first at {first}), a "
                "diverged run? Nothing was written"
            )


def _report_replace(out: Path, overwritten: list[str], removed: list[str]) -> None:
    """One line saying what a save replaced in ``out`` (nothing when ``out`` was empty).

    It names the model files that were there, any other file overwritten that is not one an
    export holds (a user's), and what was removed.
    """
    held = sorted(overwritten + removed)
    if not held:
        return
    models = [name for name in held if _is_model_file(name)]
    if models:
        message = f"replacing the model in {out} (it held {', '.join(models)})"
        foreign = [name for name in overwritten if not _is_export_file(name)]
        if foreign:
            message += f"; overwritten: {', '.join(foreign)}"
    elif overwritten:
        message = f"overwriting {', '.join(overwritten)} in {out}"
    else:
        message = f"saving into {out}"
    if removed:
        message += f"; removed {', '.join(removed)} (not part of this save)"
    log.info(message)
    print(f"[embres.export] {message}", flush=True)


def _move_into(stage: Path, out: Path) -> None:
    """Moves a complete save from ``stage`` into ``out``, removing an earlier save's leftovers."""
    written = {entry.name for entry in stage.iterdir()}
    present = {p.name for p in out.iterdir() if not p.name.startswith(_STAGE_PREFIX)}
    overwritten = sorted(written & present)
    # Leftovers are removed only from a directory an earlier embres save marked as its own,
    # and only under the names an export writes: a user's files are never touched.
    earlier_save = any((out / marker).exists() for marker in _EMBRES_MARKERS)
    removed = sorted(n for n in present - written if earlier_save and _is_export_file(n))
    _report_replace(out, overwritten, removed)
    for name in removed:
        files.remove(out / name)
    for entry in stage.iterdir():
        target = out / entry.name
        if target.is_symlink() or (target.exists() and (target.is_dir() or entry.is_dir())):
            files.remove(target)  # a rename replaces a file by a file, never a folder
        os.replace(entry, target)  # a file is replaced at once: readers see old or new


@contextlib.contextmanager
def _staged_save(directory: str | os.PathLike) -> Iterator[Path]:
    """An empty folder to write a save into; on success its files replace ``directory``'s.

    The folder lives inside ``directory`` (same file system: every move is a rename). On an
    exception nothing in ``directory`` has changed, and the folders this call created are
    gone.

    Raises:
      ValueError: ``directory`` is a file, or holds a model embres did not write.
    """
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file; expected a directory to save the model in")
    if out.is_dir():
        _check_not_a_workdir(out)
        _check_replaceable(out)
    created = files.first_missing(out)
    out.mkdir(parents=True, exist_ok=True)
    _remove_dead_stages(out)
    stage = out / f"{_STAGE_PREFIX}{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage
        files.apply_umask(stage)
        _move_into(stage, out)
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def export_static(
    table: np.ndarray,
    tokenizer: Any,
    directory: str | os.PathLike,
    *,
    normalize: bool = True,
    meta: dict[str, Any] | None = None,
    int8: bool = False,
    keep_float32: bool = True,
    adapter_params: dict[str, np.ndarray] | None = None,
    max_length: int = STATIC_MAX_LENGTH,
    dtype: str = DEFAULT_TABLE_DTYPE,
) -> Path:
    """Writes a static model directory loadable by embres, Model2Vec and sentence-transformers.

    Args:
      table: [vocab, dim] rows; row i belongs to token id i of ``tokenizer``.
      tokenizer: the matching Hugging Face fast tokenizer.
      directory: output directory (created; an earlier model there is replaced, and said so).
      normalize: whether sentence vectors are L2-normalised.
      meta: extra fields for ``embres_static.json`` (``adapter``: the adapter type whose
        ``apply`` :func:`load_student` runs over ``adapter_params``).
      int8: also write the per-row int8 table (``model_int8.safetensors``).
      keep_float32: with ``int8``, False writes the int8 table only (embres-only directory);
        True (the default) keeps ``model.safetensors``, in ``dtype``.
      adapter_params: every param of a contextual student (``adapter.safetensors``,
        float32); :func:`export_contextual` is the name for that kind of export.
      max_length: token limit every reader applies (tokenizer.json and config.json).
      dtype: ``"float16"`` (default: half the bytes, vectors within cosine 0.9999) or
        ``"float32"`` (the table bit for bit) for ``model.safetensors``; recorded in
        ``embres_static.json`` as ``dtype``. embres computes in float32 either way.

    Raises:
      ValueError: for a table that is not 2-d or has fewer rows than the tokenizer, a
        ``directory`` that is a file or a training workdir, an unknown ``dtype``, or a
        float16 table with an entry beyond float16's range (see :func:`stored_table`).
      NonFiniteExportError (a ValueError): the table or a param holds NaN or inf.
    """
    table = np.ascontiguousarray(table, dtype=np.float32)
    if table.ndim != 2:
        raise ValueError(f"table has shape {table.shape}; expected [vocab, dim]")
    if table.shape[0] < len(tokenizer):
        raise ValueError(
            f"table has {table.shape[0]} rows but the tokenizer has {len(tokenizer)} tokens"
        )
    if not keep_float32 and not int8:
        raise ValueError("keep_float32=False needs int8=True: the directory would hold no table")
    check_finite({"the table": table, **(adapter_params or {})}, f"a model to {directory}")
    stored = stored_table(table, dtype) if keep_float32 else None  # checked before any write
    with _staged_save(directory) as stage:
        _write_static(
            stage,
            table,
            tokenizer,
            normalize=normalize,
            meta=meta,
            int8=int8,
            stored=stored,
            adapter_params=adapter_params,
            max_length=max_length,
        )
    return Path(directory)


def export_contextual(
    params: dict[str, np.ndarray],
    table: np.ndarray,
    tokenizer: Any,
    directory: str | os.PathLike,
    *,
    adapter: str,
    normalize: bool = True,
    meta: dict[str, Any] | None = None,
    max_length: int = STATIC_MAX_LENGTH,
    dtype: str = DEFAULT_TABLE_DTYPE,
) -> Path:
    """Writes a contextual student (an adapter with no ``materialize``: ``hybrid``, ...).

    The directory is :func:`export_static`'s (``model.safetensors`` holds ``table``, the
    rows readers without the context path take alone, in ``dtype``) plus
    ``adapter.safetensors``, every param in float32, and ``"adapter": adapter`` in
    ``embres_static.json``, which :func:`load_student` runs over them. The same files as
    ``export_static(..., adapter_params=params)`` writes, under a name that says what it is.

    Args:
      params: every param of the student (flat names).
      table: its served rows [vocab, dim] (e.g. with the ``[UNK]`` rule applied).
      tokenizer: the matching fast tokenizer.
      directory: output directory (an earlier model there is replaced, and said so).
      adapter: the adapter type (:func:`embres.adapters.get`) whose ``apply`` runs it.
      normalize, meta, max_length, dtype: as :func:`export_static`.

    Raises:
      ValueError: as :func:`export_static`, and for an empty ``adapter`` name.
    """
    if not adapter or not isinstance(adapter, str):
        raise ValueError(f"adapter={adapter!r}; expected the adapter type's name, e.g. 'hybrid'")
    return export_static(
        table,
        tokenizer,
        directory,
        normalize=normalize,
        meta={**(meta or {}), "adapter": adapter},
        adapter_params=params,
        max_length=max_length,
        dtype=dtype,
    )


def _write_static(
    out: Path,
    table: np.ndarray,
    tokenizer: Any,
    *,
    normalize: bool,
    meta: dict[str, Any] | None,
    int8: bool,
    stored: np.ndarray | None,
    adapter_params: dict[str, np.ndarray] | None,
    max_length: int,
) -> None:
    """Writes the files of :func:`export_static` into the empty folder ``out``.

    ``table`` is the float32 table (int8 is quantised from it); ``stored`` is what
    ``model.safetensors`` holds (:func:`stored_table`), None for an int8-only directory.
    """
    from safetensors.numpy import save_file

    if stored is not None:
        save_file({"embeddings": stored}, str(out / FLOAT_FILE))
    if int8:
        q, scale = quantize_int8(table)
        save_file({"embeddings_int8": q, "scales": scale}, str(out / INT8_FILE))
    if adapter_params is not None:
        flat = {k: np.ascontiguousarray(v, np.float32) for k, v in adapter_params.items()}
        save_file(flat, str(out / ADAPTER_FILE))
    _save_tokenizer(tokenizer, out, max_length)
    _write_json(
        out / "config.json",
        {
            "model_type": "model2vec",
            "architectures": ["StaticModel"],
            "hidden_dim": int(table.shape[1]),
            "normalize": bool(normalize),
            "pooling": "mean",
            "max_length": int(max_length),
            "seq_length": int(max_length),
        },
    )
    modules = [
        {"idx": 0, "name": "0", "path": ".", "type": "sentence_transformers.models.StaticEmbedding"}
    ]
    if adapter_params is not None:  # the context path: embres's module runs it (normalising)
        modules = [{"idx": 0, "name": "0", "path": ".", "type": CONTEXTUAL_ST_MODULE}]
    elif normalize:
        modules.append(
            {
                "idx": 1,
                "name": "1",
                "path": "1_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
        (out / "1_Normalize").mkdir()
        (out / "1_Normalize" / "config.json").write_text("{}")
    _write_json(out / "modules.json", modules)
    info = {
        "normalize": bool(normalize),
        "dim": int(table.shape[1]),
        "int8": bool(int8),
        # model.safetensors' dtype ("float16" / "float32"), None when only int8 is shipped.
        "dtype": None if stored is None else stored.dtype.name,
        "max_length": int(max_length),
    }
    info.update(meta or {})
    _write_json(out / META_FILE, info)


def load_static_table(directory: str | os.PathLike, int8: bool | None = None) -> np.ndarray:
    """The table of an exported static model, as float32 (what embres computes in).

    ``model.safetensors`` may hold float16 (the default export) or float32; a float16 table
    is upcast here, once, so encoding costs the same either way.

    Args:
      directory: the export.
      int8: True reads (and dequantises) the int8 table, False ``model.safetensors``, None
        ``model.safetensors`` when present, else the int8 one.

    Raises:
      FileNotFoundError: naming the file that is missing.
      ValueError: naming the file, when it holds no static table (e.g. a transformer's).
    """
    path = Path(directory)
    if int8 is None:
        int8 = not (path / FLOAT_FILE).exists() and (path / INT8_FILE).exists()
    name = INT8_FILE if int8 else FLOAT_FILE
    if not (path / name).exists():
        hint = "export with int8=True" if int8 else "it was saved int8-only; load with int8=True"
        raise FileNotFoundError(f"{path / name} not found ({hint})")
    wanted = ("embeddings_int8", "scales") if int8 else ("embeddings",)
    tensors = _load_safetensors(path / name)
    if not all(key in tensors for key in wanted):
        raise UsageError(
            f"{path / name} holds tensors {sorted(tensors)[:5]}, not a static table "
            f"({', '.join(wanted)}): {_what_it_is(path)}"
        )
    if int8:
        return dequantize_int8(tensors["embeddings_int8"], tensors["scales"])
    return np.asarray(tensors["embeddings"], np.float32)


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of ``path``; a damaged or empty file is named with what is wrong.

    Raises:
      UnreadableFileError (a ValueError): naming the file and why it cannot be read.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from embres.models.hf import UnreadableFileError, safetensors_problem

    try:
        return load_file(str(path))
    except SafetensorError as e:
        why = safetensors_problem(path) or "it is damaged"
        raise UnreadableFileError(
            f"{path} is not a readable safetensors file: {why}; export the model again "
            f"(safetensors says: {e})"
        ) from e


def _transformer_type(path: Path) -> str | None:
    """The ``model_type`` of a Hugging Face transformer checkpoint in ``path``, else None."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    kind = config.get("model_type") if isinstance(config, dict) else None
    return None if kind in (None, "model2vec") else str(kind)


def _what_it_is(path: Path, name: str | os.PathLike | None = None) -> str:
    """What a directory that is not a static export is, and what loads it (for errors).

    ``name`` is how the user named it (a bundled model's name rather than its folder).
    """
    kind = _transformer_type(path)
    if kind is None:
        return "not a static embres export (from ModelAdapter.save or embres.train's export/)"
    shown = str(path if name is None else name)
    return (
        f"it is a transformer checkpoint (model_type {kind!r}), not a static embres export. "
        f"Distil a static model from it with ModelAdapter({shown!r}, target_dim=...), or "
        f"embed with the transformer itself: EmbeddingExtractor({shown!r})"
    )


def _bundled_model_dir(name: str | os.PathLike) -> Path | None:
    """The directory of a bundled teacher named ``name`` (e.g. "all-MiniLM-L6-v2"), else None."""
    from embres.models import BUNDLED, resolve

    if str(name) not in BUNDLED:
        return None
    try:
        return resolve(name, allow_download=False)
    except ValueError:  # its package is not installed: nothing to say about it here
        return None


def _check_export_dir(directory: str | os.PathLike, path: Path) -> None:
    """Refuses, naming the directory and what it is, a folder that is not an embres export.

    Raises:
      UsageError (a ValueError): for a transformer checkpoint (a directory or a bundled name).
      FileNotFoundError: naming the files expected, for anything else.
    """
    missing = [f for f in (META_FILE, "tokenizer.json") if not (path / f).exists()]
    if not missing and any((path / f).exists() for f in (FLOAT_FILE, INT8_FILE)):
        return
    if not path.exists() and (bundled := _bundled_model_dir(directory)) is not None:
        path = bundled
    elif not (path / "config.json").exists() and (path / "export" / "config.json").exists():
        path = path / "export"  # a training workdir whose export is a transformer
    if _transformer_type(path) is not None and META_FILE in missing:
        raise UsageError(
            f"{directory} cannot be loaded as a static model: {_what_it_is(path, directory)}"
        )
    raise FileNotFoundError(
        f"{directory} is not an embres export: expected {META_FILE}, tokenizer.json and "
        f"{FLOAT_FILE} or {INT8_FILE} (from ModelAdapter.save or embres.train's export/); "
        f"missing: {missing or [FLOAT_FILE + ' / ' + INT8_FILE]}"
    )


def load_student(directory: str | os.PathLike, int8: bool | None = None, static: bool = False):
    """An embres static or contextual export as an embedder (``.encode(texts)``).

    The result has ``.encode``, ``.token_ids``, ``.dim``, ``.params`` (the arrays it holds in
    memory), ``.kind`` (``"static"`` or the adapter type), ``.disk_bytes`` (of the weight
    files read) and ``.meta`` (``embres_static.json``).

    Args:
      directory: an export, or a training workdir holding one in ``export/``.
      int8: see :func:`load_static_table` (a contextual student's params are float32).
      static: load the static table even of a contextual export (its rows alone).

    Raises:
      FileNotFoundError: naming the directory and the files expected there.
      ValueError: for a transformer checkpoint (naming it, and what loads it), or weight
        files that hold no static table.
    """
    from transformers import AutoTokenizer

    from embres.static_embedder import AdapterEmbedder, StaticEmbedder

    path = Path(directory)
    if not (path / META_FILE).exists() and (path / "export" / META_FILE).exists():
        path = path / "export"
    _check_export_dir(directory, path)
    meta = json.loads((path / META_FILE).read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    normalize = bool(meta.get("normalize", True))
    max_length = int(meta.get("max_length", STATIC_MAX_LENGTH))
    kind = meta.get("adapter", "static")
    if (path / ADAPTER_FILE).exists() and not int8 and not static:
        from embres import adapters

        params = _load_safetensors(path / ADAPTER_FILE)
        embedder: Any = AdapterEmbedder(
            adapters.get(kind), params, tokenizer, normalize=normalize, max_length=max_length
        )
        files = [ADAPTER_FILE]
    else:
        if int8 is None:
            int8 = not (path / FLOAT_FILE).exists()
        table = load_static_table(path, int8=int8)
        embedder = StaticEmbedder(table, tokenizer, normalize=normalize, max_length=max_length)
        embedder.params = {"embeddings": embedder.table}
        kind = "static"
        files = [INT8_FILE if int8 else FLOAT_FILE]
    embedder.kind = kind
    embedder.meta = meta
    embedder.path = path
    embedder.disk_bytes = int(sum((path / f).stat().st_size for f in files))
    return embedder


# ----------------------------------------------------------------------------- transformers


def write_sentence_transformers_files(
    directory: str | os.PathLike, *, dim: int, pooling: str, normalize: bool, max_length: int
) -> None:
    """``modules.json``, ``1_Pooling/`` (and ``2_Normalize/``) describing embres's own pooling,
    so ``SentenceTransformer(directory)`` pools as embres does (its default would be mean)."""
    modes = {"mean": "mean_tokens", "cls": "cls_token", "max": "max_tokens", "last": "lasttoken"}
    if pooling not in modes:
        raise ValueError(f"pooling={pooling!r} has no sentence-transformers equivalent")
    out = Path(directory)
    (out / "1_Pooling").mkdir(exist_ok=True)
    pool = {"word_embedding_dimension": int(dim)}
    pool.update({f"pooling_mode_{m}": m == modes[pooling] for m in modes.values()})
    _write_json(out / "1_Pooling" / "config.json", pool)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalize:
        (out / "2_Normalize").mkdir(exist_ok=True)
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
    _write_json(out / "modules.json", modules)
    _write_json(
        out / "sentence_bert_config.json",
        {"max_seq_length": int(max_length), "do_lower_case": False},
    )


def export_compressed_teacher(
    model: Any,
    table: np.ndarray,
    factors: dict[str, np.ndarray],
    meta: dict[str, Any],
    directory: str | os.PathLike,
) -> Path:
    """Writes the teacher with ``table`` in place of its input table, plus ``adapter/``.

    The directory is a Hugging Face checkpoint (``transformers.AutoModel`` loads it) with
    sentence-transformers' module files describing embres's pooling and normalisation, so
    ``SentenceTransformer(directory)`` gives embres's vectors. ``adapter/`` holds the
    factors as trained (``adapter.safetensors``, float16 stays float16) and ``adapter.json``.

    Args:
      model: the ``LoadedModel`` teacher (its layout and files are reused).
      table: the adapted table [vocab, d] (e.g. ``A·B``).
      factors: flat ``{"A": ..., "B": ...}`` params as shipped.
      meta: written to ``adapter/adapter.json``.
      directory: output directory (created).
    """
    from flax import traverse_util
    from safetensors.numpy import save_file

    _check_not_the_teacher(model, directory)
    check_finite({"the table": table, **factors}, f"a compressed teacher to {directory}")
    flat = traverse_util.flatten_dict(model.params)
    flat[model.table_path] = np.asarray(table, np.float32)
    with _staged_save(directory) as out:
        model.save(out, params=traverse_util.unflatten_dict(flat))
        if model.tokenizer is not None and model.tokenizer.pad_token is None:
            # sentence-transformers batches with padding and refuses a tokenizer without a pad
            # token (GPT-2's); pads are masked everywhere, so naming one changes no vector.
            tokenizer = copy.deepcopy(model.tokenizer)
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(model.pad_id)
            tokenizer.save_pretrained(str(out))
        write_sentence_transformers_files(
            out,
            dim=int(table.shape[1]),
            pooling=model.pooling,
            normalize=model.normalize,
            max_length=model.max_length,
        )
        sub = out / "adapter"
        sub.mkdir(exist_ok=True)
        save_file(
            {
                k: np.asarray(v)
                if np.asarray(v).dtype in (np.float16, np.float32)
                else np.asarray(v, np.float32)
                for k, v in factors.items()
            },
            str(sub / ADAPTER_FILE),
        )
        _write_json(sub / "adapter.json", meta)
    return Path(directory)


def _check_not_the_teacher(model: Any, directory: str | os.PathLike) -> None:
    """Refuses to export over the directory the teacher is read from (copied file by file)."""
    if Path(directory).resolve() == Path(model.path).resolve():
        raise UsageError(
            f"{directory} is the directory the teacher {model.name!r} is read from; export "
            "to another directory"
        )


def export_transfer(model: Any, meta: dict[str, Any], directory: str | os.PathLike) -> Path:
    """Writes a teacher that reads a new vocabulary (an embedding-layer transfer).

    The directory is a Hugging Face checkpoint with the new tokenizer and a ``config.json``
    whose ``vocab_size`` is the new vocabulary's, plus sentence-transformers' module files,
    so embres (``load_model``), ``transformers.AutoModel`` and ``SentenceTransformer`` all
    load it. The teacher's tokenizer files are not carried over: a stale ``vocab.txt`` next
    to the new ``tokenizer.json`` would let a slow tokenizer read the old vocabulary.

    Args:
      model: the ``LoadedModel`` with the new table and tokenizer
        (:func:`embres.objectives.cross_lingual.transfer_model`).
      meta: written to ``embres_transfer.json`` (vocabulary, language, teacher rows kept).
      directory: output directory (created; an earlier model there is replaced, and said so).
    """
    _check_not_the_teacher(model, directory)
    from flax import traverse_util

    flat = traverse_util.flatten_dict(model.params, sep="/")
    check_finite(flat, f"a transferred model to {directory}")
    with _staged_save(directory) as out:
        model.save(out)
        for name in TOKENIZER_FILES:
            (out / name).unlink(missing_ok=True)
        tokenizer = model.tokenizer
        if tokenizer.pad_token is None:
            tokenizer = copy.deepcopy(tokenizer)
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(model.pad_id)
        tokenizer.save_pretrained(str(out))
        write_sentence_transformers_files(
            out,
            dim=int(model.config.hidden_size),
            pooling=model.pooling,
            normalize=model.normalize,
            max_length=model.max_length,
        )
        _write_json(out / TRANSFER_META_FILE, meta)
    return Path(directory)
