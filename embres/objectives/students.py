"""The students a cross-lingual objective trains, one class each: what it starts from, how it
embeds a batch inside the loss, what it serves and how it is exported.

* :class:`StaticStudent` (adapters ``static``, ``projection``, ``hybrid``): rows over the
  student's vocabulary in the PCA basis of the starting rows (the targets are projected onto
  it), pooled over the text's own tokens (no template, no ``[UNK]``).
* :class:`TransferStudent` (adapter ``table``): a new input table feeding the **frozen**
  teacher transformer (the embedding-layer transfer). Rows the vocabulary shares with the
  teacher can be kept exact (``kept`` rows: frozen arrays, never parameters).
* :class:`FullStudent` (adapter ``table``): the transfer with the teacher's whole transformer
  trained as well (multilingual knowledge distillation), its kept rows still exact.

Each is built from data by its ``start`` classmethod and then only read: the loss closes
over ``embed``, the trainer over ``student`` and ``export``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from embres import pooling as pooling_lib
from embres.objectives import common, stages


def moved(base: Any, delta: Any, scale: float) -> Any:
    """``base + scale · delta`` leaf by leaf: the weights of a student trained as a delta
    from a start it keeps frozen (under Adam, ``scale`` is that part's relative rate)."""
    return jax.tree.map(lambda w, d: w + scale * d, base, delta)


def host_f32(tree: Any) -> Any:
    """Every leaf as a float32 numpy array."""
    return jax.tree.map(lambda x: np.asarray(x, np.float32), tree)


def transfer_model(host: Any, tokenizer: Any, table: Any, params: Any = None) -> Any:
    """The teacher reading ``table`` through ``tokenizer`` (a ``LoadedModel`` of that
    vocabulary); ``params``: other transformer weights than the teacher's (a full student)."""
    rows = int(table.shape[0])
    cfg = dataclasses.replace(host.config, vocab_size=rows)
    module = type(host.module)(cfg, dtype=host.module.dtype, param_dtype=host.module.param_dtype)
    params = common.replace_table(
        host.params if params is None else params, host.table_path, jnp.asarray(table)
    )
    return dataclasses.replace(host, config=cfg, module=module, params=params, tokenizer=tokenizer)


@dataclasses.dataclass
class StaticStudent:
    """Rows in the PCA basis of the starting rows; pooled over the text's own tokens."""

    adapter: Any
    tokenizer: Any
    rows: np.ndarray  # [V, width], the basis coordinates of the starting rows
    basis: stages.Basis
    add_special_tokens = False

    @classmethod
    def start(cls, adapter, config, tokenizer, raw):
        width = int(adapter.output_dim(config.adapter, raw.shape))
        basis = stages.Basis.fit(raw, width)
        return cls(adapter, tokenizer, basis.rows(raw), basis)

    @property
    def vocab_size(self) -> int:
        return len(self.rows)

    def trained_rows(self) -> np.ndarray:
        return self.rows

    def targets(self, vectors: np.ndarray) -> np.ndarray:
        return self.basis.targets(vectors)

    def frozen(self) -> dict:
        content = common.content_mask(self.tokenizer, self.vocab_size)
        return {"rows": self.rows, "content": content}

    def embed(self, params, frozen, ids, mask):
        mask = mask * frozen["content"][ids].astype(mask.dtype)
        vectors = self.adapter.apply(params, frozen["rows"], ids, mask)
        return pooling_lib.pool(vectors, mask, "mean")

    def served_table(self, params):
        unk = self.tokenizer.unk_token_id
        return stages.served_table(self.adapter, params, self.rows, unk, self.vocab_size)

    def student(self, params, batch_size: int):
        table = self.served_table(params)
        if table is None:
            size = self.adapter.table_bytes(params, self.rows.shape)
            return stages.contextual_student(self.adapter, params, self.tokenizer, size)
        return stages.static_student(table, self.tokenizer, params, int(table.nbytes))

    def export(self, params, directory, meta: dict):
        table = self.served_table(params)
        if table is None:
            served = stages.contextual_params(self.adapter, params, self.vocab_size)
            unk = self.tokenizer.unk_token_id
            return stages.export_contextual_student(served, self.tokenizer, unk, directory, meta)
        return stages.export_static_student(table, self.tokenizer, directory, meta)


@dataclasses.dataclass
class TransferStudent:
    """A new input table (``kept`` rows exact, the rest trained) under the frozen teacher."""

    host: Any
    tokenizer: Any
    kept: np.ndarray  # [K, d] rows never trained (the teacher's own, in a bilingual vocab)
    rows: np.ndarray  # [V - K, d] the trained rows' start
    add_special_tokens = True

    @classmethod
    def start(cls, host, tokenizer, raw, kept: int):
        return cls(host, tokenizer, *stages.split_rows(raw, kept))

    @property
    def vocab_size(self) -> int:
        return len(self.kept) + len(self.rows)

    def trained_rows(self) -> np.ndarray:
        return self.rows

    def targets(self, vectors: np.ndarray) -> np.ndarray:
        return vectors

    def frozen(self) -> dict:
        return {"teacher": self.host.params, "base_rows": self.kept}

    def transformer(self, params, frozen):
        return frozen["teacher"]

    def embed(self, params, frozen, ids, mask):
        table = stages.joined_rows(frozen["base_rows"], params["table"], len(self.rows), jnp)
        out = self.host.apply(
            self.transformer(params, frozen), ids, mask, inputs_embeds=jnp.take(table, ids, axis=0)
        )
        return pooling_lib.pool(out["last_hidden_state"], mask, self.host.pooling)

    def served_table(self, params) -> np.ndarray:
        return stages.joined_rows(
            self.kept, np.asarray(params["table"], np.float32), len(self.rows)
        )

    def served_model(self, params):
        return transfer_model(self.host, self.tokenizer, self.served_table(params))

    def student(self, params, batch_size: int):
        table = self.served_table(params)
        model = self.served_model(params)
        return stages.transformer_student(model, batch_size, params, int(table.nbytes), self.host)

    def export(self, params, directory, meta: dict):
        return stages.export_transformer_student(self.served_model(params), meta, directory)


@dataclasses.dataclass
class FullStudent(TransferStudent):
    """The transfer with the teacher's transformer trained too.

    The transformer's weights are ``teacher + scale · delta`` with ``delta`` the trained
    param (starting at zero): under Adam, ``scale`` is the transformer's learning rate
    relative to the rows', and weight decay pulls the weights back towards the teacher's.
    Params: ``{"table": new rows, "delta.<path>": one leaf per teacher weight}``; the
    teacher's input table is never read (the student's rows are fed as ``inputs_embeds``).
    """

    scale: float = 0.01

    @classmethod
    def start(cls, host, tokenizer, raw, kept: int, scale: float = 0.01):
        return cls(host, tokenizer, *stages.split_rows(raw, kept), scale=scale)

    def _weights(self) -> dict:
        """The teacher's weights with a one-row stand-in for its (unread) input table."""
        width = self.host.config.hidden_size
        return common.replace_table(
            self.host.params, self.host.table_path, np.zeros((1, width), np.float32)
        )

    def start_params(self) -> dict:
        """The whole params the trainer starts from (``Plan.init_params``): flat, one
        ``delta.<path>`` leaf per transformer weight, beside ``table``."""
        flat = traverse_util.flatten_dict(self._weights(), sep=".")
        return {
            "table": self.rows,
            **{f"delta.{k}": np.zeros(w.shape, np.float32) for k, w in flat.items()},
        }

    def _delta(self, params) -> dict:
        flat = {k[len("delta.") :]: v for k, v in params.items() if k.startswith("delta.")}
        return traverse_util.unflatten_dict(flat, sep=".")

    def frozen(self) -> dict:
        return {"teacher": self._weights(), "base_rows": self.kept}

    def transformer(self, params, frozen):
        return moved(frozen["teacher"], self._delta(params), self.scale)

    def served_model(self, params):
        weights = moved(host_f32(self._weights()), host_f32(self._delta(params)), self.scale)
        return transfer_model(self.host, self.tokenizer, self.served_table(params), weights)


@dataclasses.dataclass
class ContextualStudent:
    """A trained English contextual student (e.g. the two-block hybrid of
    ``configs/hybrid.py``) carried to a new vocabulary: its rows for the new tokens start by
    FVT over its own rows, and every param trains so that student(new language) and
    student(English) land where the English student puts the English side (its own vectors
    are the targets: the English model being extended is the teacher of this stage).

    As in :class:`FullStudent`, every param but the table is ``english + scale · delta``
    with ``delta`` the trained param (starting at zero): under Adam, ``scale`` is the blocks'
    learning rate relative to the rows' (the new rows must travel far, the blocks little).
    Params: ``{"table": rows, "delta.<name>": one leaf per other English param}``.
    """

    adapter: Any
    tokenizer: Any
    params: dict  # the English student's params, "table" replaced by the new vocabulary's
    scale: float = 1.0
    add_special_tokens = False  # served contextual students read the text's own tokens

    @classmethod
    def start(cls, adapter, tokenizer, english_params: dict, raw: np.ndarray, scale=1.0):
        params = {k: np.asarray(v, np.float32) for k, v in english_params.items()}
        return cls(adapter, tokenizer, {**params, "table": np.asarray(raw, np.float32)}, scale)

    @property
    def vocab_size(self) -> int:
        return len(self.params["table"])

    def trained_rows(self) -> np.ndarray:
        return self.params["table"]

    def start_params(self) -> dict:
        deltas = {f"delta.{k}": np.zeros_like(v) for k, v in self.params.items() if k != "table"}
        return {"table": self.params["table"], **deltas}

    def _english(self) -> dict:
        return {k: v for k, v in self.params.items() if k != "table"}

    def _weights(self, params, english) -> dict:
        """The adapter's params: the English ones moved by ``scale · delta``, the table."""
        deltas = {k: params[f"delta.{k}"] for k in english}
        return {**moved(english, deltas, self.scale), "table": params["table"]}

    def targets(self, vectors: np.ndarray) -> np.ndarray:
        return vectors

    def frozen(self) -> dict:
        content = common.content_mask(self.tokenizer, self.vocab_size)
        return {"content": content, "english": self._english()}

    def embed(self, params, frozen, ids, mask):
        mask = mask * frozen["content"][ids].astype(mask.dtype)
        weights = self._weights(params, frozen["english"])
        if hasattr(self.adapter, "apply_pooled"):
            return self.adapter.apply_pooled(weights, None, ids, mask)
        return pooling_lib.pool(self.adapter.apply(weights, None, ids, mask), mask, "mean")

    def served_params(self, params) -> dict:
        served = self._weights(host_f32(params), self._english())
        return {**served, "table": served["table"][: self.vocab_size]}

    def student(self, params, batch_size: int):
        served = self.served_params(params)
        size = self.adapter.table_bytes(served, self.params["table"].shape)
        return stages.contextual_student(self.adapter, served, self.tokenizer, size)

    def export(self, params, directory, meta: dict):
        unk = self.tokenizer.unk_token_id
        served = self.served_params(params)
        return stages.export_contextual_student(served, self.tokenizer, unk, directory, meta)
