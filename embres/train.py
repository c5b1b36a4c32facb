"""Trains a student against a frozen teacher: ``python -m embres.train --config=configs/x.py``.

Usage::

    python -m embres.train --config=configs/lowrank.py                      # default workdir
    python -m embres.train --config=configs/lowrank.py:runlocal --workdir=/tmp/w
    python -m embres.train --config=configs/lowrank.py --config.adapter.rank=64 \\
        --config.data.source=text:../shared/data/text/en.txt

``train_and_evaluate(config, workdir)`` reads top to bottom as named steps: check the config
and the workdir → check the data against the evaluation sets → mesh → teacher → the
objective's plan (data, frozen arrays, loss) → state (shape first) → restore or init → step →
loop → evaluate → export. What differs between ways of training lives in the objective
module (:mod:`embres.objectives`); this file never asks which one it runs. Re-running on a
workdir that holds a checkpoint resumes from it.

A run never reports or exports parameters that are NaN, inf or beyond float16's range: the
step counts them (:func:`embres.metrics.params_out_of_range`) beside the loss, and the loop
stops at the first bad step, naming it and the last good checkpoint, before anything is
logged, saved, evaluated or exported.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags, logging
from ml_collections import config_flags

from embres import adapters, cli, configlib, data, distributed, evaluate, objectives, optim
from embres.arrays import padded_rows, to_host
from embres.checkpointing import Checkpointer, config_changes, newest_meta
from embres.evaluate import report
from embres.evaluate.training import numeric
from embres.locking import FileLock, LockedError
from embres.metrics import (
    PARAM_LIMIT,
    PARAMS_OUT_OF_RANGE,
    FlopMeter,
    MetricWriter,
    NonFiniteLossError,
    check_finite,
    first_non_finite,
    host_params_out_of_range,
    matmul_peak,
    params_out_of_range,
)

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
flags.DEFINE_bool(
    "verbose", False, f"Show the traceback of a user's mistake (also: {cli.VERBOSE_ENV}=1)."
)
PROG = "embres.train"


def _report(message: str) -> None:
    if jax.process_index() == 0:
        print(f"[embres.train] {message}", flush=True)


# ----------------------------------------------------------------------------- the run


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Trains ``config`` in ``workdir`` (resuming when it holds a checkpoint), evaluates, exports.

    Returns:
      ``{"rows": summary rows, "final_step": int, "step_traces": int, "params": host params,
      "params_bytes_per_device": the most bytes of trained params on one device (padded),
      "losses": {step: loss}}``.
    """
    workdir = Path(workdir)
    # Checks that need nothing loaded come first, so a mistake leaves no trace, not even an
    # empty workdir; then one run per workdir, which must be a folder this run can write.
    objective, adapter = check_config(config)
    overlap = check_eval_overlap(config, objective)
    lock = _lock_workdir(workdir)
    try:
        return _train_and_evaluate(config, workdir, objective, adapter, overlap)
    finally:
        if lock is not None:
            lock.release()


