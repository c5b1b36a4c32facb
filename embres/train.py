"""Trains a student against a frozen teacher: ``python -m embres.train --config=configs/x.py``.

Usage::

    python -m embres.train --config=configs/lowrank.py                      # default workdir
    python -m embres.train --config=configs/lowrank.py:runlocal --workdir=/tmp/w
    python -m embres.train --config=configs/lowrank.py --config.adapter.rank=64 \\
        --config.data.source=text:../shared/data/text/en.txt

``train_and_evaluate(config, workdir)`` reads top to bottom: checks → mesh → teacher →
objective plan (data, frozen arrays, loss) → state (shape first) → restore → step → loop →
evaluation → export. What differs between ways of training lives in the objective module
(:mod:`embres.objectives`); this file never asks which one it runs. Re-running on a workdir
that holds a checkpoint resumes from it.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import time
from pathlib import Path

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
    FlopMeter,
    MetricWriter,
    check_finite,
    first_non_finite,
    matmul_peak,
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


# ----------------------------------------------------------------------------- pieces


def make_train_step(loss_fn, tx, schedule, seed: int, trace_count: list[int]):
    """The one pure step. ``axis_name`` is set only on the pmap path (then grads are pmean'd).

    Returns ``train_step(state, batch, frozen, axis_name=None) -> (state, metrics)``; the
    frozen arrays (the teacher, an objective's extras) are never differentiated.
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
        }
        return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, metrics

    return train_step


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


def mfu_peak(device) -> float | None:
    """The FLOP/s MFU is logged against: a measured bf16 matmul on an accelerator, else None.

    A CPU has no meaningful matmul ceiling for this (and measuring one costs seconds), so
    CPU runs log examples/s only.
    """
    return None if device.platform == "cpu" else matmul_peak(device)


# ----------------------------------------------------------------------------- the script


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Trains ``config`` in ``workdir`` (resuming when it holds a checkpoint), evaluates, exports.

    Returns:
      ``{"rows": summary rows, "final_step": int, "step_traces": int, "params": host params,
      "params_bytes_per_device": the most bytes of trained params on one device (padded),
      "losses": {step: loss}}``.
    """
    workdir = Path(workdir)
    # Checks that need nothing loaded (names, modes, sizes, the data source) come first, so a
    # mistake leaves no trace, not even an empty workdir.
    configlib.check_static(config)
    objective = objectives.get(config.objective.kind)
    adapter = adapters.get(config.adapter.type)
    data.check_spec(config.data.source)
    lock = _lock_workdir(workdir)
    try:
        return _train_and_evaluate(config, workdir, objective, adapter)
    finally:
        if lock is not None:
            lock.release()


def _lock_workdir(workdir: Path) -> FileLock | None:
    """One run per workdir: process 0 holds ``<workdir>/.lock``; every process hears the verdict.

    The other processes of a multi-process run share process 0's workdir and join its run;
    when the lock is refused, they stop too (with a pointer to process 0's message) instead
    of walking into collectives process 0 never reaches.
    """
    lock, refused = None, None
    if jax.process_index() == 0:
        try:
            lock = FileLock(
                workdir / ".lock",
                f"workdir {workdir}",
                hint="Wait for that run to finish, or give this one another --workdir",
            ).acquire()
        except LockedError as e:
            refused = e
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        ok = multihost_utils.broadcast_one_to_all(np.int32(refused is None))
        if not int(ok) and refused is None:
            refused = LockedError(f"workdir {workdir} is in use (see process 0's message)")
    if refused is not None:
        raise refused
    if lock is not None and lock.took_over():
        _report(lock.took_over())
    return lock


def check_resumable(config: ml_collections.ConfigDict, workdir: Path, newest) -> None:
    """Stops, before any teacher pass, a run whose workdir holds another run's checkpoint.

    ``newest`` is :func:`embres.checkpointing.newest_meta` of its checkpoint folder. Another base model or another data
    source (a saved data position means nothing to another source) is refused, naming both
    and the ways out.
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
    source = (saved.get("config") or {}).get("data", {}).get("source")
    if source is not None and source != config.data.source:
        raise ValueError(
            f"{workdir} holds a checkpoint (step {step}) trained on data source {source!r}, "
            f"but this run asks for {config.data.source!r}; resuming would read the saved "
            "position in another source. Use another workdir (--workdir, or fit(..., "
            f"workdir=...)), resume with --config.data.source={source}, or delete "
            f"{workdir / 'checkpoints'} to start over"
        )


def _train_and_evaluate(config, workdir: Path, objective, adapter) -> dict:
    t_start = time.time()
    kind = config.objective.kind

    # --- A checkpoint in the workdir must be this run's (read without loading anything).
    check_resumable(config, workdir, newest_meta(workdir / "checkpoints"))

    # --- Mesh and sharding rules (by default: the adapter's vocab rows and the teacher's
    # table over "model"; the pmap path replicates everything).
    use_pmap = config.parallel == "pmap"
    devices = distributed.select_devices(config.num_devices, local=use_pmap)
    mesh = distributed.make_mesh(
        {"data": len(devices)} if use_pmap else config.mesh.to_dict(), devices
    )
    from embres.models import family_of, load_model

    family = family_of(config.model)
    rules = config.get("sharding_rules") or distributed.vocab_row_rules(
        getattr(adapter, "VOCAB_ROWS", ()), family.TABLE_PATH
    )
    rules = () if use_pmap else tuple(rules)

    # --- Teacher (frozen). A teacher table that the rules shard is read block by block.
    table_name = "teacher/" + family.TABLE_PATH
    table_sharding = None if use_pmap else distributed.sharding_for(table_name, mesh, rules)
    sharded_table = table_sharding is not None and not table_sharding.is_fully_replicated
    model = load_model(
        config.model,
        dtype=config.dtype,
        table_sharding=table_sharding if sharded_table else None,
        table_row_multiple=config.pad_vocab_to_multiple_of,
    )
    if sharded_table:
        teacher_rows = model.config.vocab_size
        _report(
            f"teacher table {table_name}: {teacher_rows:,} rows "
            f"(+{padded_rows(teacher_rows, config.pad_vocab_to_multiple_of) - teacher_rows} "
            f"padding) sharded {table_sharding.spec} over {dict(mesh.shape)}, read block by "
            "block: only the rows this process's devices hold"
        )
    objective.check(config, model, adapter)
    data_size = mesh.shape[distributed.DATA_AXIS]
    if config.batch_size % data_size:
        raise ValueError(
            f"config.batch_size={config.batch_size} must be a multiple of the data axis "
            f"({data_size} devices split the batch)"
        )

    # --- The objective's plan: data source, frozen arrays, initial rows, the pure loss.
    plan = objective.prepare(
        config,
        model,
        adapter,
        workdir,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    # The student's vocabulary: the teacher's, unless the objective brings its own tokenizer.
    vocab_size = plan.vocab_size or model.config.vocab_size
    padded_vocab = padded_rows(vocab_size, config.pad_vocab_to_multiple_of)
    if use_pmap and plan.in_batch:
        raise ValueError(
            f"config.parallel='pmap' cannot train objective {kind!r} with "
            "this loss: it compares examples within a batch, and each pmap shard would see "
            "other negatives than the whole batch; use config.parallel='jit'"
        )

    # --- State, shape first. Vocab-row params get zero rows up to a fixed multiple, so they
    # divide over any model axis that divides it and checkpoints fit every mesh; ids never
    # reach them, so their gradients, Adam moments and updates stay exactly zero.
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
    shardings = distributed.tree_shardings(abstract, mesh, rules, check=True)
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )

    # --- Restore (resume first), else initialise.
    ckpt = Checkpointer(
        workdir / "checkpoints", config.checkpoint.every_steps, config.checkpoint.keep, _report
    )
    config_dict = json.loads(config.to_json_best_effort())
    meta = {"base_model": config.model, "config": config_dict, "objective": plan.meta}
    restored = ckpt.restore(abstract)
    if restored is not None:
        start_step, state, data_state, saved = restored
        check_resumable(config, workdir, (start_step, saved))  # an older step, if one was bad
        if "objective" in saved and saved["objective"] != plan.meta:
            differ = config_changes(saved["objective"], plan.meta)
            raise ValueError(
                f"{workdir} holds a checkpoint trained against other targets "
                f"({'; '.join(differ[:4])}); resuming would mix them. Use another --workdir, "
                "or the config (teacher, layer, data, width) it was started with"
            )
        changed = config_changes(saved.get("config", {}), config_dict)
        if changed:
            _report(
                "resuming with a changed config: "
                + "; ".join(changed)
                + " (total_steps rebuilds the learning-rate schedule from the saved step)"
            )
        plan.source.set_state(data_state)
        _report(f"resumed from step {start_step} in {ckpt.directory}")
    else:
        start_step = 0
        state = jax.jit(init_state, out_shardings=shardings)(*init_args)
    padding = sum(
        (padded_vocab - vocab_size) * int(np.prod(abstract["params"][k].shape[1:]))
        for k in getattr(adapter, "VOCAB_ROWS", ())
    )
    n_params = adapters.param_count(abstract["params"]) - padding
    n_table = vocab_size * model.config.hidden_size
    _report(
        f"{config.adapter.type} adapter: {n_params:,} trainable params in place of the "
        f"{vocab_size:,} x {model.config.hidden_size} table ({n_table:,}; "
        f"{n_table / n_params:.2f}x)"
    )
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        # Not "config.json": a workdir holding one would be taken for a model directory.
        (workdir / "train_config.json").write_text(config.to_json_best_effort(indent=2))

    # --- The step: jit over the mesh (default) or the same function under pmap.
    trace_count = [0]
    meter = None  # MFU on an accelerator (jit path)
    train_step = make_train_step(plan.loss, tx, schedule, config.seed, trace_count)
    if use_pmap:
        step_fn = distributed.pmap_step(train_step)
        state = distributed.replicate(jax.device_get(state), devices)
        frozen = distributed.replicate(plan.frozen, devices)

        def run_step(state, batch):
            new_state, metrics = step_fn(
                state, distributed.split_batch(batch, len(devices)), frozen
            )
            return new_state, distributed.unreplicate(metrics)

        host_state = distributed.unreplicate
    else:
        batch_shard = distributed.batch_sharding(mesh)
        frozen_shardings = distributed.tree_shardings(plan.frozen, mesh, rules, check=True)
        frozen = jax.device_put(plan.frozen, frozen_shardings)
        jitted = distributed.jit_step(train_step, shardings, batch_shard, frozen_shardings)
        peak = mfu_peak(devices[0])
        if peak is not None:
            meter = FlopMeter(jitted, peak)
            _report(f"MFU logged against a measured bf16 matmul: {peak / 1e12:.1f} TFLOP/s")

        def run_step(state, batch):
            args = (state, distributed.put_batch(batch, batch_shard), frozen)
            if meter is not None:
                meter.count(*args)
            return jitted(*args)

        def host_state(state):
            return state

    # --- Loop. Metrics stay on the device until a log or checkpoint step, so no step waits
    # for the host; finiteness is checked there, naming the first bad step, and always
    # before a checkpoint is written.
    writer = MetricWriter(workdir, config.total_steps, start_step)
    heldout = plan.source.heldout_texts(config.eval.heldout_texts)
    periodic = [s for s in config.evals.values() if s.get("every_steps", 0)]
    last_good = ckpt.all_steps()[-1] if ckpt.all_steps() else None
    losses: dict[int, float] = {}
    window: list[tuple[int, dict]] = []
    t_log, steps_since_log = time.time(), 0
    for step in range(start_step + 1, config.total_steps + 1):
        state, metrics = run_step(state, plan.source.next_batch())
        window.append((step, metrics))
        steps_since_log += 1
        final = step == config.total_steps
        log_now = final or step % config.log_every_steps == 0
        if not (log_now or step % config.checkpoint.every_steps == 0):
            continue
        steps = [s for s, _ in window]
        fetched = jax.device_get([m for _, m in window])
        values = [{k: float(v) for k, v in m.items()} for m in fetched]
        window = []
        bad = first_non_finite(steps, values)
        if bad is not None:
            check_finite(bad[0], bad[1], last_good)
        losses.update({s: v["loss"] for s, v in zip(steps, values, strict=True)})
        writer.advance(step, values[-1]["loss"])
        if log_now:
            seconds = max(time.time() - t_log, 1e-9)
            speed = {"examples_per_s": steps_since_log * config.batch_size / seconds}
            if meter is not None:
                speed["mfu"] = meter.read(seconds)
            writer.write(step, {**values[-1], **speed})
            t_log, steps_since_log = time.time(), 0
        if ckpt.save(step, host_state(state), plan.source.get_state(), meta, force=final):
            last_good = step
        if not final and any(step % s.every_steps == 0 for s in periodic):
            params = to_host(host_state(state)["params"])
            params = adapters.resize_vocab_rows(params, adapter, padded_vocab, vocab_size)
            for name, result in run_evals(config, plan, params, step, False, heldout).items():
                writer.write_summary(name, numeric(result), step)
    final_step = max(start_step, config.total_steps)
    if start_step >= config.total_steps:
        _report(f"{workdir} already holds the final step {start_step}; evaluating only")
    params_per_device = distributed.bytes_per_device(host_state(state)["params"])
    params = to_host(host_state(state)["params"])
    params = adapters.resize_vocab_rows(
        params, adapter, padded_vocab, vocab_size
    )  # drop the padding
    if hasattr(adapter, "to_storage"):  # evaluate exactly what is exported
        params = jax.device_get(adapter.to_storage(params, config.adapter))
    ckpt.close()
    # A source padding to length buckets (``compiled_shapes``) compiles once per bucket.
    expected = getattr(plan.source, "compiled_shapes", 1)
    if trace_count[0] > expected:
        logging.warning(
            "the train step was traced %d times (expected at most %d)", trace_count[0], expected
        )

    # --- Evaluation (config.evals, through the evaluators) and export (process 0 writes).
    rows = run_evals(config, plan, params, final_step, True, heldout)
    summary = report.format_summary(rows)
    for name, values in rows.items():
        writer.write_summary(name, numeric(values), final_step)
    writer.close()
    if jax.process_index() == 0:
        if config.export:
            _report(f"exported to {plan.export(params, workdir / 'export')}")
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
