"""Trains an adapter against a frozen teacher: ``python -m embres.train --config=configs/x.py``.

Usage::

    python -m embres.train --config=configs/lowrank.py                      # default workdir
    python -m embres.train --config=configs/lowrank.py:runlocal --workdir=/tmp/w
    python -m embres.train --config=configs/lowrank.py --config.adapter.rank=64 \\
        --config.data.source=text:../shared/data/text/en.txt

``train_and_evaluate(config, workdir)`` reads top to bottom: checks → mesh → teacher → data
→ state (shape first) → restore → step → loop → evaluation → export. Re-running on a
workdir that holds a checkpoint resumes from it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags, logging
from flax import traverse_util
from ml_collections import config_flags

from embres import adapters, configlib, data, objectives, parallel
from embres import pooling as pooling_lib
from embres.checkpointing import Checkpointer
from embres.metrics import MetricWriter, check_finite

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (configs/*.py[:arg]).", lock_config=True
)
_MULTIHOST = flags.DEFINE_bool(
    "multihost",
    None,
    "Join a multi-process run via jax.distributed (EMBRES_COORDINATOR/EMBRES_NUM_PROCESSES/"
    "EMBRES_PROCESS_ID, else SLURM / Cloud TPU detection). Default: only when EMBRES_* are set.",
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where checkpoints, logs and the export go (default: workdirs/<config>)."
)


def _report(message: str) -> None:
    if jax.process_index() == 0:
        print(f"[embres.train] {message}", flush=True)


# ----------------------------------------------------------------------------- pieces


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
    frozen = opt.get("frozen", "")
    if frozen:  # adapter params whose '/'-joined path matches stay at their initial values
        pattern = re.compile(frozen)

        def labels(params):
            return jax.tree_util.tree_map_with_path(
                lambda path, _: "frozen" if pattern.search(_path_name(path)) else "trained", params
            )

        tx = optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
    return tx, schedule


def _path_name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def get_table(teacher_params: dict, table_path: tuple[str, ...]) -> jax.Array:
    """The teacher's input table inside its parameter tree."""
    node = teacher_params
    for part in table_path:
        node = node[part]
    return node


def replace_table(teacher_params: dict, table_path: tuple[str, ...], table: Any) -> dict:
    """A copy of the teacher's tree with its input table swapped (the rest shared)."""
    flat = traverse_util.flatten_dict(teacher_params)
    flat[table_path] = table
    return traverse_util.unflatten_dict(flat)


def resize_vocab_rows(params: dict, adapter: Any, rows: int, new_rows: int) -> dict:
    """``params`` with the adapter's vocab-row leaves (``adapter.VOCAB_ROWS``) padded with
    zero rows, or cut, from ``rows`` to ``new_rows``; other leaves are untouched."""
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
            pad = [(0, new_rows - rows)] + [(0, 0)] * (leaf.ndim - 1)
            out[key] = xp.pad(leaf, pad)
    return out


def host_model(model: Any) -> Any:
    """``model`` with its (sharded, padded) input table gathered into one unpadded host copy."""
    import dataclasses

    from jax.experimental import multihost_utils

    table = get_table(model.params, model.table_path)
    if not table.is_fully_addressable:
        table = multihost_utils.process_allgather(table, tiled=True)
    table = np.asarray(table)[: model.config.vocab_size]
    return dataclasses.replace(
        model, params=replace_table(model.params, model.table_path, jnp.asarray(table))
    )


