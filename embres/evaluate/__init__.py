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
from collections.abc import Sequence
from typing import Any

from embres.evaluate.common import DataFormatError, Skipped
from embres.evaluate.models import load_embedder, register_detector, register_loader
from embres.evaluate.tasks import TASKS, TRAINING_TASKS, build_evaluator
from embres.evaluate.training import clear_teacher_cache, run_training_evals

__all__ = [
    "TASKS",
    "TRAINING_TASKS",
    "DataFormatError",
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


def evaluate_model(
    spec: str,
    tasks: Sequence[str] = ("sts",),
    log: Any = print,
    **options: Any,
) -> dict[str, Any]:
    """Loads ``spec`` (see :func:`load_embedder`) and runs ``tasks`` on it.

    Args:
      spec: a model name or path, ``sentence-transformers:<path>``, ``model2vec:<path>``, an
        embres static export or a training workdir.
      tasks: names from :data:`TASKS`.
      log: called with one line per metric or skip (None: silent).
      **options: shared task options (``data_dir``, ``limit``, ``batch_size``, ...) and
        ``int8`` (evaluate a static export's int8 table).

    Returns:
      ``{"name", "info", "metrics": {name: value}, "skipped": {name: reason}, "seconds"}``.
    """
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; expected some of {sorted(TASKS)}")
    from embres.evaluate.report import format_value

    start = time.perf_counter()
    name, embed_fn, info = load_embedder(
        spec,
        batch_size=options.get("batch_size") or 64,
        dtype=options.get("dtype") or "float32",
        int8=bool(options.get("int8")),
    )
    record = {"name": name, "info": json_info(info), "metrics": {}, "skipped": {}, "seconds": {}}
    record["seconds"]["load"] = time.perf_counter() - start
    for task in tasks:
        start = time.perf_counter()
        for metric, value in build_evaluator(task, info, **options).run(embed_fn):
            if isinstance(value, Skipped):
                record["skipped"][metric] = value.reason
            else:
                record["metrics"][metric] = value
            if log is not None:
                log(f"{name}  {metric}: {format_value(metric, value)}")
        record["seconds"][task] = time.perf_counter() - start
    return record