def _train_and_evaluate(config, workdir: Path, objective, adapter, overlap) -> dict:
    t_start = time.time()
    check_resumable(config, workdir, newest_meta(workdir / "checkpoints"))
    layout = create_mesh(config, adapter)
    model = load_teacher(config, layout)
    check_against_teacher(config, objective, model, adapter, layout)
    plan = objective.prepare(
        config,
        model,
        adapter,
        workdir,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    check_plan(config, plan, layout)
    spec = create_state_spec(config, plan, model, adapter, layout)
    ckpt = Checkpointer(
        workdir / "checkpoints", config.checkpoint.every_steps, config.checkpoint.keep, _report
    )
    meta = checkpoint_meta(config, plan, overlap)
    start_step, state = restore_or_init(config, workdir, ckpt, spec, plan, meta)
    report_trainable(config, spec, model)
    write_train_config(config, workdir)
    stepper, state = compile_step(config, plan, spec, layout, state)
    writer = MetricWriter(workdir, config.total_steps, start_step)
    heldout = plan.source.heldout_texts(config.eval.heldout_texts)
    state, losses = train_loop(
        config, plan, spec, stepper, state, start_step, ckpt, meta, writer, heldout
    )
    final_step = max(start_step, config.total_steps)
    if start_step >= config.total_steps:
        _report(f"{workdir} already holds the final step {start_step}; evaluating only")
    params_per_device = distributed.bytes_per_device(stepper.host_state(state)["params"])
    params = served_params(config, spec, stepper.host_state(state)["params"], final_step)
    ckpt.close()
    warn_retraces(plan, stepper)
    rows = evaluate_and_export(config, plan, params, final_step, heldout, writer, workdir)
    _report(f"done in {time.time() - t_start:.0f}s (workdir {workdir})")
    return {
        "rows": rows,
        "final_step": final_step,
        "step_traces": stepper.trace_count[0],
        "params": params,
        "params_bytes_per_device": params_per_device,
        "losses": losses,
    }


# ----------------------------------------------------------------------------- checks


def check_config(config: ml_collections.ConfigDict) -> tuple[Any, Any]:
    """Checks that need nothing loaded (names, modes, sizes, the data source).

    Returns:
      ``(objective module, adapter module)``.
    """
    configlib.check_static(config)
    objective = objectives.get(config.objective.kind)
    adapter = adapters.get(config.adapter.type)
    data.check_spec(config.data.source)
    return objective, adapter


def check_eval_overlap(config: ml_collections.ConfigDict, objective) -> dict | None:
    """The training sources checked against ``config.evals``' sentences, before any teacher pass.

    :func:`embres.data.check_eval_overlap` raises when they share a sentence (unless
    ``config.data.allow_eval_overlap``); its report goes into the checkpoint meta. An
    objective's own extra sources (``training_sources(config)``, e.g. a dictionary file) are
    checked too. ``None`` where the data package offers no such check.
    """
    check = getattr(data, "check_eval_overlap", None)
    if check is None:
        return None
    sources = getattr(objective, "training_sources", None)
    overlap = check(config, extra_sources=None if sources is None else sources(config))
    _report(overlap_summary(overlap))
    return overlap


def overlap_summary(overlap: dict) -> str:
    """One line for the report of :func:`embres.data.check_eval_overlap`, source by source."""
    parts = []
    for label, entry in overlap.items():
        if "skipped" in entry:
            parts.append(f"{label} {entry['source']!r} not read ({entry['skipped']})")
            continue
        sets = ", ".join(f"{name} {n:,}" for name, n in sorted(entry.get("sets", {}).items()))
        parts.append(
            f"{label} {entry['source']!r}: {entry['overlap']:,} of {entry['sentences']:,} "
            "sentences in an evaluation set"
            + (f" ({sets})" if sets else "")
            + (
                ", left out when read (config.data.drop_eval_overlap)"
                if entry.get("dropped")
                else ""
            )
        )
    return "evaluation overlap: " + ("; ".join(parts) or "no training source to check")


_WORKDIR_OK, _WORKDIR_LOCKED, _WORKDIR_UNWRITABLE = 0, 1, 2  # process 0's verdict


def _lock_workdir(workdir: Path) -> FileLock | None:
    """One run per workdir: process 0 holds ``<workdir>/.lock``; every process hears the verdict.

    Process 0 first checks that ``workdir`` is a folder it can make or write (not a file, not
    on a read-only file system). The other processes of a multi-process run share process
    0's workdir and join its run; when it is refused, they stop too (with a pointer to
    process 0's message) instead of walking into collectives process 0 never reaches.
    """
    lock, refused, verdict = None, None, _WORKDIR_OK
    if jax.process_index() == 0:
        problem = cli.writable_problem(workdir, "workdir")
        if problem is not None:
            refused, verdict = cli.UsageError(problem), _WORKDIR_UNWRITABLE
        else:
            try:
                lock = FileLock(
                    workdir / ".lock",
                    f"workdir {workdir}",
                    hint="Wait for that run to finish, or give this one another --workdir",
                ).acquire()
            except LockedError as e:
                refused, verdict = e, _WORKDIR_LOCKED
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        verdict = int(multihost_utils.broadcast_one_to_all(np.int32(verdict)))
        if verdict == _WORKDIR_LOCKED and refused is None:
            refused = LockedError(f"workdir {workdir} is in use (see process 0's message)")
        elif verdict == _WORKDIR_UNWRITABLE and refused is None:
            refused = cli.UsageError(f"workdir {workdir} cannot be written (see process 0)")
    if refused is not None:
        raise refused
    if lock is not None and lock.took_over():
        _report(lock.took_over())
    return lock


# The saved config keys that make a checkpoint another kind of run: its state cannot fit.
RUN_KIND_KEYS = ("adapter.type", "objective.kind")


def check_resumable(config: ml_collections.ConfigDict, workdir: Path, newest) -> None:
    """Stops, before any teacher pass, a run whose workdir holds another run's checkpoint.

    ``newest`` is :func:`embres.checkpointing.newest_meta` of its checkpoint folder. Another
    base model, another adapter type or objective kind (another kind of state: it would be
    refused for its shapes after the objective's work, which would leave caches behind), or
    another data source (a saved data position means nothing to another source) is refused,
    naming both and the ways out.
    """
    if newest is None:
        return
    step, saved = newest
    if saved.get("base_model") != config.model:
        raise ValueError(
            f"{workdir} holds a checkpoint (step {step}) of base model "
            f"{saved.get('base_model')!r}, but config.model={config.model!r}; use another "
            "workdir (--workdir, or fit(..., workdir=...))"
        )
    saved_config = saved.get("config") or {}
    _check_run_kind(config, workdir, step, saved_config)
    source = saved_config.get("data", {}).get("source")
    if source is not None and source != config.data.source:
        raise ValueError(
            f"{workdir} holds a checkpoint (step {step}) trained on data source {source!r}, "
            f"but this run asks for {config.data.source!r}; resuming would read the saved "
            "position in another source. Use another workdir (--workdir, or fit(..., "
            f"workdir=...)), resume with --config.data.source={source}, or delete "
            f"{workdir / 'checkpoints'} to start over"
        )


def _check_run_kind(config, workdir: Path, step: int, saved_config: dict) -> None:
    differ = []
    for key in RUN_KIND_KEYS:
        section, name = key.split(".")
        before = (saved_config.get(section) or {}).get(name)
        now = config[section][name]
        if before is not None and before != now:
            differ.append(f"config.{key}: {before!r} -> {now!r}")
    if differ:
        raise ValueError(
            f"{workdir} holds a checkpoint (step {step}) of another kind of run "
            f"({'; '.join(differ)}); its state cannot be resumed by this one. Use another "
            f"workdir (--workdir, or fit(..., workdir=...)), or delete "
            f"{workdir / 'checkpoints'} to start over"
        )


def check_against_teacher(config, objective, model, adapter, layout: Layout) -> None:
    """The objective's own checks against the loaded teacher; the batch divides the data axis."""
    objective.check(config, model, adapter)
    data_size = layout.mesh.shape[distributed.DATA_AXIS]
    if config.batch_size % data_size:
        raise ValueError(
            f"config.batch_size={config.batch_size} must be a multiple of the data axis "
            f"({data_size} devices split the batch)"
        )


def check_plan(config, plan, layout: Layout) -> None:
    """What the plan asks that the layout cannot give: in-batch negatives under pmap."""
    if layout.use_pmap and plan.in_batch:
        raise ValueError(
            f"config.parallel='pmap' cannot train objective {config.objective.kind!r} with "
            "this loss: it compares examples within a batch, and each pmap shard would see "
            "other negatives than the whole batch; use config.parallel='jit'"
        )


# ----------------------------------------------------------------------------- mesh, teacher


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the run's arrays live: devices, mesh, sharding rules, and the pmap switch."""

    devices: list
    mesh: Any
    rules: tuple
    use_pmap: bool
    teacher_table: str  # the teacher table's name under the rules ("teacher/...")


def create_mesh(config, adapter) -> Layout:
    """The mesh and the sharding rules: by default the adapter's vocab rows and the teacher's
    table over "model"; the pmap path replicates everything."""
    from embres.models import family_of

    use_pmap = config.parallel == "pmap"
    devices = distributed.select_devices(config.num_devices, local=use_pmap)
    mesh = distributed.make_mesh(
        {"data": len(devices)} if use_pmap else config.mesh.to_dict(), devices
    )
    family = family_of(config.model)
    rules = config.get("sharding_rules") or distributed.vocab_row_rules(
        getattr(adapter, "VOCAB_ROWS", ()), family.TABLE_PATH
    )
    rules = () if use_pmap else tuple(rules)
    return Layout(devices, mesh, rules, use_pmap, "teacher/" + family.TABLE_PATH)


def load_teacher(config, layout: Layout):
    """The frozen teacher. A teacher table that the rules shard is read block by block."""
    from embres.models import load_model

    table_sharding = None
    if not layout.use_pmap:
        table_sharding = distributed.sharding_for(layout.teacher_table, layout.mesh, layout.rules)
    sharded = table_sharding is not None and not table_sharding.is_fully_replicated
    model = load_model(
        config.model,
        dtype=config.dtype,
        table_sharding=table_sharding if sharded else None,
        table_row_multiple=config.pad_vocab_to_multiple_of,
    )
    if sharded:
        rows = model.config.vocab_size
        _report(
            f"teacher table {layout.teacher_table}: {rows:,} rows "
            f"(+{padded_rows(rows, config.pad_vocab_to_multiple_of) - rows} "
            f"padding) sharded {table_sharding.spec} over {dict(layout.mesh.shape)}, read "
            "block by block: only the rows this process's devices hold"
        )
    return model


# ----------------------------------------------------------------------------- state


@dataclasses.dataclass(frozen=True)
class StateSpec:
    """The train state's shape and layout, and how to make it, before any array exists.

    Vocab-row params get zero rows up to a fixed multiple (``padded_vocab``), so they divide
    over any model axis that divides it and checkpoints fit every mesh; ids never reach them,
    so their gradients, Adam moments and updates stay exactly zero.
    """

    adapter: Any
    tx: Any
    schedule: Callable
    vocab_size: int  # the student's rows: the teacher's, unless the objective brings its own
    padded_vocab: int
    init: Callable  # init(rng, table, weights, start) -> state
    init_args: tuple
    abstract: Any  # ShapeDtypeStructs with their shardings
    shardings: Any


def create_state_spec(config, plan, model, adapter, layout: Layout) -> StateSpec:
    """The state's shapes and shardings (``jax.eval_shape``: nothing is allocated)."""
    vocab_size = plan.vocab_size or model.config.vocab_size
    padded_vocab = padded_rows(vocab_size, config.pad_vocab_to_multiple_of)
    tx, schedule = optim.make_optimizer(config.optimizer, config.total_steps)

    def init_state(rng, table, weights, start):
        if start is not None:  # a trained student's params (plan.init_params), as they are
            params = {k: jnp.asarray(v, jnp.float32) for k, v in start.items()}
        else:
            params = adapter.init(rng, table[:vocab_size], config.adapter, weights)
        params = adapters.resize_vocab_rows(params, adapter, vocab_size, padded_vocab)
        return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}

    weights = None if plan.init_weights is None else jnp.asarray(plan.init_weights, jnp.float32)
    init_args = (jax.random.PRNGKey(config.seed), plan.init_table, weights, plan.init_params)
    abstract = jax.eval_shape(init_state, *init_args)
    shardings = distributed.tree_shardings(abstract, layout.mesh, layout.rules, check=True)
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    return StateSpec(
        adapter, tx, schedule, vocab_size, padded_vocab, init_state, init_args, abstract, shardings
    )