def make_loss_fn(config: ml_collections.ConfigDict, model: Any, adapter: Any, layers: tuple):
    """``loss_fn(params, batch, teacher, rng) -> (loss, aux)``; only ``params`` is trained."""
    obj, pooling = config.objective, model.pooling
    table_path = model.table_path

    def loss_fn(params, batch, teacher, rng):
        del rng  # no stochastic layers yet; folded from the step for those that come
        ids, mask = batch["ids"], batch["mask"]
        table = get_table(teacher, table_path)
        target = model.apply(teacher, ids, mask, output_hidden_states=obj.kind != "static")
        t_last = jax.lax.stop_gradient(target["last_hidden_state"])
        t_pooled = pooling_lib.pool(t_last, mask, pooling)
        vectors = adapter.apply(params, table, ids, mask)
        if obj.kind == "compressed_teacher":
            student = model.apply(
                teacher, ids, mask, inputs_embeds=vectors, output_hidden_states=True
            )
            t_states = jax.lax.stop_gradient(target["hidden_states"])
            hidden = objectives.hidden_states_loss(
                student["hidden_states"], t_states, mask, layers, obj.cosine_weight, obj.mse_weight
            )
            s_pooled = pooling_lib.pool(student["last_hidden_state"], mask, pooling)
            pooled = objectives.pooled_loss(s_pooled, t_pooled, obj.cosine_weight, obj.mse_weight)
            per_example = obj.hidden_weight * hidden + obj.pooled_weight * pooled
        else:  # static: pooled adapter vectors match the teacher's sentence geometry
            s_pooled = pooling_lib.pool(vectors, mask, "mean")
            hidden = objectives.similarity_loss(s_pooled, t_pooled)
            pooled = (
                objectives.cosine_distance(s_pooled, t_pooled)
                if s_pooled.shape[-1] == t_pooled.shape[-1]
                else jnp.zeros_like(hidden)
            )
            per_example = obj.hidden_weight * hidden + obj.pooled_weight * pooled
        aux = {"hidden_loss": jnp.mean(hidden), "pooled_loss": jnp.mean(pooled)}
        return jnp.mean(per_example), aux

    return loss_fn


def make_train_step(loss_fn, tx, schedule, seed: int, trace_count: list[int]):
    """The one pure step. ``axis_name`` is set only on the pmap path (then grads are pmean'd).

    Returns ``train_step(state, batch, teacher, axis_name=None) -> (state, metrics)``; the
    teacher's params are a separate, never-differentiated argument.
    """

    def train_step(state, batch, teacher, axis_name=None):
        trace_count[0] += 1  # Python side effect: runs once per trace, i.e. per compilation
        rng = jax.random.fold_in(jax.random.PRNGKey(seed), state["step"])
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, aux), grads = grad_fn(state["params"], batch, teacher, rng)
        if axis_name is not None:
            grads, loss, aux = jax.lax.pmean((grads, loss, aux), axis_name)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics = {
            "loss": loss,
            "grad_norm": optax.global_norm(grads),
            "learning_rate": schedule(state["step"]),
            **aux,
        }
        new_state = {"step": state["step"] + 1, "params": params, "opt_state": opt_state}
        return new_state, metrics

    return train_step


# ----------------------------------------------------------------------------- evaluation


def _embed_static(model: Any, table: np.ndarray, texts: list[str]) -> np.ndarray:
    """Mean of the static rows of each text's tokens (numpy only)."""
    from embres import tokenize

    rows = tokenize.encode(model.tokenizer, texts, model.max_length)
    return np.stack([table[r].mean(0) for r in rows]).astype(np.float32)


def _rate(fn, texts: list[str]) -> float:
    fn(texts)  # warm up: compiles every bucket shape these texts need
    start = time.perf_counter()
    fn(texts)
    return len(texts) / max(time.perf_counter() - start, 1e-9)


