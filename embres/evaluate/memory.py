"""Memory: bytes the loaded model holds, bytes of its weight files, table sizes, peak RSS.

Two sizes that differ, kept apart by name:

* ``memory/resident_bytes``: every array the loaded model holds in memory (its ``params``),
  with ``memory/resident_bytes_<dtype>`` and ``memory/param_count`` as the breakdown. An int8
  export that dequantises its table on load holds a float32 table: that is what counts here.
* ``memory/disk_bytes``: the weight files it was read from (``info["disk_bytes"]``), i.e. what
  ships; an int8 export's ``model_int8.safetensors`` is about 4x smaller than its float32 one.

``memory/table_bytes`` (with ``table_dtype``, ``vocab_size``, ``table_dim``,
``bytes_per_vocab_row``) is the [vocab, d] table as held in memory. Leaves of ``params`` may be
numpy, JAX or torch arrays (so peers are measured the same way). With ``factors`` (a low-rank
table kept as ``A``, ``B``: the compressed teacher) it also reports ``factored_table_bytes``
and ``factored_resident_bytes``: the sizes when the table is kept as its factors rather than
merged (``disk_bytes`` stays the merged files the model was read from). Peak host RSS is the process's high-water mark
(``resource.getrusage``), so it includes everything loaded before the evaluation; read it as
"this process needed at most".

Example::

    MemoryEvaluator(params=ex.params, table=ex.model.embedding_table(), disk_bytes=n).run()
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from embres.evaluate.common import EmbedFn, Skipped


def array_bytes(x: Any) -> tuple[int, int, str]:
    """(element count, bytes, dtype name) of a numpy, JAX or torch array."""
    if hasattr(x, "element_size") and hasattr(x, "numel"):  # torch.Tensor
        return (
            int(x.numel()),
            int(x.numel() * x.element_size()),
            str(x.dtype).removeprefix("torch."),
        )
    if hasattr(x, "dtype") and hasattr(x, "shape"):
        count = int(np.prod(x.shape, dtype=np.int64))
        return count, count * np.dtype(x.dtype).itemsize, np.dtype(x.dtype).name
    raise TypeError(f"cannot measure a {type(x).__name__}; expected a numpy, JAX or torch array")


def leaves(tree: Any) -> Iterator[Any]:
    """Array leaves of nested dicts, lists and tuples (no JAX needed, so torch trees work)."""
    if isinstance(tree, dict):
        for value in tree.values():
            yield from leaves(value)
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            yield from leaves(value)
    elif tree is not None:
        yield tree


def param_stats(params: Any) -> dict[str, int]:
    """``param_count``, ``resident_bytes`` and ``resident_bytes_<dtype>`` of a parameter tree."""
    out = {"param_count": 0, "resident_bytes": 0}
    for leaf in leaves(params):
        count, nbytes, dtype = array_bytes(leaf)
        out["param_count"] += count
        out["resident_bytes"] += nbytes
        out[f"resident_bytes_{dtype}"] = out.get(f"resident_bytes_{dtype}", 0) + nbytes
    return out


def table_stats(table: Any) -> dict[str, int | str]:
    """Bytes, dtype, vocabulary size and bytes per vocabulary row of a [vocab, d] table."""
    if len(table.shape) != 2:
        raise ValueError(f"embedding table has shape {tuple(table.shape)}; expected [vocab, d]")
    _, nbytes, dtype = array_bytes(table)
    vocab_size, dim = (int(s) for s in table.shape)
    return {
        "table_bytes": nbytes,
        "table_dtype": dtype,
        "vocab_size": vocab_size,
        "table_dim": dim,
        "bytes_per_vocab_row": nbytes // max(vocab_size, 1),
    }


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def device_memory() -> dict[str, int]:
    """``bytes_in_use`` and ``peak_bytes_in_use`` of the JAX default device, if it reports them."""
    if "jax" not in sys.modules:  # a torch or numpy peer: do not start JAX just to ask
        return {}
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return {
        f"device_{k}": int(stats[k]) for k in ("bytes_in_use", "peak_bytes_in_use") if k in stats
    }


class MemoryEvaluator:
    """Sizes of a model in memory and on disk, of its table, and the process's memory use.

    Args:
      params: every array the loaded model holds (None: resident sizes are skipped).
      table: the static [vocab, d] table as held in memory (None: table sizes are skipped).
      factors: the table's low-rank factors, if it is stored factored (optional).
      disk_bytes: bytes of the weight files the model was read from (None: skipped).
    """

    def __init__(
        self,
        params: Any = None,
        table: Any = None,
        factors: Any = None,
        disk_bytes: int | None = None,
    ):
        self.params, self.table, self.factors = params, table, factors
        self.disk_bytes = disk_bytes

    def run(self, embed_fn: EmbedFn | None = None) -> Iterator[tuple[str, Any]]:
        """Yields ``memory/...`` metrics; ``embed_fn`` is unused (sizes come from the model)."""
        resident = None
        if self.params is None:
            yield "memory/resident", Skipped("the model loader gave no parameter tree")
        else:
            stats = param_stats(self.params)
            resident = stats["resident_bytes"]
            for name, value in stats.items():
                yield f"memory/{name}", value
        if self.disk_bytes is None:
            yield "memory/disk", Skipped("the model loader named no weight files")
        else:
            yield "memory/disk_bytes", int(self.disk_bytes)
        if self.table is None:
            yield "memory/table", Skipped("the model loader gave no embedding table")
        else:
            for name, value in table_stats(self.table).items():
                yield f"memory/{name}", value
        if self.factors is not None:
            factored = param_stats(self.factors)["resident_bytes"]
            yield "memory/factored_table_bytes", factored
            if resident is not None and self.table is not None:
                merged_table = array_bytes(self.table)[1]
                yield "memory/factored_resident_bytes", resident - merged_table + factored
        yield "memory/peak_rss_bytes", peak_rss_bytes()
        for name, value in device_memory().items():
            yield f"memory/{name}", value
