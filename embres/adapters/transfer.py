"""Layer adaptation: the teacher's last block(s), carried over into the student's width.

The student's token vectors are static rows (the teacher's layer ``L - n`` states of each
token, in the PCA basis of the teacher's hidden space) plus a learned position vector; the
teacher's last ``n`` blocks run over them, rewritten for that basis:

* every linear map is folded with the basis: a query of the reconstruction
  ``x = r·Pᵀ + μ`` is ``r·(Pᵀ Wq) + (μ Wq + bq)``; outputs are projected by ``P``;
* each LayerNorm is computed exactly on the reconstruction, from ``r`` alone
  (:func:`embres.adapters.blocks.basis_layer_norm`);
* heads and FFN neurons may be pruned (``config.adapter.heads`` / ``ffn_dim``), keeping
  the ones with the largest weight norms (‖Wv_h‖·‖Wo_h‖, ‖W1[:, j]‖·‖W2[j]‖).

At full width (``P`` square) and with nothing pruned the block *is* the teacher's block:
``(block(r) · Pᵀ + μ)`` equals the teacher's output on ``x`` (tested). Below full width, the
only change is that sums inside the block lose their components outside the basis.

The transferred weights are frozen data (``base``, built by :func:`from_teacher`); the
trained params start at zero and are added to them, so training starts exactly at the
transfer and the export (:func:`merge`) holds their sum. ``apply`` takes ``base`` as its
``frozen`` argument in training and ``None`` when serving merged params.

Config (``config.adapter``): ``target_dim``, ``layers`` (teacher blocks carried over, the
last ones), ``heads`` / ``ffn_dim`` (kept; 0 = all), ``head_dim`` (0 = the teacher's; it is
the teacher's in any case), ``max_positions`` (learned position rows; longer texts reuse
the last).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from embres.adapters import blocks, static

VOCAB_ROWS = ("table",)
_LN = ("G", "u", "m0", "c", "w", "q0", "a", "g", "b")
output_dim = static.output_dim


def check_config(cfg: Any, table_shape: tuple[int, int]) -> None:
    """``target_dim`` in 1..width; ``layers`` >= 1; ``heads``, ``ffn_dim``, ``head_dim`` >= 0;
    ``max_positions`` >= 1. Raises ``ValueError`` naming the key."""
    static.check_config(cfg, table_shape)
    for key, low in (("layers", 1), ("heads", 0), ("ffn_dim", 0), ("head_dim", 0)):
        value = getattr(cfg, key, low)
        if not isinstance(value, int) or value < low:
            raise ValueError(f"config.adapter.{key}={value!r}; expected an integer >= {low}")
    value = getattr(cfg, "max_positions", 64)
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"config.adapter.max_positions={value!r}; expected an integer >= 1")


def resolve_sizes(cfg: Any, teacher_config: Any) -> None:
    """Fills ``heads``, ``ffn_dim`` and ``head_dim`` left at 0 with the teacher's, in place.

    Raises:
      ValueError: more layers, heads or FFN neurons than the teacher has, or a ``head_dim``
        other than the teacher's, naming the key and the teacher's value.
    """
    n, h = teacher_config.num_layers, teacher_config.num_heads
    f, k = teacher_config.intermediate_size, teacher_config.hidden_size // h
    for key, most in (("layers", n), ("heads", h), ("ffn_dim", f)):
        value = getattr(cfg, key, 1 if key == "layers" else 0)
        if value > most:
            raise ValueError(
                f"config.adapter.{key}={value}; the teacher has {most} (expected 1..{most}, "
                "or 0 for all)"
                if key != "layers"
                else f"config.adapter.layers={value}; the teacher has {most} blocks"
            )
    if cfg.head_dim not in (0, k):
        raise ValueError(f"config.adapter.head_dim={cfg.head_dim}; a transferred head is {k} wide")
    cfg.heads, cfg.ffn_dim, cfg.head_dim = cfg.heads or h, cfg.ffn_dim or f, k


def init(rng: jax.Array, rows: jax.Array, cfg: Any, weights: jax.Array | None = None) -> dict:
    """The rows as given (already in the PCA basis), zero positions, and zero updates of
    every transferred block weight (sizes from ``cfg``, see :func:`resolve_sizes`)."""
    del rng, weights
    d = cfg.target_dim
    if rows.shape[1] != d:
        raise ValueError(
            f"the transfer adapter starts from rows in the PCA basis, {d} wide "
            f"(config.adapter.target_dim); got rows {rows.shape[1]} wide"
        )
    heads, width, f = cfg.heads, cfg.head_dim, cfg.ffn_dim
    if not heads or not width or not f:
        raise ValueError("config.adapter heads/head_dim/ffn_dim are 0: call resolve_sizes first")
    params = {"table": jnp.asarray(rows, jnp.float32), "pos": jnp.zeros((cfg.max_positions, d))}
    for i in range(cfg.layers):
        params.update({f"block{i}.{k}": jnp.zeros(s) for k, s in _shapes(d, heads, width, f)})
    return params


def _shapes(d: int, heads: int, width: int, f: int):
    for name in ("wq", "wk", "wv"):
        yield name, (d, heads, width)
        yield "b" + name[1], (heads, width)
    yield from (("wo", (heads, width, d)), ("bo", (d,)), ("w1", (d, f)), ("b1", (f,)))
    yield from (("w2", (f, d)), ("b2", (d,)))
    for ln in ("ln1.", "ln2."):
        yield from ((ln + "G", (d, d)), (ln + "u", (d,)), (ln + "m0", ()), (ln + "c", ()))
        yield from ((ln + "w", (d,)), (ln + "q0", ()), (ln + "a", (d,)), (ln + "g", (d,)))
        yield ln + "b", (d,)


def merge(params: dict, base: dict | None) -> dict:
    """Trained updates plus the transferred weights: the params an export holds."""
    if not base:
        return dict(params)
    return {k: v + base[k] if k in base else v for k, v in params.items()}


def embed_rows(params: dict, ids: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Static rows plus positions (clipped to the last row), pads zeroed: [b, l, d]."""
    x = jnp.take(params["table"], ids, axis=0)
    positions = jnp.minimum(jnp.arange(ids.shape[1]), params["pos"].shape[0] - 1)
    x = x + params["pos"][positions]
    return x if mask is None else x * mask[..., None].astype(x.dtype)


