"""Pieces several objectives share: the teacher's table in its tree, the teacher as an
embedder, a gathered host copy of a sharded teacher, checks that name the objective."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from embres import adapters


def get_table(params: dict, table_path: tuple[str, ...]) -> Any:
    """The input table inside a teacher's parameter tree."""
    node = params
    for part in table_path:
        node = node[part]
    return node


def replace_table(params: dict, table_path: tuple[str, ...], table: Any) -> dict:
    """A copy of the teacher's tree with its input table swapped (the rest shared)."""
    flat = traverse_util.flatten_dict(params)
    flat[table_path] = table
    return traverse_util.unflatten_dict(flat)


def host_model(model: Any) -> Any:
    """``model`` with a sharded or row-padded input table gathered into one unpadded copy.

    Returns ``model`` itself when its table is already whole and unpadded.
    """
    from embres.arrays import to_host

    table = get_table(model.params, model.table_path)
    if getattr(table, "is_fully_addressable", True) and table.shape[0] == model.config.vocab_size:
        return model
    whole = np.asarray(to_host(table))[: model.config.vocab_size]
    return dataclasses.replace(
        model, params=replace_table(model.params, model.table_path, jnp.asarray(whole))
    )


def extractor_fn(model: Any, batch_size: int, params: Any = None):
    """``texts -> [n, d]`` through the (possibly adapted) teacher, progress off."""
    from embres.extract import EmbeddingExtractor

    extractor = EmbeddingExtractor(model, batch_size=batch_size, params=params)
    return functools.partial(extractor.extract_embeddings, progress=False)


def teacher(model: Any, batch_size: int):
    """The teacher as ``(embed_fn, info)`` for the evaluators."""
    table_bytes = model.config.vocab_size * model.config.hidden_size * 4
    info = {
        "table_bytes": table_bytes,
        "total_bytes": adapters.param_bytes(model.params),
        "params": model.params,
        "path": str(model.path),  # identifies the teacher to the evaluators' caches
    }
    return extractor_fn(model, batch_size), info


def content_mask(tokenizer: Any, vocab_size: int) -> np.ndarray:
    """float32 [vocab_size]: 0 at the template ids ([CLS]/[SEP]) and [UNK], 1 elsewhere.

    A static student pools the text's own tokens only: the served model never sees the
    template, and Model2Vec drops [UNK] (its served row is zero).
    """
    from embres import tokenize

    prefix, suffix = tokenize.special_template(tokenizer)
    dropped = [i for i in [*prefix, *suffix, tokenizer.unk_token_id] if i is not None]
    content = np.ones(vocab_size, np.float32)
    content[[i for i in dropped if i < vocab_size]] = 0.0
    return content


def refuse_pair(objective: str, adapter: str, reason: str, allowed: tuple[str, ...]) -> None:
    """Raises the one error for an objective × adapter pair that cannot train."""
    raise ValueError(
        f"objective {objective!r} cannot train adapter {adapter!r} "
        f"(config.objective.kind={objective!r}, config.adapter.type={adapter!r}): {reason}; "
        f"adapters it trains: {list(allowed)}"
    )


def check_sizes(config: Any, model: Any) -> None:
    """The data length fits the teacher."""
    if config.data.max_length > model.max_length:
        raise ValueError(
            f"config.data.max_length={config.data.max_length}; expected <= {model.max_length} "
            "(the model's limit)"
        )


def unk_zeroed(table: Any, unk: int | None) -> np.ndarray:
    """A float32 copy of a served table with the [UNK] row zeroed: [UNK] adds nothing to a
    mean, as in training (and Model2Vec drops it)."""
    table = np.array(table, np.float32)
    if unk is not None and unk < len(table):
        table[unk] = 0.0
    return table


def served_student(
    adapter: Any, params: Any, table: Any, tokenizer: Any, row_shape: tuple, fidelity_map
):
    """``(encode, info)`` of a trained student for the evaluators: a static table when
    ``table`` is given, else the adapter run over ``params`` (a contextual student);
    ``row_shape`` is the shape of the rows it was trained from (for its byte count)."""
    from embres.export import STATIC_MAX_LENGTH
    from embres.static import AdapterEmbedder, StaticEmbedder

    if table is None:
        embedder = AdapterEmbedder(adapter, params, tokenizer, True, STATIC_MAX_LENGTH)
    else:
        embedder = StaticEmbedder(table, tokenizer, True, STATIC_MAX_LENGTH)
    size = adapter.table_bytes(params, row_shape)
    info = {
        "table_bytes": size,
        "total_bytes": size,
        "params": params,
        "count_tokens": lambda texts: sum(len(r) for r in embedder.token_ids(texts)),
        "fidelity_map": fidelity_map,
    }
    return embedder.encode, info
