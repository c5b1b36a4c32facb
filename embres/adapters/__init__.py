"""Adapters: pure functions that stand in for, or map, a model's static input table.

The contract every adapter module offers (no hidden state, no globals):

* ``check_config(cfg, table_shape) -> None``: raises ``ValueError`` naming the key and the
  allowed values, before anything is compiled.
* ``init(rng, rows, cfg, weights=None) -> params``: a pytree of trainable arrays started
  from ``rows`` [vocab, d] (the source table, or an objective's rows in its basis);
  ``weights`` ([vocab] token frequencies) lets an initialisation favour the rows that matter.
* ``apply(params, frozen, ids, mask) -> vectors``: token vectors [batch, length, output_dim]
  for ids [batch, length]; ``frozen`` holds the adapter's frozen inputs: the source rows
  (``projection`` reads them), the teacher blocks a ``transfer`` carries over (a dict), or
  ``None`` (merged params being served); an adapter that needs none ignores it.
* ``materialize(params, frozen) -> table``: the plain [vocab, output_dim] table the adapter
  amounts to, given the source rows as ``frozen``, so export and static inference need no
  JAX (``None`` for an adapter that is not static, e.g. a contextual one).
* ``output_dim(cfg, table_shape) -> int`` and ``table_bytes(params, table_shape) -> int``:
  the width of the vectors and the bytes the adapter needs in place of the table.
* ``VOCAB_ROWS``: the top-level param keys with one row per vocabulary entry; training pads
  them with zero rows (``config.pad_vocab_to_multiple_of``) so they can be row-sharded.
* optional ``to_storage(params, cfg) -> params``: the params as exported (e.g. cast to a
  smaller dtype); evaluation and export use this form.

``cfg`` is the ``config.adapter`` section (a ``ConfigDict``, or anything with attributes).
"""

from __future__ import annotations

from types import ModuleType

from embres.adapters import (
    attention,
    conv_transfer,
    hybrid,
    lowrank,
    projection,
    static,
    table,
    transfer,
)

ADAPTERS: dict[str, ModuleType] = {
    "attention": attention,
    "conv_transfer": conv_transfer,
    "hybrid": hybrid,
    "lowrank": lowrank,
    "projection": projection,
    "static": static,
    "table": table,
    "transfer": transfer,
}


def get(name: str) -> ModuleType:
    """Returns the adapter module registered as ``name``.

    Raises:
      ValueError: naming ``config.adapter.type`` and the registered adapters.
    """
    if name not in ADAPTERS:
        raise ValueError(
            f"config.adapter.type={name!r} is not a known adapter; expected one of {sorted(ADAPTERS)}"
        )
    return ADAPTERS[name]


def param_count(params) -> int:
    """Number of scalars in a parameter tree."""
    import jax

    return int(sum(x.size for x in jax.tree.leaves(params)))


def param_bytes(params) -> int:
    """Bytes held by a parameter tree."""
    import jax

    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params)))


def resize_vocab_rows(params: dict, adapter: ModuleType, rows: int, new_rows: int) -> dict:
    """``params`` with the adapter's vocab-row leaves (``adapter.VOCAB_ROWS``) padded with
    zero rows, or cut, from ``rows`` to ``new_rows``; other leaves are untouched."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    if rows == new_rows:
        return params
    out = dict(params)
    for key in getattr(adapter, "VOCAB_ROWS", ()):
        leaf = out[key]
        if leaf.shape[0] != rows:
            raise ValueError(f"adapter param {key!r} has {leaf.shape[0]} rows; expected {rows}")
        if new_rows < rows:
            out[key] = leaf[:new_rows]
        else:
            xp = jnp if isinstance(leaf, jax.Array) else np
            out[key] = xp.pad(leaf, [(0, new_rows - rows)] + [(0, 0)] * (leaf.ndim - 1))
    return out