def run_blocks(p: dict, x: jax.Array, mask: jax.Array, pooled: bool = False) -> jax.Array:
    """The transferred blocks over ``x`` [b, l, d]: token vectors, or with ``pooled`` their
    masked mean [b, d] (the last LayerNorm's ``G`` applied once per sentence)."""
    n = blocks.count(p)
    for i in range(n):
        x = blocks.post_ln_block(x, mask, p, f"block{i}.", pooled=pooled and i == n - 1)
    return x


def apply_states(params: dict, frozen: Any, ids: jax.Array, mask: jax.Array | None = None):
    """(token vectors [b, l, d], {"input": the rows the blocks start from})."""
    p = merge(params, frozen if isinstance(frozen, dict) else None)
    mask = jnp.ones(ids.shape, jnp.int32) if mask is None else mask
    start = embed_rows(p, ids, mask)
    return run_blocks(p, start, mask), {"input": start}


def apply_pooled(params: dict, frozen: Any, ids: jax.Array, mask: jax.Array) -> jax.Array:
    """The served sentence vector: the masked mean of :func:`apply` [b, d], computed with
    the last LayerNorm's ``2·d·d`` per sentence rather than per token (exact)."""
    p = merge(params, frozen if isinstance(frozen, dict) else None)
    return run_blocks(p, embed_rows(p, ids, mask), mask, pooled=True)


