"""The evaluation tasks by name, and how each is built from options and a model's info.

Kept apart from the package ``__init__`` so that modules inside ``embres.evaluate`` (e.g.
:mod:`embres.evaluate.training`) can use it without importing their own package (a cycle).
"""

from __future__ import annotations

import importlib
from typing import Any

# task -> "module:Class"; the tasks of the command line and evaluate_model.
TASKS = {
    "sts": "embres.evaluate.sts:STSEvaluator",
    "probe": "embres.evaluate.probe:ProbeEvaluator",
    "retrieval": "embres.evaluate.retrieval:RetrievalEvaluator",
    "bitext": "embres.evaluate.bitext:BitextEvaluator",
    "speed": "embres.evaluate.speed:SpeedEvaluator",
    "memory": "embres.evaluate.memory:MemoryEvaluator",
}
# Tasks that need more than one model (a reference): run during training only.
TRAINING_TASKS = {**TASKS, "fidelity": "embres.evaluate.fidelity:FidelityEvaluator"}
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
    "bitext": {
        "dataset": "bitext_dataset",
        "split": "split",
        "data_dir": "data_dir",
        "limit": "limit",
    },
    "speed": {"batch_size": "batch_size", "data_dir": "data_dir", "num_texts": "speed_texts"},
    "memory": {},
}
# Options each task takes from a loader's info dict (see embres.evaluate.models), by argument.
INFO_OPTIONS = {
    "speed": ("count_tokens", "device"),
    "memory": ("params", "table", "factors", "disk_bytes"),
}


def evaluator_class(task: str, tasks: dict[str, str] = TASKS) -> type:
    """The evaluator class of ``task``.

    Raises:
      ValueError: naming the task and the known tasks.
    """
    if task not in tasks:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(tasks)}")
    module, cls = tasks[task].split(":")
    return getattr(importlib.import_module(module), cls)


def info_options(task: str, info: dict[str, Any] | None) -> dict[str, Any]:
    """The constructor arguments ``task`` takes from a loader's ``info`` (absent ones: None)."""
    info = info or {}
    return {arg: info.get(arg) for arg in INFO_OPTIONS.get(task, ())}


def build_evaluator(task: str, info: dict[str, Any] | None = None, **options: Any):
    """The evaluator of ``task`` configured from shared ``options`` and the model's ``info``.

    Options that are None are left at the evaluator's default.

    Raises:
      ValueError: naming the task and the known tasks.
    """
    evaluator_cls = evaluator_class(task)
    cfg = {
        arg: options[opt] for arg, opt in TASK_OPTIONS[task].items() if options.get(opt) is not None
    }
    cfg.update(info_options(task, info))
    return evaluator_cls(**cfg)