def evaluate(
    config, model, adapter, params, heldout: list[str], source_table=None
) -> dict[str, dict[str, float]]:
    """Teacher vs student: STS-B dev, fidelity on held-out text, bytes, sentences/s."""
    from embres.extract import EmbeddingExtractor

    teacher_table = np.asarray(model.embedding_table(), np.float32)
    if config.objective.kind == "static_distill":
        from embres import static_training

        student_table = None
    else:
        student_table = np.asarray(adapter.materialize(params, teacher_table), np.float32)
    total_bytes = adapters.param_bytes(model.params)
    table_bytes = teacher_table.size * 4
    extractor = EmbeddingExtractor(model, batch_size=config.eval.batch_size)
    teacher_fn = functools.partial(extractor.extract_embeddings, progress=False)
    if config.objective.kind == "compressed_teacher":
        student_params = replace_table(model.params, model.table_path, jnp.asarray(student_table))

        def student_fn(texts):
            extractor.params = student_params
            try:
                return extractor.extract_embeddings(texts)
            finally:
                extractor.params = model.params

        student_total = total_bytes - table_bytes + adapter.table_bytes(params, teacher_table.shape)
    elif student_table is None:
        student_fn = static_training.embed_fn(model, adapter, params, source_table)
        student_total = adapter.table_bytes(params, teacher_table.shape)
    else:
        student_fn = functools.partial(_embed_static, model, student_table)
        student_total = adapter.table_bytes(params, teacher_table.shape)
    rows = {
        "teacher": {"table_bytes": table_bytes, "total_bytes": total_bytes},
        "student": {
            "table_bytes": adapter.table_bytes(params, teacher_table.shape),
            "total_bytes": student_total,
        },
    }
    if heldout:
        a, b = teacher_fn(heldout), student_fn(heldout)
        if a.shape[1] == b.shape[1]:
            cos = np.sum(a * b, 1) / np.maximum(
                np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12
            )
            rows["teacher"]["fidelity"], rows["student"]["fidelity"] = 1.0, float(cos.mean())
        rows["teacher"]["sentences_per_s"] = _rate(teacher_fn, heldout)
        rows["student"]["sentences_per_s"] = _rate(student_fn, heldout)
    if config.eval.sts:
        _sts(rows, teacher_fn, student_fn)
    return rows


def _sts(rows: dict, teacher_fn, student_fn) -> None:
    data_dir = os.environ.get("EMBRES_DATA_DIR")
    if not data_dir or not (Path(data_dir) / "stsb").is_dir():
        _report("STS-B skipped: EMBRES_DATA_DIR does not hold stsb/")
        return
    try:
        from embres.evaluate.sts import evaluate_sts
    except ImportError as e:
        _report(f"STS-B skipped: embres.evaluate.sts is not available ({e})")
        return
    for name, fn in (("teacher", teacher_fn), ("student", student_fn)):
        rows[name]["stsb_dev"] = float(evaluate_sts(fn, dataset="stsb", split="dev"))


def format_summary(rows: dict[str, dict[str, float]]) -> str:
    """A markdown table, one column per model."""
    keys = ["stsb_dev", "fidelity", "table_bytes", "total_bytes", "sentences_per_s"]
    keys = [k for k in keys if any(k in r for r in rows.values())]
    lines = ["| metric | teacher | student |", "|---|---|---|"]
    for k in keys:
        cells = []
        for name in ("teacher", "student"):
            v = rows[name].get(k)
            cells.append("-" if v is None else f"{v:,.0f}" if "bytes" in k else f"{v:.4g}")
        lines.append(f"| {k} | {cells[0]} | {cells[1]} |")
    t, s = rows["teacher"]["table_bytes"], rows["student"]["table_bytes"]
    lines.append(f"\ntable compression: {t / s:.2f}x ({t:,} -> {s:,} bytes)")
    return "\n".join(lines)