def checkpoint_meta(config, plan, overlap: dict | None) -> dict:
    """What a checkpoint is saved with: base model, config, the objective's facts, and where
    known the data mixture (``plan.source.describe()``) and the evaluation-overlap report."""
    meta = {
        "base_model": config.model,
        "config": json.loads(config.to_json_best_effort()),
        "objective": plan.meta,
    }
    describe = getattr(plan.source, "describe", None)
    if describe is not None:
        meta["data"] = json.loads(json.dumps(describe()))  # as the checkpoint will hold it
    if overlap is not None:
        meta["overlap"] = overlap
    return meta


def restore_or_init(config, workdir: Path, ckpt, spec: StateSpec, plan, meta: dict):
    """``(start_step, state)``: the newest good checkpoint (resume first), else a new state."""
    restored = ckpt.restore(spec.abstract)
    if restored is None:
        state = jax.jit(spec.init, out_shardings=spec.shardings)(*spec.init_args)
        return 0, state
    start_step, state, data_state, saved = restored
    check_resumable(config, workdir, (start_step, saved))  # an older step, if one was bad
    check_same_facts(workdir, saved, meta)
    changed = config_changes(saved.get("config", {}), meta["config"])
    if changed:
        _report(
            "resuming with a changed config: "
            + "; ".join(changed)
            + " (total_steps rebuilds the learning-rate schedule from the saved step)"
        )
    check_restored_params(state["params"], start_step, ckpt.directory)
    plan.source.set_state(data_state)
    _report(f"resumed from step {start_step} in {ckpt.directory}")
    return start_step, state


