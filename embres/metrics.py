"""Training logs: process-0 JSONL and TensorBoard events, progress with ETA, a NaN guard
(the loss, and the parameters as exports store them)."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from embres.files import atomic_write_text

log = logging.getLogger(__name__)

JSONL = "metrics.jsonl"


class NonFiniteLossError(FloatingPointError):
    """The loss or the parameters became NaN or inf; the message names the step."""


PARAMS_OUT_OF_RANGE = "params_out_of_range"
"""The step metric counting parameter values a run must never export (see
:func:`params_out_of_range`); the guard reads it, the logs never show it."""

PARAM_LIMIT = float(np.finfo(np.float16).max)
"""The largest parameter magnitude a run may reach: float16's 65504, the dtype exports store
tables and factors in. A finite float32 value beyond it is exported as inf (a learning rate
of 1e5 takes every row there in one step while the loss stays finite); no trained
embedding parameter comes near it."""


def params_out_of_range(params: Any) -> jax.Array:
    """How many values of ``params`` are NaN, inf or beyond :data:`PARAM_LIMIT` (int32).

    Traceable: the trainer computes it inside the pure step, on the updated params, so the
    check costs one fused pass and no host sync.
    """
    counts = [
        jnp.sum(~(jnp.abs(x) <= PARAM_LIMIT), dtype=jnp.int32)
        for x in jax.tree.leaves(params)
        if jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    return sum(counts, jnp.zeros((), jnp.int32))


def host_params_out_of_range(params: Any) -> int:
    """:func:`params_out_of_range` of host (numpy) params, counted on the host."""
    count = 0
    for x in jax.tree.leaves(params):
        x = np.asarray(x)
        if np.issubdtype(x.dtype, np.inexact):
            count += int(np.count_nonzero(~(np.abs(x) <= PARAM_LIMIT)))
    return count


def check_finite(
    step: int,
    metrics: dict[str, float],
    last_good: int | None,
    checkpoints: str | Path | None = None,
) -> None:
    """Raises ``NonFiniteLossError`` if any metric is NaN or inf, naming the step.

    A :data:`PARAMS_OUT_OF_RANGE` count above 0 stops the run the same way, as non-finite
    parameters.

    Args:
      step: the step that produced ``metrics``.
      metrics: host floats (the step's whole row: a finite loss beside non-finite
        parameters is named).
      last_good: the newest checkpoint step, for the message.
      checkpoints: the checkpoint folder, so the message says where the last good one is.
    """
    bad = _non_finite(metrics)
    if not bad:
        return
    if last_good is None:
        kept = "no checkpoint was written yet"
    elif last_good < step:
        where = "" if checkpoints is None else f" in {Path(checkpoints) / str(last_good)}"
        kept = f"the last good checkpoint (step {last_good}) is kept{where}"
    else:  # a trainer that checks a window late may have saved after the bad step
        kept = (
            f"the checkpoint at step {last_good} was written at or after this step and may "
            "hold non-finite values; resume from one before it"
        )
    out_of_range = bad.pop(PARAMS_OUT_OF_RANGE, 0)
    if bad:
        what = f"non-finite metrics at step {step}: {bad}"
    else:
        loss = metrics.get("loss")
        what = (
            f"non-finite parameters at step {step}: {int(out_of_range):,} values are NaN, inf "
            f"or beyond +-{PARAM_LIMIT:g} (float16's largest, as exports store them)"
            + ("" if loss is None else f" while the loss is still {float(loss):.4g}")
        )
    raise NonFiniteLossError(
        f"{what}; stopping. {kept}. Lower config.optimizer.learning_rate or check the data."
    )


def _non_finite(metrics: dict[str, Any]) -> dict[str, float]:
    bad = {
        k: float(v)
        for k, v in metrics.items()
        if k != PARAMS_OUT_OF_RANGE and not math.isfinite(float(v))
    }
    if float(metrics.get(PARAMS_OUT_OF_RANGE, 0)) > 0:
        bad[PARAMS_OUT_OF_RANGE] = float(metrics[PARAMS_OUT_OF_RANGE])
    return bad


def first_non_finite(
    steps: list[int], metrics: list[dict[str, Any]]
) -> tuple[int, dict[str, float]] | None:
    """The first step of a window whose metrics hold a NaN or inf, with those metrics.

    For a trainer that keeps each step's metrics on the device and fetches a window of them
    at log time (one host sync per window, not per step): it still names the first bad
    step, not the step it happened to look at. A :data:`PARAMS_OUT_OF_RANGE` count above 0
    makes a step bad too. Pass the result on to :func:`check_finite` to stop with the usual
    message::

        bad = first_non_finite(steps, rows)
        if bad is not None:
            check_finite(*bad, last_good)

    Args:
      steps: the steps of the window, in order.
      metrics: one dict of scalars (host floats, or arrays of shape ``()``) per step.

    Returns:
      ``(step, {name: value})`` of the non-finite metrics of the first bad step, or
      ``None`` when every value is finite.
    """
    if len(steps) != len(metrics):
        raise ValueError(f"{len(steps)} steps but {len(metrics)} metric rows")
    for step, row in zip(steps, metrics, strict=True):
        bad = _non_finite(row)
        if bad:
            return int(step), bad
    return None


class MetricWriter:
    """Writes one JSON line per logged step and TensorBoard scalars (process 0 only).

    Args:
      workdir: where ``metrics.jsonl`` and the ``tensorboard/`` events go.
      total_steps: for the progress bar and ETA.
      start_step: the step training starts from; JSONL lines past it (from a killed run)
        are dropped, so a resumed log reads as one run.
      progress: show a tqdm bar when stderr is a terminal (else a line per log).
    """

    def __init__(self, workdir: str | Path, total_steps: int, start_step: int = 0, progress=True):
        self.enabled = jax.process_index() == 0
        self.workdir = Path(workdir)
        self.total_steps, self.start_step = total_steps, start_step
        self._tb = self._bar = None
        self._t0, self._step0 = time.time(), start_step
        if not self.enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.path = self.workdir / JSONL
        if self.path.exists():
            self._trim(start_step)
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(str(self.workdir / "tensorboard"))
        if progress and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step")

    def _trim(self, start_step: int) -> None:
        """Keeps the lines up to ``start_step``; drops undecodable ones (a kill mid-write)."""
        kept, dropped = [], 0
        for line in self.path.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                keep = json.loads(line).get("step", 0) <= start_step
            except (ValueError, AttributeError, TypeError):  # cut short, or not a row of ours
                dropped += 1
                continue
            if keep:
                kept.append(line)
        if dropped:
            log.warning(
                "dropped %d undecodable line(s) from %s (a run killed while writing)",
                dropped,
                self.path,
            )
        # A kill now leaves the old file or the new one.
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        """Logs ``metrics`` (host scalars) for ``step``."""
        if not self.enabled:
            return
        row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        for k, v in metrics.items():
            self._tb.add_scalar(f"train/{k}", float(v), int(step))
        self._tb.flush()
        if self._bar is None:
            done = step - self._step0
            eta = (time.time() - self._t0) / max(done, 1) * (self.total_steps - step)
            text = " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "step")
            print(f"step {step}/{self.total_steps} {text} eta {eta:.0f}s", flush=True)

    def advance(self, step: int, loss: float | None = None) -> None:
        """Moves the progress bar to ``step``."""
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            if loss is not None:
                self._bar.set_postfix(loss=f"{loss:.4g}", refresh=False)

    def write_summary(self, name: str, values: dict[str, float], step: int) -> None:
        """End-of-run numbers: a JSON line tagged ``name`` and TensorBoard scalars."""
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": int(step), "summary": name, **values}) + "\n")
        for k, v in values.items():
            self._tb.add_scalar(f"{name}/{k}", float(v), int(step))
        self._tb.flush()

    def close(self) -> None:
        """Flushes and closes the writers."""
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()


# ----------------------------------------------------------------------------- MFU


def compiled_flops(compiled: Any) -> float | None:
    """FLOPs of one call of a compiled XLA program, from XLA's cost analysis (None if absent).

    For a program partitioned over a mesh this is the per-device program's count.
    """
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - a backend without cost analysis: no MFU, not an error
        return None
    if isinstance(cost, (list, tuple)):  # older jax: one dict per program
        cost = cost[0] if cost else {}
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def matmul_peak(device: Any, n: int = 8192, dtype: Any = None, reps: int = 10) -> float:
    """Measured FLOP/s of an ``n x n`` matmul (bf16 by default) on ``device``: MFU's ceiling.

    Measured rather than taken from a data sheet, so MFU is relative to what this card and
    this jax build reach on the easiest dense work.
    """
    import jax.numpy as jnp

    x = jax.device_put(jnp.ones((n, n), dtype or jnp.bfloat16), device)
    matmul = jax.jit(lambda a: a @ a)
    matmul(x).block_until_ready()  # compile
    start = time.perf_counter()
    for _ in range(reps):
        y = matmul(x)
    y.block_until_ready()
    return 2.0 * n**3 * reps / (time.perf_counter() - start)


class FlopMeter:
    """Model FLOPs utilisation of a jitted step: XLA's FLOP count per batch shape / a peak.

    Args:
      jitted: the ``jax.jit`` step; each new batch shape is lowered and compiled once more
        (ahead of time, for its cost analysis).
      peak: FLOP/s per device to compare against (:func:`matmul_peak`).
    """

    def __init__(self, jitted: Any, peak: float):
        self.jitted = jitted
        self.peak = peak
        self._flops: dict[tuple, float] = {}
        self._since_read = 0.0

    def count(self, *args: Any) -> None:
        """Adds one call of ``jitted(*args)`` (call it with the arguments of each step)."""
        key = tuple((tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(args))
        if key not in self._flops:
            self._flops[key] = compiled_flops(self.jitted.lower(*args).compile()) or 0.0
        self._since_read += self._flops[key]

    def read(self, seconds: float) -> float:
        """MFU over the calls counted since the last read, which took ``seconds``."""
        value = self._since_read / max(seconds, 1e-9) / self.peak
        self._since_read = 0.0
        return value