def apply(params: dict, frozen: Any, ids: jax.Array, mask: jax.Array | None = None):
    """Token vectors [batch, length, target_dim] after the transferred blocks.

    ``frozen``: the frozen transferred weights (:func:`from_teacher`) in training, ``None``
    for merged params (an export).
    """
    return apply_states(params, frozen, ids, mask)[0]


def materialize(params: dict, frozen: Any) -> None:
    """None: a contextual student has no plain-table equivalent."""
    del params, frozen
    return None


def table_bytes(params: dict, table_shape: tuple[int, int]) -> int:
    """Bytes of everything the served student holds (rows, positions, blocks)."""
    del table_shape
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params)))


def flops_per_token(params: dict, length: int = 16) -> int:
    """FLOPs per token of the served sentence vector (:func:`apply_pooled`) at sequence
    ``length``: the blocks, the last LayerNorm's ``G`` once per sentence (the lookup is free)."""
    return (
        blocks.flops_per_token(params, length, basis_norm=True, pooled=True)
        + params["pos"].shape[1]
    )


# ----------------------------------------------------------------------------- the transfer


def _top(scores: np.ndarray, keep: int) -> np.ndarray:
    """Indices of the ``keep`` largest scores, in their original order."""
    return np.sort(np.argsort(-scores, kind="stable")[:keep])


def _basis_ln(scale: np.ndarray, bias: np.ndarray, mean: np.ndarray, basis: np.ndarray) -> dict:
    """A teacher LayerNorm (γ, β) rewritten for :func:`blocks.basis_layer_norm`."""
    width = basis.shape[0]
    return {
        "G": basis.T @ (scale[:, None] * basis),
        "u": basis.sum(0) / width,
        "m0": np.float32(mean.mean()),
        "c": np.float32(1.0 / width),
        "w": 2.0 * (basis.T @ mean) / width,
        "q0": np.float32(mean @ mean / width),
        "a": (mean * scale) @ basis,
        "g": scale @ basis,
        "b": (bias - mean) @ basis,
    }


