"""The optimizer every objective trains with: AdamW, warmup then cosine decay, clipping,
and regex-frozen params. Machinery that knows no model (bottom layer)."""

from __future__ import annotations

import re

import jax
import ml_collections
import optax

from embres.arrays import path_name


def make_optimizer(opt: ml_collections.ConfigDict, total_steps: int):
    """AdamW with linear warmup then cosine decay, after global-norm clipping.

    ``opt.frozen`` (a regex over adapter param paths such as ``"B$"``) keeps the matching
    params fixed.
    """
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=opt.learning_rate,
        warmup_steps=opt.warmup_steps,
        decay_steps=total_steps,
        end_value=opt.learning_rate * opt.end_learning_rate_ratio,
    )
    tx = optax.chain(
        optax.clip_by_global_norm(opt.clip_norm),
        optax.adamw(schedule, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay),
    )
    if opt.get("frozen", ""):
        pattern = re.compile(opt.frozen)

        def labels(params):
            return jax.tree_util.tree_map_with_path(
                lambda path, _: "frozen" if pattern.search(path_name(path)) else "trained", params
            )

        tx = optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
    return tx, schedule
