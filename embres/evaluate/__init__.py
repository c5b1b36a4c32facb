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

Submodules import their heavy dependencies lazily; importing this package is cheap.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Sequence
from typing import Any

from embres.evaluate.common import DataFormatError, Skipped
from embres.evaluate.models import load_embedder, register_detector, register_loader

__all__ = [
    "TASKS",
    "DataFormatError",
    "Skipped",
    "build_evaluator",
    "evaluate_model",
    "load_embedder",
    "register_detector",
    "register_loader",
]

# task -> "module:Class"
TASKS = {
    "sts": "embres.evaluate.sts:STSEvaluator",
    "probe": "embres.evaluate.probe:ProbeEvaluator",
    "retrieval": "embres.evaluate.retrieval:RetrievalEvaluator",
    "speed": "embres.evaluate.speed:SpeedEvaluator",
    "memory": "embres.evaluate.memory:MemoryEvaluator",
}
# Options each task takes from the shared option dict (CLI flags), by constructor argument.
TASK_OPTIONS = {
    "sts": {"datasets": "sts_datasets", "split": "split", "data_dir": "data_dir", "limit": "limit"},
    "probe": {
        "dataset": "probe_dataset",
        "data_dir": "data_dir",
        "max_train": "probe_max_train",
        "limit": "limit",
    },
    "retrieval": {
        "dataset": "retrieval_dataset",
        "split": "split",
        "data_dir": "data_dir",
        "limit": "limit",
    },
    "speed": {"batch_size": "batch_size", "data_dir": "data_dir", "num_texts": "speed_texts"},
    "memory": {},
}


def build_evaluator(task: str, info: dict[str, Any] | None = None, **options: Any):
    """The evaluator of ``task`` configured from shared ``options`` and the model's ``info``.

    Options that are None are left at the evaluator's default.

    Raises:
      ValueError: naming the task and the known tasks.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    module, cls = TASKS[task].split(":")
    evaluator_cls = getattr(importlib.import_module(module), cls)
    cfg = {
        arg: options[opt] for arg, opt in TASK_OPTIONS[task].items() if options.get(opt) is not None
    }
    info = info or {}
    if task == "speed":
        cfg.update(count_tokens=info.get("count_tokens"), device=info.get("device"))
    if task == "memory":
        cfg.update(params=info.get("params"), table=info.get("table"), factors=info.get("factors"))
    return evaluator_cls(**cfg)


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