def check_same_facts(workdir: Path, saved: dict, meta: dict) -> None:
    """Refuses a resume whose targets (the objective's facts) or data mixture changed."""
    if "objective" in saved and saved["objective"] != meta["objective"]:
        differ = config_changes(saved["objective"], meta["objective"])
        raise ValueError(
            f"{workdir} holds a checkpoint trained against other targets "
            f"({'; '.join(differ[:4])}); resuming would mix them. Use another --workdir, "
            "or the config (teacher, layer, data, width) it was started with"
        )
    if "data" in saved and "data" in meta and saved["data"] != meta["data"]:
        differ = config_changes({"data": saved["data"]}, {"data": meta["data"]})
        raise ValueError(
            f"{workdir} holds a checkpoint trained on another data mixture "
            f"({'; '.join(differ[:4])}); resuming would read its saved position in another "
            "mixture. Use another --workdir, or the data config it was started with"
        )


def check_restored_params(params, step: int, directory: Path) -> None:
    """A checkpoint written before the finiteness guard may hold NaN or inf: never train on."""
    bad = int(jax.jit(params_out_of_range)(params))
    if bad:
        raise NonFiniteLossError(
            f"the checkpoint at step {step} in {directory} holds {bad:,} parameter values "
            f"that are NaN, inf or beyond +-{PARAM_LIMIT:g}; resuming would train on them. "
            f"Use another --workdir, or move {directory / str(step)} out of {directory} to "
            "resume from an earlier checkpoint"
        )


