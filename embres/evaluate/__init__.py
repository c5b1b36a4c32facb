"""Evaluation: STS, linear probe, retrieval, speed and memory, with reports and plots.

Every evaluator follows one contract, ``Evaluator(**cfg).run(embed_fn) -> iterator of
(name, value)``, where ``embed_fn(list[str]) -> np.ndarray [n, d]``; so the teacher, an
adapted model and a peer library are measured by the same code. A metric group that cannot
be computed (its data is absent) yields ``(name, Skipped(reason))``, never nothing.

Command line: ``python -m embres.evaluate --model all-MiniLM-L6-v2 --tasks sts --out DIR``.
From Python::

    from embres.evaluate import evaluate_model
    record = evaluate_model("all-MiniLM-L6-v2", ["sts", "speed"])
    record["metrics"]["sts/stsb_dev"]   # 86.72

During training, :func:`run_training_evals` runs a config's named evals (these tasks plus
``fidelity``, the cosine to the teacher on held-out texts) on the teacher and the student, the
teacher's results computed once (:mod:`embres.evaluate.training`).

Submodules import their heavy dependencies lazily; importing this package is cheap.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from embres.cli import join_lines
from embres.evaluate.common import DataFormatError, NonFiniteScoreError, Skipped, is_non_finite
from embres.evaluate.models import load_embedder, register_detector, register_loader
from embres.evaluate.tasks import TASKS, TRAINING_TASKS, build_evaluator
from embres.evaluate.training import clear_teacher_cache, run_training_evals

__all__ = [
    "TASKS",
    "TRAINING_TASKS",
    "DataFormatError",
    "NonFiniteScoreError",
    "Skipped",
    "build_evaluator",
    "clear_teacher_cache",
    "evaluate_model",
    "load_embedder",
    "register_detector",
    "register_loader",
    "run_training_evals",
]


def json_info(info: dict[str, Any]) -> dict[str, Any]:
    """The plain JSON values of a loader's info dict (arrays and callables left out)."""
    return {k: v for k, v in info.items() if isinstance(v, (str, int, float, bool))}


ErrorHook = Callable[[str, BaseException], None]


def error_entry(error: BaseException) -> dict[str, str]:
    """How a failed task is recorded: ``{"type": "TypeError", "message": "..."}``."""
    return {"type": type(error).__name__, "message": str(error) or repr(error)}


def evaluate_model(
    spec: str,
    tasks: Sequence[str] = ("sts",),
    log: Any = print,
    on_error: ErrorHook | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Loads ``spec`` (see :func:`load_embedder`) and runs ``tasks`` on it.

    Args:
      spec: a model name or path, ``sentence-transformers:<path>``, ``model2vec:<path>``, an
        embres static export or a training workdir.
      tasks: names from :data:`TASKS`.
      log: called with one line per metric, skip or failure (None: silent).
      on_error: None: an exception in loading or in a task propagates. Otherwise a task that
        raises is recorded in ``record["errors"][task]`` (type and message), ``on_error(task,
        exception)`` is called, and the next task runs; a model that fails to load is
        recorded under the task name ``"load"`` and no task runs. Metrics a task yielded
        before it failed are kept (each was complete when yielded).
      **options: shared task options (``data_dir``, ``limit``, ``batch_size``, ...) and
        ``int8`` (evaluate a static export's int8 table).

    Returns:
      ``{"name", "info", "metrics": {name: value}, "skipped": {name: reason},
      "errors": {task: {"type", "message"}}, "seconds"}``.
    """
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; expected some of {sorted(TASKS)}")
    int8 = bool(options.get("int8"))
    name = f"{spec} [int8]" if int8 else spec
    record: dict[str, Any] = {
        "name": name,
        "info": {},
        "metrics": {},
        "skipped": {},
        "errors": {},
        "seconds": {},
    }
    start = time.perf_counter()
    try:
        name, embed_fn, info = load_embedder(
            spec,
            batch_size=options.get("batch_size") or 64,
            dtype=options.get("dtype") or "float32",
            int8=int8,
        )
    except Exception as e:
        if on_error is None:
            raise
        _record_error(record, "load", e, log, on_error)
        return record
    record.update(name=name, info=json_info(info))
    record["seconds"]["load"] = time.perf_counter() - start
    for task in tasks:
        start = time.perf_counter()
        try:
            _run_task(record, task, embed_fn, info, log, options)
        except Exception as e:
            if on_error is None:
                raise
            _record_error(record, task, e, log, on_error)
        record["seconds"][task] = time.perf_counter() - start
    return record


def _run_task(
    record: dict[str, Any],
    task: str,
    embed_fn: Any,
    info: dict[str, Any],
    log: Any,
    options: dict[str, Any],
) -> None:
    """Runs one task, adding each metric or skip to ``record`` as soon as it is yielded.

    A NaN or infinite score is kept out of ``record["metrics"]`` (no table or plot shows
    it); once the task's other metrics are in, :class:`NonFiniteScoreError` names them.
    """
    from embres.evaluate.report import format_value

    non_finite = []
    for metric, value in build_evaluator(task, info, **options).run(embed_fn):
        if is_non_finite(value):
            non_finite.append(f"{metric}={value}")
            continue
        if isinstance(value, Skipped):
            record["skipped"][metric] = value.reason
        else:
            record["metrics"][metric] = value
        if log is not None:
            log(f"{record['name']}  {metric}: {format_value(metric, value)}")
    if non_finite:
        raise NonFiniteScoreError(
            f"{', '.join(non_finite)}: not a finite score; {vectors_verdict(embed_fn)}"
        )


# Embedded when a score is not finite, to say whether the model's vectors are the cause.
PROBE_TEXTS = ("A man is playing a guitar.", "the", "Kedi bahçede uyuyor.")


def vectors_verdict(embed_fn: Any) -> str:
    """Whether ``embed_fn``'s vectors for :data:`PROBE_TEXTS` are finite, as a clause."""
    import numpy as np

    try:
        vectors = np.asarray(embed_fn(list(PROBE_TEXTS)), dtype=np.float64)
    except Exception as e:  # the verdict is a hint: its own failure must not hide the score's
        return f"embedding {len(PROBE_TEXTS)} test sentences to find why failed ({e!r:.80})"
    bad = int(np.size(vectors) - np.isfinite(vectors).sum())
    if bad:
        return (
            f"the model's vectors are not finite ({bad} of {vectors.size} values NaN or Inf for "
            f"{len(PROBE_TEXTS)} test sentences): its weights hold NaN or Inf (a diverged "
            "training run?)"
        )
    return (
        f"the model's vectors for {len(PROBE_TEXTS)} test sentences are finite, so some "
        "inputs give NaN/Inf vectors, or every vector is the same (a constant score)"
    )


def _record_error(
    record: dict[str, Any], task: str, error: Exception, log: Any, on_error: ErrorHook
) -> None:
    entry = record["errors"][task] = error_entry(error)
    if log is not None:
        log(f"{record['name']}  {task}: FAILED: {entry['type']}: {join_lines(entry['message'])}")
    on_error(task, error)