def export(config, model, adapter, params, directory: Path) -> Path:
    """Writes the adapted model to ``directory``.

    Compressed teacher: a Hugging Face directory with ``A·B`` merged into the table (loads
    in embres, transformers and sentence-transformers), plus ``adapter/`` holding the small
    factors (``adapter.safetensors``) and ``adapter.json``: the merged copy is for
    compatibility, the factors are what a size-conscious user ships. Static: the
    materialised table as ``static_table.safetensors`` next to the tokenizer files.
    """
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    teacher_table = np.asarray(model.embedding_table(), np.float32)
    table = np.asarray(adapter.materialize(params, teacher_table), np.float32)
    flat = {  # float16 factors stay float16 (the real size); bfloat16 is widened for numpy
        "/".join(k): np.asarray(v) if v.dtype in (np.float16, np.float32) else np.asarray(v, "f4")
        for k, v in traverse_util.flatten_dict(params).items()
    }
    meta = {
        "adapter": config.adapter.to_dict(),
        "objective": config.objective.kind,
        "base_model": config.model,
        "table_path": "/".join(model.table_path),
    }
    if config.objective.kind == "compressed_teacher":
        model.save(directory, params=replace_table(model.params, model.table_path, table))
        sub = directory / "adapter"
        sub.mkdir(exist_ok=True)
        save_file(flat, str(sub / "adapter.safetensors"))
        (sub / "adapter.json").write_text(json.dumps(meta, indent=2))
    else:
        save_file({"embeddings": table}, str(directory / "static_table.safetensors"))
        save_file(flat, str(directory / "adapter.safetensors"))
        (directory / "adapter.json").write_text(json.dumps(meta, indent=2))
        model.tokenizer.save_pretrained(str(directory))
    return directory