def report_trainable(config, spec: StateSpec, model) -> None:
    """One line: the trainable params (vocabulary padding not counted) against the table."""
    extra_rows = spec.padded_vocab - spec.vocab_size
    padding = sum(
        extra_rows * int(np.prod(spec.abstract["params"][k].shape[1:]))
        for k in getattr(spec.adapter, "VOCAB_ROWS", ())
    )
    n_params = adapters.param_count(spec.abstract["params"]) - padding
    n_table = spec.vocab_size * model.config.hidden_size
    _report(
        f"{config.adapter.type} adapter: {n_params:,} trainable params in place of the "
        f"{spec.vocab_size:,} x {model.config.hidden_size} table ({n_table:,}; "
        f"{n_table / n_params:.2f}x)"
    )


def write_train_config(config, workdir: Path) -> None:
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        # Not "config.json": a workdir holding one would be taken for a model directory.
        (workdir / "train_config.json").write_text(config.to_json_best_effort(indent=2))


# ----------------------------------------------------------------------------- the step


def make_train_step(loss_fn, tx, schedule, seed: int, trace_count: list[int]):
    """The one pure step. ``axis_name`` is set only on the pmap path (then grads are pmean'd).

    Returns ``train_step(state, batch, frozen, axis_name=None) -> (state, metrics)``; the
    frozen arrays (the teacher, an objective's extras) are never differentiated. The metrics
    hold :data:`embres.metrics.PARAMS_OUT_OF_RANGE`, the count of updated parameter values
    that are NaN, inf or beyond float16's range, for the loop's guard.
    """

    def train_step(state, batch, frozen, axis_name=None):
        trace_count[0] += 1  # Python side effect: runs once per trace, i.e. per compilation
        rng = jax.random.fold_in(jax.random.PRNGKey(seed), state["step"])
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, aux), grads = grad_fn(state["params"], batch, frozen, rng)
        if axis_name is not None:
            grads, loss, aux = jax.lax.pmean((grads, loss, aux), axis_name)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics = {
            "loss": loss,
            "grad_norm": optax.global_norm(grads),
            "learning_rate": schedule(state["step"]),
            **aux,
            PARAMS_OUT_OF_RANGE: params_out_of_range(params),
        }
        return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, metrics

    return train_step