def block_weights(
    layer: dict,
    mean: np.ndarray,
    basis: np.ndarray,
    heads: int,
    keep_heads: int,
    keep_ffn: int,
    ffn_activity: np.ndarray | None = None,
) -> dict:
    """One BERT-layout block (a ``layer_i`` subtree) in the basis (``mean`` [D], ``basis``
    [D, d]), pruned to ``keep_heads`` heads and ``keep_ffn`` FFN neurons.

    Neurons are ranked by ``ffn_activity`` (their mean |activation| on real text, see
    :func:`ffn_activity`) times ‖W2[j]‖ when given, else by ‖W1[:, j]‖ · ‖W2[j]‖.
    """
    f32 = lambda x: np.asarray(x, np.float64)  # noqa: E731 - the folding in float64
    att, mean, basis = layer["attention"], f32(mean), f32(basis)
    width = basis.shape[0] // heads
    w = {n: f32(att[n]["kernel"]) for n in ("query", "key", "value")}
    b = {n: f32(att[n]["bias"]) for n in ("query", "key", "value")}
    wo, bo = f32(layer["attention_output"]["kernel"]), f32(layer["attention_output"]["bias"])
    w1, b1 = f32(layer["intermediate"]["kernel"]), f32(layer["intermediate"]["bias"])
    w2, b2 = f32(layer["output"]["kernel"]), f32(layer["output"]["bias"])
    split = lambda x: x.reshape(x.shape[:-1] + (heads, width))  # noqa: E731
    head_score = np.linalg.norm(split(w["value"]), axis=(0, 2)) * np.linalg.norm(
        wo.reshape(heads, width, -1), axis=(1, 2)
    )
    hs = _top(head_score, keep_heads)
    activity = np.linalg.norm(w1, axis=0) if ffn_activity is None else f32(ffn_activity)
    ns = _top(activity * np.linalg.norm(w2, axis=1), keep_ffn)
    out = {}
    for short, name in (("q", "query"), ("k", "key"), ("v", "value")):
        out["w" + short] = split(basis.T @ w[name])[:, hs]
        out["b" + short] = split(mean @ w[name] + b[name])[hs]
    out["wo"] = (wo @ basis).reshape(heads, width, -1)[hs]
    out["bo"] = bo @ basis
    out["w1"], out["b1"] = (basis.T @ w1)[:, ns], (mean @ w1 + b1)[ns]
    out["w2"], out["b2"] = (w2 @ basis)[ns], b2 @ basis
    for ln, name in (("ln1.", "attention_norm"), ("ln2.", "output_norm")):
        norm = layer[name]
        for k, v in _basis_ln(f32(norm["scale"]), f32(norm["bias"]), mean, basis).items():
            out[ln + k] = v
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def ffn_activity(layer: dict, states: np.ndarray, mask: np.ndarray, heads: int) -> np.ndarray:
    """Mean |activation| of each FFN neuron of the teacher block ``layer`` on its real
    inputs ``states`` [n, l, D] (``mask`` [n, l]): [f], computed 256 sentences at a time."""
    width = states.shape[-1]
    full = block_weights(layer, np.zeros(width), np.eye(width), heads, heads, 1 << 30)
    full = {k: jnp.asarray(v) for k, v in full.items()}

    @jax.jit
    def chunk_sums(x, m):
        h = blocks.basis_layer_norm(x + blocks.attention(x, m, full, ""), full, "ln1.")
        acts = jnp.abs(jax.nn.gelu(h @ full["w1"] + full["b1"], approximate=False))
        return jnp.sum(acts * m[..., None], axis=(0, 1))

    total = np.zeros(full["w1"].shape[1])
    for start in range(0, len(states), 256):
        x, m = states[start : start + 256], mask[start : start + 256]
        total += np.asarray(chunk_sums(jnp.asarray(x, jnp.float32), jnp.asarray(m, jnp.float32)))
    return total / max(float(mask.sum()), 1.0)


def from_teacher(
    model: Any, mean: np.ndarray, basis: np.ndarray, cfg: Any, sample: dict | None = None
) -> dict:
    """The teacher's last ``cfg.layers`` blocks in the basis: the frozen ``base`` that
    :func:`apply` adds the trained updates to (keys as in :func:`init`, minus table/pos).

    Args:
      model: the teacher.
      mean, basis: the coordinates ``r = (x - mean) · basis``.
      cfg: ``config.adapter`` (``heads``, ``ffn_dim``, ``head_dim`` left at 0 are filled in).
      sample: optional ``{"states": {layer: [n, l, D]}, "mask": [n, l]}``, the teacher's
        hidden states on real text: FFN neurons are then pruned by their activity on it.

    Raises:
      ValueError: a teacher whose blocks are not BERT-layout post-LN encoder blocks.
    """
    family = getattr(model.config, "model_type", "")
    if not all(f"layer_{i}" in model.params for i in range(model.config.num_layers)):
        raise ValueError(
            f"layer transfer needs a BERT-layout encoder (BERT, MiniLM, XLM-R); the teacher "
            f"is {family!r}"
        )
    resolve_sizes(cfg, model.config)
    n, heads = model.config.num_layers, model.config.num_heads
    base = {}
    for i, layer in enumerate(range(n - cfg.layers, n)):
        weights = jax.device_get(model.params[f"layer_{layer}"])
        activity = None
        if sample is not None and cfg.ffn_dim < model.config.intermediate_size:
            activity = ffn_activity(weights, sample["states"][layer], sample["mask"], heads)
        block = block_weights(weights, mean, basis, heads, cfg.heads, cfg.ffn_dim, activity)
        base.update({f"block{i}.{k}": v for k, v in block.items()})
    return base
