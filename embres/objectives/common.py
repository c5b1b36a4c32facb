"""Pieces several objectives share: the teacher's table in its tree, a gathered host copy of
a sharded teacher, the tokens a student pools, checks that name the objective (the stages
objectives compose are in :mod:`embres.objectives.stages`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import traverse_util


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