@dataclasses.dataclass
class Stepper:
    """The compiled step: ``run(state, host batch) -> (state, metrics)``."""

    run: Callable
    host_state: Callable  # the state as one copy (pmap: drops the device axis)
    trace_count: list[int]
    meter: FlopMeter | None = None  # MFU on an accelerator (jit path)


def compile_step(config, plan, spec: StateSpec, layout: Layout, state):
    """``(stepper, state)``: jit over the mesh (default) or the same function under pmap."""
    trace_count = [0]
    train_step = make_train_step(plan.loss, spec.tx, spec.schedule, config.seed, trace_count)
    if layout.use_pmap:
        return _pmap_stepper(train_step, plan, layout, state, trace_count)
    return _jit_stepper(train_step, plan, spec, layout, trace_count), state


def _pmap_stepper(train_step, plan, layout: Layout, state, trace_count):
    devices = layout.devices
    step_fn = distributed.pmap_step(train_step)
    state = distributed.replicate(jax.device_get(state), devices)
    frozen = distributed.replicate(plan.frozen, devices)

    def run_step(state, batch):
        new_state, metrics = step_fn(state, distributed.split_batch(batch, len(devices)), frozen)
        return new_state, distributed.unreplicate(metrics)

    return Stepper(run_step, distributed.unreplicate, trace_count), state


def _jit_stepper(train_step, plan, spec: StateSpec, layout: Layout, trace_count) -> Stepper:
    batch_shard = distributed.batch_sharding(layout.mesh)
    frozen_shardings = distributed.tree_shardings(
        plan.frozen, layout.mesh, layout.rules, check=True
    )
    frozen = jax.device_put(plan.frozen, frozen_shardings)
    jitted = distributed.jit_step(train_step, spec.shardings, batch_shard, frozen_shardings)
    meter = None
    peak = mfu_peak(layout.devices[0])
    if peak is not None:
        meter = FlopMeter(jitted, peak)
        _report(f"MFU logged against a measured bf16 matmul: {peak / 1e12:.1f} TFLOP/s")

    def run_step(state, batch):
        args = (state, distributed.put_batch(batch, batch_shard), frozen)
        if meter is not None:
            meter.count(*args)
        return jitted(*args)

    return Stepper(run_step, lambda state: state, trace_count, meter)


def mfu_peak(device) -> float | None:
    """The FLOP/s MFU is logged against: a measured bf16 matmul on an accelerator, else None.

    A CPU has no meaningful matmul ceiling for this (and measuring one costs seconds), so
    CPU runs log examples/s only.
    """
    return None if device.platform == "cpu" else matmul_peak(device)


# ----------------------------------------------------------------------------- the loop


def train_loop(config, plan, spec, stepper, state, start_step, ckpt, meta, writer, heldout):
    """Steps ``start_step + 1 .. config.total_steps``; returns ``(state, {step: loss})``.

    Metrics stay on the device until a log, checkpoint or evaluation step, so no step waits
    for the host; there the window is checked (:func:`checked_window`: the first step with a
    non-finite loss or parameter stops the run, naming it) before anything is logged, saved
    or evaluated, so a checkpoint never holds a bad state.
    """
    losses: dict[int, float] = {}
    window: list[tuple[int, dict]] = []
    last_good = ckpt.all_steps()[-1] if ckpt.all_steps() else None
    throughput = _Throughput(config.batch_size, stepper.meter)
    for step in range(start_step + 1, config.total_steps + 1):
        state, metrics = stepper.run(state, plan.source.next_batch())
        window.append((step, metrics))
        throughput.tick()
        final = step == config.total_steps
        log_now = final or step % config.log_every_steps == 0
        evaluate_now = not final and periodic_evals_due(config, step)
        if not (log_now or evaluate_now or step % config.checkpoint.every_steps == 0):
            continue
        rows = checked_window(window, last_good, ckpt.directory)
        window = []
        losses.update({s: row["loss"] for s, row in rows})
        writer.advance(step, rows[-1][1]["loss"])
        if log_now:
            writer.write(step, {**rows[-1][1], **throughput.read()})
        if ckpt.save(step, stepper.host_state(state), plan.source.get_state(), meta, force=final):
            last_good = step
        if evaluate_now:
            params = served_params(config, spec, stepper.host_state(state)["params"], step)
            for name, result in run_evals(config, plan, params, step, False, heldout).items():
                writer.write_summary(name, numeric(result), step)
    return state, losses


