"""Export of adapted models to directories other libraries load as they are.

Static models (a table plus a tokenizer) are written in Model2Vec's format, which
sentence-transformers also reads through its ``modules.json``:

* ``model.safetensors`` with one tensor ``embeddings`` [vocab, dim];
* ``tokenizer.json`` (the teacher's fast tokenizer, truncation and padding switched off);
* ``config.json`` (``model_type: model2vec``, ``normalize``, ``hidden_dim``);
* ``modules.json`` + ``1_Normalize/`` for sentence-transformers' ``StaticEmbedding``;
* ``embres_static.json``: what embres needs to reload it (source model, layer, ...).

``model2vec.StaticModel.from_pretrained(dir)`` and ``SentenceTransformer(dir)`` then give the
same vectors as embres. With ``int8=True`` the table is stored as int8 rows with one float32
scale per row (``embeddings_int8``/``scales`` in ``model_int8.safetensors``): 4x smaller, read
by embres only (the STS cost is printed by ``bench/static.py --int8``).

A compressed teacher exports as a plain Hugging Face directory with the factorised table
merged back (``LoadedModel.save``): every library loads it, at the cost of the disk saving;
the factors are kept beside it by the trainer for the compact form.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

META_FILE = "embres_static.json"
INT8_FILE = "model_int8.safetensors"


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


def _save_tokenizer(tokenizer: Any, out: Path) -> None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError("static export needs a fast (Rust) tokenizer with tokenizer.json")
    backend = copy.deepcopy(backend)
    backend.no_truncation()  # readers truncate (or not) themselves; a stored limit would differ
    backend.no_padding()
    backend.save(str(out / "tokenizer.json"))
    tokenizer.save_pretrained(str(out))  # tokenizer_config.json etc. for transformers
    backend.save(str(out / "tokenizer.json"))  # save_pretrained rewrites it; keep ours


def export_static(
    table: np.ndarray,
    tokenizer: Any,
    directory: str | os.PathLike,
    *,
    normalize: bool = True,
    meta: dict[str, Any] | None = None,
    int8: bool = False,
) -> Path:
    """Writes a static model directory loadable by embres, Model2Vec and sentence-transformers.

    Args:
      table: [vocab, dim] rows; row i belongs to token id i of ``tokenizer``.
      tokenizer: the matching Hugging Face fast tokenizer.
      directory: output directory (created).
      normalize: whether sentence vectors are L2-normalised.
      meta: extra fields for ``embres_static.json``.
      int8: also write the per-row int8 table (``model_int8.safetensors``).
    """
    from safetensors.numpy import save_file

    table = np.ascontiguousarray(table, dtype=np.float32)
    if table.ndim != 2:
        raise ValueError(f"table has shape {table.shape}; expected [vocab, dim]")
    if table.shape[0] < len(tokenizer):
        raise ValueError(
            f"table has {table.shape[0]} rows but the tokenizer has {len(tokenizer)} tokens"
        )
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": table}, str(out / "model.safetensors"))
    if int8:
        q, scale = quantize_int8(table)
        save_file({"embeddings_int8": q, "scales": scale}, str(out / INT8_FILE))
    _save_tokenizer(tokenizer, out)
    config = {
        "model_type": "model2vec",
        "architectures": ["StaticModel"],
        "hidden_dim": int(table.shape[1]),
        "normalize": bool(normalize),
        "pooling": "mean",
        "seq_length": 1_000_000,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    modules = [
        {"idx": 0, "name": "0", "path": ".", "type": "sentence_transformers.models.StaticEmbedding"}
    ]
    if normalize:
        modules.append(
            {
                "idx": 1,
                "name": "1",
                "path": "1_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
        (out / "1_Normalize").mkdir(exist_ok=True)
        (out / "1_Normalize" / "config.json").write_text("{}")
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    info = {"normalize": bool(normalize), "dim": int(table.shape[1]), "int8": bool(int8)}
    info.update(meta or {})
    (out / META_FILE).write_text(json.dumps(info, indent=2))
    return out


def load_static_table(directory: str | os.PathLike, int8: bool = False) -> np.ndarray:
    """The float32 table of an exported static model (dequantised when ``int8``)."""
    from safetensors.numpy import load_file

    path = Path(directory)
    if int8:
        if not (path / INT8_FILE).exists():
            raise FileNotFoundError(f"{path / INT8_FILE} not found; export with int8=True")
        tensors = load_file(str(path / INT8_FILE))
        return dequantize_int8(tensors["embeddings_int8"], tensors["scales"])
    return load_file(str(path / "model.safetensors"))["embeddings"]
