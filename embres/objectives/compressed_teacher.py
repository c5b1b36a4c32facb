"""The compressed teacher: the teacher's input table replaced by an adapter's rows.

The transformer above the table stays frozen. The adapter's token vectors are fed to the
teacher as ``inputs_embeds``, and trained so that the teacher reproduces its own hidden
states (the layers in ``config.objective.layers``) and its pooled sentence vector:

    loss = hidden_weight · mean_layers(cos_w·(1 − cos) + mse_w·mse)  (per real token)
         + pooled_weight · (cos_w·(1 − cos) + mse_w·mse)             (pooled vectors)

Every term is a per-example mean, so the jit and pmap paths agree. The served model is the
teacher with the adapter's materialised table (``export.export_compressed_teacher``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from embres import adapters, configlib
from embres import pooling as pooling_lib
from embres.objectives import Plan, common, losses, stages

NAME = "compressed_teacher"
# Adapters whose materialised table can stand in for the teacher's, at its width.
ADAPTERS = ("lowrank",)


def check(config: Any, model: Any, adapter: Any) -> None:
    """The adapter is one whose table the teacher can read, at the teacher's width."""
    kind = config.adapter.type
    if kind not in ADAPTERS:
        reason = "its rows are not in the teacher's input space (a PCA start or a context path)"
        common.refuse_pair(NAME, kind, reason, ADAPTERS)
    shape = (model.config.vocab_size, model.config.hidden_size)
    adapter.check_config(config.adapter, shape)
    width = adapter.output_dim(config.adapter, shape)
    if width != model.config.hidden_size:
        raise ValueError(
            f"config.adapter produces {width}-d vectors but objective {NAME!r} feeds them to "
            f"the teacher, whose width is {model.config.hidden_size}; leave "
            "config.adapter.target_dim unset or use config.objective.kind='static_distill'"
        )
    configlib.parse_layers(config.objective.layers, model.config.num_layers)
    common.check_sizes(config, model)


def make_loss(config: Any, model: Any, adapter: Any):
    """``loss(params, batch, frozen, rng) -> (loss, aux)``; ``frozen = {"teacher": params}``."""
    obj, pooling, table_path = config.objective, model.pooling, model.table_path
    layers = configlib.parse_layers(obj.layers, model.config.num_layers)

    def loss(params, batch, frozen, rng):
        del rng  # deterministic
        ids, mask = batch["ids"], batch["mask"]
        teacher = frozen["teacher"]
        target = model.apply(teacher, ids, mask, output_hidden_states=True)
        t_states = jax.lax.stop_gradient(target["hidden_states"])
        t_last = jax.lax.stop_gradient(target["last_hidden_state"])
        t_pooled = pooling_lib.pool(t_last, mask, pooling)
        vectors = adapter.apply(params, common.get_table(teacher, table_path), ids, mask)
        student = model.apply(teacher, ids, mask, inputs_embeds=vectors, output_hidden_states=True)
        hidden = losses.hidden_states_loss(
            student["hidden_states"], t_states, mask, layers, obj.cosine_weight, obj.mse_weight
        )
        s_pooled = pooling_lib.pool(student["last_hidden_state"], mask, pooling)
        pooled = losses.pooled_loss(s_pooled, t_pooled, obj.cosine_weight, obj.mse_weight)
        per_example = obj.hidden_weight * hidden + obj.pooled_weight * pooled
        aux = {"hidden_loss": jnp.mean(hidden), "pooled_loss": jnp.mean(pooled)}
        return jnp.mean(per_example), aux

    return loss


def student_fn(model: Any, adapter: Any, batch_size: int):
    """``student(params)``: the teacher reading the adapter's materialised table."""

    def student(params):
        served = common.host_model(model)
        teacher_table = np.asarray(served.embedding_table(), np.float32)
        table = np.asarray(adapter.materialize(params, teacher_table), np.float32)
        student_params = common.replace_table(served.params, served.table_path, jnp.asarray(table))
        table_bytes = adapter.table_bytes(params, teacher_table.shape)
        total = adapters.param_bytes(served.params) - teacher_table.size * 4 + table_bytes
        info = {"table_bytes": table_bytes, "total_bytes": total, "params": params}
        return stages.extractor_fn(served, batch_size, student_params), info

    return student


def export_fn(config: Any, model: Any, adapter: Any):
    """``export(params, directory)``: the teacher with the adapter's table, plus its factors."""

    def export(params, directory):
        from flax import traverse_util

        from embres.export import export_compressed_teacher

        served = common.host_model(model)
        table = np.asarray(adapter.materialize(params, served.embedding_table()), np.float32)
        factors = {"/".join(k): v for k, v in traverse_util.flatten_dict(params).items()}
        meta = {
            "adapter": config.adapter.to_dict(),
            "objective": NAME,
            "base_model": config.model,
            "table_path": "/".join(model.table_path),
        }
        return export_compressed_teacher(served, table, factors, meta, directory)

    return export


def prepare(
    config: Any,
    model: Any,
    adapter: Any,
    workdir: Path,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> Plan:
    """Teacher table as the adapter's start, the configured data source, the teacher frozen."""
    from embres import data

    del workdir
    source = data.make_source(
        config.data,
        model.tokenizer,
        vocab_size=model.config.vocab_size,
        pad_id=model.pad_id,
        batch_size=config.batch_size,
        seed=config.seed,
        process_index=process_index,
        process_count=process_count,
    )
    weights = None
    if config.adapter.weighting == "frequency":
        weights = np.asarray(source.token_weights(), np.float32)
    batch_size = config.eval.batch_size
    return Plan(
        init_table=common.get_table(model.params, model.table_path),
        init_weights=weights,
        frozen={"teacher": model.params},
        source=source,
        loss=make_loss(config, model, adapter),
        in_batch=False,
        meta={"objective": NAME},
        student=student_fn(model, adapter, batch_size),
        teacher=lambda: stages.teacher_embedder(common.host_model(model), batch_size),
        export=export_fn(config, model, adapter),
    )