def checked_window(window, last_good: int | None, checkpoints: Path) -> list[tuple[int, dict]]:
    """The window's metrics on the host, ``[(step, {name: float})]``, once checked finite.

    Raises :class:`embres.metrics.NonFiniteLossError` at the first step whose loss (or any
    metric) is non-finite or whose parameters went out of range, naming that step and the
    last good checkpoint kept in ``checkpoints``. The parameter count is not logged.
    """
    steps = [step for step, _ in window]
    fetched = jax.device_get([metrics for _, metrics in window])
    values = [{k: float(v) for k, v in m.items()} for m in fetched]
    bad = first_non_finite(steps, values)
    if bad is not None:
        check_finite(bad[0], values[steps.index(bad[0])], last_good, checkpoints)
    return [
        (step, {k: v for k, v in row.items() if k != PARAMS_OUT_OF_RANGE})
        for step, row in zip(steps, values, strict=True)
    ]


class _Throughput:
    """Examples/s (and MFU, when a meter counts) since the last read."""

    def __init__(self, batch_size: int, meter: FlopMeter | None):
        self.batch_size, self.meter = batch_size, meter
        self.since, self.steps = time.time(), 0

    def tick(self) -> None:
        self.steps += 1

    def read(self) -> dict[str, float]:
        seconds = max(time.time() - self.since, 1e-9)
        speed = {"examples_per_s": self.steps * self.batch_size / seconds}
        if self.meter is not None:
            speed["mfu"] = self.meter.read(seconds)
        self.since, self.steps = time.time(), 0
        return speed


def periodic_evals_due(config, step: int) -> bool:
    """Whether an evaluator of ``config.evals`` with ``every_steps > 0`` runs at ``step``."""
    return any(s.get("every_steps", 0) and step % s.every_steps == 0 for s in config.evals.values())


def warn_retraces(plan, stepper: Stepper) -> None:
    """A source padding to length buckets (``compiled_shapes``) compiles once per bucket."""
    expected = getattr(plan.source, "compiled_shapes", 1)
    if stepper.trace_count[0] > expected:
        logging.warning(
            "the train step was traced %d times (expected at most %d)",
            stepper.trace_count[0],
            expected,
        )


# ----------------------------------------------------------------------------- evaluate, export


def served_params(config, spec: StateSpec, params, step: int) -> dict:
    """The params that are evaluated and exported, periodic and final evaluations alike.

    On the host, the vocabulary padding dropped, in the adapter's storage form
    (``to_storage``, e.g. float16 factors), and checked: none NaN, inf or beyond float16's
    range (a state restored from a checkpoint written before that guard may hold some).
    """
    params = to_host(params)
    params = adapters.resize_vocab_rows(params, spec.adapter, spec.padded_vocab, spec.vocab_size)
    if hasattr(spec.adapter, "to_storage"):
        params = jax.device_get(spec.adapter.to_storage(params, config.adapter))
    bad = host_params_out_of_range(params)
    if bad:
        raise NonFiniteLossError(
            f"the parameters at step {step} hold {bad:,} values that are NaN, inf or beyond "
            f"+-{PARAM_LIMIT:g} (float16's largest, as exports store them); nothing is "
            "evaluated or exported. Train again with a lower config.optimizer.learning_rate"
        )
    return params