# ----------------------------------------------------------------------------- the script


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Trains ``config`` in ``workdir`` (resuming when it holds a checkpoint), evaluates, exports.

    Returns:
      ``{"rows": summary rows, "final_step": int, "step_traces": int, "params": host params,
      "params_bytes_per_device": the most bytes of trained params on one device (padded),
      "losses": {step: loss}}``.
    """
    workdir = Path(workdir)
    t_start = time.time()

    # --- Checks that need nothing loaded: names, modes, sizes, the data file.
    configlib.check_static(config)

    # --- Mesh.
    use_pmap = config.parallel == "pmap"
    devices = parallel.select_devices(config.num_devices, local=use_pmap)
    mesh = parallel.make_mesh(
        {"data": len(devices)} if use_pmap else config.mesh.to_dict(), devices
    )

    # --- Teacher (frozen) and the checks that need its shapes. A teacher table that the
    # rules shard (e.g. rows over "model") is read block by block into its shards.
    from embres.models import family_of, load_model

    table_name = "teacher/" + family_of(config.model).TABLE_PATH
    rules = () if use_pmap else config.sharding_rules  # the pmap path replicates everything
    table_sharding = None
    if not use_pmap:
        table_sharding = parallel.sharding_for(table_name, mesh, rules)
    sharded_table = table_sharding is not None and not table_sharding.is_fully_replicated
    model = load_model(
        config.model,
        dtype=config.dtype,
        table_sharding=table_sharding if sharded_table else None,
        table_row_multiple=config.pad_vocab_to_multiple_of,
    )
    layers = configlib.check_with_model(config, model, mesh.shape[parallel.DATA_AXIS])
    adapter = adapters.get(config.adapter.type)
    teacher_params = model.params
    vocab_size = model.config.vocab_size
    padded_vocab = parallel.padded_rows(vocab_size, config.pad_vocab_to_multiple_of)
    if sharded_table:
        _report(
            f"teacher table {table_name}: {vocab_size:,} rows (+{padded_vocab - vocab_size} "
            f"padding) sharded {table_sharding.spec} over {dict(mesh.shape)}, read block by "
            "block: only the rows this process's devices hold"
        )

    # --- Static/hybrid students: start from vocabulary distillation; targets cached or in-step.
    distill = config.objective.kind == "static_distill"
    source = None
    if distill:
        from embres import static_training

        dims = static_training.matryoshka_dims(
            config.objective.get("matryoshka_dims", ""), config.adapter.target_dim
        )
        # Vocabulary distillation and cached targets run outside the step, on whole arrays.
        target_model = host_model(model) if sharded_table else model
        init_table, sif = static_training.source_table(target_model, config)
        proj = static_training.projection(init_table, config.adapter.target_dim)
        source = static_training.make_source(
            config, target_model, workdir, proj, jax.process_index(), jax.process_count()
        )
        teacher_params = {**teacher_params, static_training.PROJECTION_KEY: jnp.asarray(proj)}

    # --- Data.
    source = source or data.make_source(
        config.data,
        model.tokenizer,
        vocab_size=model.config.vocab_size,
        pad_id=int(model.config.pad_token_id),
        batch_size=config.batch_size,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )

    # --- State, shape first.
    tx, schedule = make_optimizer(config.optimizer, config.total_steps)
    weights = None
    if config.adapter.get("weighting", "none") == "frequency":
        weights = jnp.asarray(source.token_weights(), jnp.float32)

    def init_state(rng, table, weights):
        params = adapter.init(rng, table[:vocab_size], config.adapter, weights)
        # Vocab-row params get zero rows up to a fixed multiple, so they divide over any
        # model axis that divides it and checkpoints fit every mesh; ids never reach them,
        # so their gradients, Adam moments and updates stay exactly zero.
        params = resize_vocab_rows(params, adapter, vocab_size, padded_vocab)
        return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}

    table = jnp.asarray(init_table) if distill else get_table(teacher_params, model.table_path)
    if distill:
        weights = jnp.asarray(sif)
    init_args = (jax.random.PRNGKey(config.seed), table, weights)
    abstract = jax.eval_shape(init_state, *init_args)
    shardings = parallel.tree_shardings(abstract, mesh, rules, check=True)
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )

    # --- Restore (resume first), else initialise.
    ckpt = Checkpointer(
        workdir / "checkpoints", config.checkpoint.every_steps, config.checkpoint.keep, _report
    )
    restored = ckpt.restore(abstract)
    if restored is not None:
        start_step, state, data_state, meta = restored
        if meta.get("base_model") != config.model:
            raise ValueError(
                f"{workdir} holds a checkpoint of base model {meta.get('base_model')!r}, but "
                f"config.model={config.model!r}; use another --workdir"
            )
        source.set_state(data_state)
        _report(f"resumed from step {start_step} in {ckpt.directory}")
    else:
        start_step = 0
        state = jax.jit(init_state, out_shardings=shardings)(*init_args)
    padding = sum(
        (padded_vocab - vocab_size) * int(np.prod(abstract["params"][k].shape[1:]))
        for k in getattr(adapter, "VOCAB_ROWS", ())
    )
    n_params = adapters.param_count(abstract["params"]) - padding
    n_table = vocab_size * table.shape[1]
    _report(
        f"{config.adapter.type} adapter: {n_params:,} trainable params in place of the "
        f"{vocab_size:,} x {table.shape[1]} table ({n_table:,}; {n_table / n_params:.2f}x)"
    )
    meta = {"base_model": config.model, "config": json.loads(config.to_json_best_effort())}
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        # Not "config.json": a workdir holding one would be taken for a model directory.
        (workdir / "train_config.json").write_text(config.to_json_best_effort(indent=2))

    # --- The step: jit over the mesh (default) or the same function under pmap.
    trace_count = [0]
    if distill:
        loss_fn = functools.partial(
            static_training.loss, model=model, adapter=adapter, config=config, dims=dims
        )
    else:
        loss_fn = make_loss_fn(config, model, adapter, layers)
    train_step = make_train_step(loss_fn, tx, schedule, config.seed, trace_count)
    if use_pmap:
        step_fn = parallel.pmap_step(train_step)
        state = parallel.replicate(jax.device_get(state), devices)
        frozen = parallel.replicate(teacher_params, devices)

        def run_step(state, batch):
            new_state, metrics = step_fn(state, parallel.split_batch(batch, len(devices)), frozen)
            return new_state, parallel.unreplicate(metrics)

        def host_state(state):
            return parallel.unreplicate(state)
    else:
        batch_shard = parallel.batch_sharding(mesh)
        frozen_shardings = parallel.tree_shardings(
            {"teacher": teacher_params}, mesh, rules, check=True
        )["teacher"]
        frozen = jax.device_put(teacher_params, frozen_shardings)
        jitted = parallel.jit_step(train_step, shardings, batch_shard, frozen_shardings)

        def run_step(state, batch):
            return jitted(state, parallel.put_batch(batch, batch_shard), frozen)

        def host_state(state):
            return state

    # --- Loop.
    writer = MetricWriter(workdir, config.total_steps, start_step)
    last_good = ckpt.all_steps()[-1] if ckpt.all_steps() else None
    losses: dict[int, float] = {}
    t_log, rows_since = time.time(), 0
    for step in range(start_step + 1, config.total_steps + 1):
        batch = source.next_batch()
        state, metrics = run_step(state, batch)
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        check_finite(step, metrics, last_good)
        losses[step] = metrics["loss"]
        rows_since += config.batch_size
        writer.advance(step, metrics["loss"])
        if step % config.log_every_steps == 0 or step == config.total_steps:
            metrics["examples_per_s"] = rows_since / max(time.time() - t_log, 1e-9)
            writer.write(step, metrics)
            t_log, rows_since = time.time(), 0
        force = step == config.total_steps
        if ckpt.save(step, host_state(state), source.get_state(), meta, force=force):
            last_good = step
    final_step = max(start_step, config.total_steps)
    if start_step >= config.total_steps:
        _report(f"{workdir} already holds the final step {start_step}; evaluating only")
    params_per_device = parallel.bytes_per_device(host_state(state)["params"])
    params = parallel.to_host(host_state(state)["params"])
    params = resize_vocab_rows(params, adapter, padded_vocab, vocab_size)  # drop the padding
    if sharded_table:  # evaluation and export need the whole table, on every process
        model = host_model(model)
    if hasattr(adapter, "to_storage"):  # evaluate exactly what is exported
        params = jax.device_get(adapter.to_storage(params, config.adapter))
    ckpt.close()
    if trace_count[0] > 1:
        logging.warning("the train step was traced %d times (expected once)", trace_count[0])

    # --- Evaluation and export (process 0 writes).
    heldout = source.heldout_texts(config.eval.heldout_texts)
    rows = evaluate(config, model, adapter, params, heldout, init_table if distill else None)
    summary = format_summary(rows)
    for name, values in rows.items():
        writer.write_summary(name, values, final_step)
    writer.close()
    if jax.process_index() == 0:
        if config.export and distill:
            path = static_training.export(
                config, model, adapter, params, init_table, workdir / "export"
            )
            _report(f"exported to {path}")
        elif config.export:
            path = export(config, model, adapter, params, workdir / "export")
            _report(f"exported to {path}")
        (workdir / "summary.md").write_text(summary + "\n")
        print(summary, flush=True)
        _report(f"done in {time.time() - t_start:.0f}s (workdir {workdir})")
    return {
        "rows": rows,
        "final_step": final_step,
        "step_traces": trace_count[0],
        "params": params,
        "params_bytes_per_device": params_per_device,
        "losses": losses,
    }


def default_workdir(config_path: str | None) -> Path:
    """``workdirs/<config file stem>[_<arg>]`` under the current directory."""
    path, _, arg = (config_path or "config").partition(":")
    name = Path(path).stem + (f"_{arg.replace(',', '_').replace('=', '')}" if arg else "")
    return Path("workdirs") / name


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every file it renames at INFO
    config_path = config_flags.get_config_filename(flags.FLAGS["config"])
    workdir = _WORKDIR.value or default_workdir(config_path)
    try:
        parallel.initialize(_MULTIHOST.value)  # before anything touches devices
        train_and_evaluate(_CONFIG.value, workdir)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        # Config mistakes and NaN stops are the user's to fix: a message, not a traceback.
        raise SystemExit(f"embres.train: {type(e).__name__}: {e}") from None


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
