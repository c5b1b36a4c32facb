"""Array helpers that know no model: tree-path names, padded row counts, host copies.

The bottom layer: ports, adapters, the trainer and checkpoints all use these, so they live
below every one of them.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def path_name(path: Any) -> str:
    """A pytree path as ``"a/b/0"`` (dict keys, sequence indices and attribute names)."""
    return jax.tree_util.keystr(tuple(path), simple=True, separator="/")


def padded_rows(rows: int, multiple: int) -> int:
    """``rows`` rounded up to a multiple of ``multiple`` (rows of a table sharded by row)."""
    if not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"config.pad_vocab_to_multiple_of={multiple!r}; expected an int >= 1")
    return -(-rows // multiple) * multiple


def to_host(tree: Any) -> Any:
    """Numpy copies of every leaf, gathered from all processes where one process lacks rows."""
    from jax.experimental import multihost_utils

    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(fetch, tree)