def run_evals(config, plan, params, step: int, final: bool, heldout: list[str]) -> dict:
    """``config.evals`` through the evaluator contract, on the teacher and the student."""
    models = {"teacher": plan.teacher(), "student": plan.student(params)}
    results = evaluate.run_training_evals(
        config.evals, models, step=step, final=final, heldout_texts=heldout, log=_report
    )
    for name, (_, info) in models.items():
        results.setdefault(name, {}).update(
            {k: info[k] for k in ("table_bytes", "total_bytes") if k in info}
        )
    return results


def evaluate_and_export(config, plan, params, step, heldout, writer, workdir: Path) -> dict:
    """The final evaluation (``config.evals``) and, on process 0, the export and summary."""
    rows = run_evals(config, plan, params, step, True, heldout)
    summary = report.format_summary(rows)
    for name, values in rows.items():
        writer.write_summary(name, numeric(values), step)
    writer.close()
    if jax.process_index() == 0:
        if config.export:
            _report(f"exported to {plan.export(params, workdir / 'export')}")
        (workdir / "summary.md").write_text(summary + "\n")
        print(summary, flush=True)
    return rows


# ----------------------------------------------------------------------------- the script


def default_workdir(config_path: str | None) -> Path:
    """``workdirs/<config file stem>[_<arg>]`` under the current directory."""
    path, _, arg = (config_path or "config").partition(":")
    name = Path(path).stem + (f"_{arg.replace(',', '_').replace('=', '')}" if arg else "")
    return Path("workdirs") / name


def _flag_error(error: Exception, argv: list[str]) -> str:
    """A flag-parsing error on one line, naming the flag (a config's traceback: its last line)."""
    text = str(error)
    while len(text) > 1 and text[0] == text[-1] and text[0] in "'\"" and "\\" in text:
        text = ast.literal_eval(text)  # ml_collections nests a KeyError's repr in its message
    if "Traceback (most recent call last)" in text:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        text = f"{lines[0].rstrip(':')}: {lines[-1]}"
    if not isinstance(error, flags.Error):
        # A --config.<key> override naming no key, or else a mistake inside the config file.
        key = text.splitlines()[0].strip("'\"") if text else ""
        named = [
            flag
            for flag in (a.split("=")[0] for a in argv if a.startswith("--config."))
            if key in flag.split(".")[1:]
        ]
        if named:
            text = f"unknown config key in {named[0]}: {text}"
        else:
            config = (_config_arg(argv) or "?").partition(":")[0]
            text = f"error in config file {config}: {type(error).__name__}: {text}"
    return " ".join(text.split())


def _config_arg(argv: list[str]) -> str | None:
    """The value of ``--config`` in ``argv`` (``--config=x`` or ``--config x``), if any."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _missing_config_file(argv: list[str]) -> str | None:
    """The ``--config`` file named in ``argv`` when it does not exist (checked before absl)."""
    value = _config_arg(argv)
    path = (value or "").partition(":")[0]
    return path if value is not None and not Path(path).is_file() else None


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, but a mistake ends in one stderr line and exit code 2 (see embres.cli)."""
    missing = _missing_config_file(argv)
    if missing is not None:
        sys.exit(
            cli.fail(
                PROG,
                f"config file {missing} does not exist (relative to {Path.cwd()}); the "
                "shipped configs are configs/*.py in the embres repository",
            )
        )
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        # Raised while absl reads argv: a flag, a config file or a --config.* override.
        if cli.verbose_requested(argv[1:]):
            raise
        sys.exit(cli.fail(PROG, _flag_error(e, argv)))


def _run() -> None:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every file it renames at INFO
    if _CONFIG.value is None:
        raise cli.UsageError("--config is required, e.g. --config=configs/lowrank.py")
    config_path = config_flags.get_config_filename(flags.FLAGS["config"])
    workdir = _WORKDIR.value or default_workdir(config_path)
    distributed.initialize(_MULTIHOST.value)  # before anything touches devices
    train_and_evaluate(_CONFIG.value, workdir)


def main(argv: list[str]) -> int:
    """Trains the ``--config`` run; a user's mistake (or a NaN stop) ends in one stderr line."""
    del argv
    return cli.run(_run, PROG)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
