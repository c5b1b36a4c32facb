"""Evaluations during training: the trainer's ``evals`` config run through the evaluator contract.

A training config names its evaluations, each a task with the task's own options::

    config.evals = {
        "sts": {"task": "sts", "every_steps": 1000, "datasets": "stsb,sick,stsb_tr"},
        "probe": {"task": "probe", "every_steps": 1000},   # tr_movie_sentiment by default
        "bitext": {"task": "bitext", "every_steps": 1000},  # STS-B <-> STSb-TR dev, R@1
        "pud": {"task": "bitext", "dataset": "pairs:parallel/en_tr_pud.tsv"},
        "fidelity": {"task": "fidelity", "every_steps": 500},
        "speed": {"task": "speed"},               # every_steps 0 (default): at the end only
        "memory": {"task": "memory"},
    }

and the trainer calls, at each step and once at the end::

    results = run_training_evals(config.evals, {"teacher": (teacher_fn, teacher_info),
                                                "student": (student_fn, student_info)},
                                 step=step, final=False, heldout_texts=heldout)
    results["student"]["fidelity/cosine"]

The teacher never changes during a run, so each of its results is computed once per process
and reused (see :func:`clear_teacher_cache`): the cache is keyed by the eval's name and
options, the teacher (its info's ``path``, else its embed_fn) and the held-out texts, so a
second run in the same process with another teacher or other texts is not served stale
values. ``fidelity`` compares each model with the teacher on the held-out texts; ``speed``
times the held-out texts unless its spec names ``texts`` or ``data_dir``; ``memory`` and
``speed`` read ``params``, ``table``, ``factors``, ``disk_bytes``, ``count_tokens`` and
``device`` from each model's info. The other options of a spec are the task's constructor
arguments (``dataset``, ``split``, ``limit``, ...; :data:`~embres.evaluate.tasks.TASK_OPTIONS`
maps them to the command-line flags); a name the task does not take fails at the first call,
due or not. ``bitext`` and ``probe`` read their data like the other tasks (``data_dir``, else
``$EMBRES_DATA_DIR``) and are skipped with a reason when it is absent.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from embres.evaluate.common import EmbedFn
from embres.evaluate.tasks import TRAINING_TASKS, evaluator_class, info_options
from embres.files import atomic_write_text

Model = tuple[EmbedFn, dict[str, Any]]
# (spec name, spec options, teacher, texts) -> metrics / reference vectors.
_TEACHER_RESULTS: dict[tuple, dict[str, Any]] = {}
_TEACHER_VECTORS: dict[tuple, np.ndarray] = {}
RESERVED = ("task", "every_steps")


def clear_teacher_cache() -> None:
    """Forgets the teacher results and vectors computed so far in this process."""
    _TEACHER_RESULTS.clear()
    _TEACHER_VECTORS.clear()


def spec_options(name: str, spec: Any) -> tuple[str, int, dict[str, Any]]:
    """(task, every_steps, the task's own options without None values) of one eval spec.

    Raises:
      ValueError: naming the eval when its task is missing or unknown, or every_steps < 0.
    """
    spec = spec.to_dict() if hasattr(spec, "to_dict") else dict(spec)
    task = spec.get("task")
    if task not in TRAINING_TASKS:
        raise ValueError(
            f"eval {name!r}: task {task!r} is not one of {sorted(TRAINING_TASKS)}; "
            "each eval needs task=<one of them>"
        )
    every = spec.get("every_steps") or 0
    if not isinstance(every, int) or every < 0:
        raise ValueError(f"eval {name!r}: every_steps={every!r}; expected an integer >= 0")
    options = {k: v for k, v in spec.items() if k not in RESERVED and v is not None}
    check_options(task, options)
    return task, every, options


def check_options(task: str, options: Mapping[str, Any]) -> None:
    """Raises ValueError naming the task and the options its evaluator does not take."""
    params = inspect.signature(evaluator_class(task, TRAINING_TASKS)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(
            f"task {task!r} with options {sorted(options)}: {unknown} not among its options "
            f"{sorted(params)}"
        )


def is_due(every_steps: int, step: int, final: bool) -> bool:
    """Whether an eval runs now: at the end, or at every positive multiple of its period."""
    return final or (every_steps > 0 and step % every_steps == 0)


def teacher_key(model: Model) -> Any:
    """What identifies the teacher across calls: its info's ``path``, else its embed_fn."""
    embed_fn, info = model
    return ("path", str(info["path"])) if info.get("path") else ("fn", embed_fn)


def _texts_key(texts: Sequence[str]) -> tuple[int, int]:
    return len(texts), hash(tuple(texts))


def reference_vectors(teacher: Model, texts: Sequence[str]) -> np.ndarray:
    """The teacher's vectors of ``texts``, embedded once per process."""
    key = (teacher_key(teacher), _texts_key(texts))
    if key not in _TEACHER_VECTORS:
        _TEACHER_VECTORS[key] = np.asarray(teacher[0](list(texts)), np.float32)
    return _TEACHER_VECTORS[key]


def build_training_evaluator(
    task: str,
    options: dict[str, Any],
    info: dict[str, Any],
    heldout_texts: Sequence[str],
    teacher: Model | None,
):
    """The evaluator of one eval spec for one model (see the module docstring for defaults)."""
    cfg = {**info_options(task, info), **options}
    if task == "fidelity":
        cfg.setdefault("texts", list(heldout_texts))
        if "reference" not in cfg:
            if teacher is None:
                raise ValueError("the fidelity task needs a 'teacher' among the models")
            reference = reference_vectors(teacher, cfg["texts"]) if cfg["texts"] else None
            if reference is not None and info.get("fidelity_map") is not None:
                # a student narrower than its teacher is compared in its own space (e.g. the
                # teacher's vectors on the PCA basis its targets were projected onto)
                reference = np.asarray(info["fidelity_map"](reference), np.float32)
            cfg["reference"] = reference
    if task == "speed" and heldout_texts and "texts" not in cfg and "data_dir" not in cfg:
        cfg["texts"] = list(heldout_texts)
    try:
        return evaluator_class(task, TRAINING_TASKS)(**cfg)
    except TypeError as e:  # an option the task does not take
        raise ValueError(f"task {task!r} with options {sorted(options)}: {e}") from e


# Tasks whose teacher results depend only on the teacher, the options and the data folder
# (not on held-out texts or on the machine's speed): these may be kept on disk.
DISK_CACHEABLE = ("sts", "bitext", "probe", "retrieval")
CACHE_ENV = "EMBRES_TEACHER_EVAL_CACHE"


def _disk_path(task: str, options: Mapping[str, Any], info: Mapping[str, Any]):
    """Where the teacher's results of this eval live on disk, or None (no cache asked/possible).

    Only with ``$EMBRES_TEACHER_EVAL_CACHE`` set (e.g. by a benchmark running many students
    of one teacher) and a teacher whose info names its ``path``; the key holds the weight
    files' sizes and times and the data folder, so a changed teacher or data is recomputed.
    """
    import hashlib
    import json
    import os
    from pathlib import Path

    folder = os.environ.get(CACHE_ENV)
    if not folder or task not in DISK_CACHEABLE or not info.get("path"):
        return None
    model_dir = Path(info["path"])
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in model_dir.glob("*"))
    key = {
        "task": task,
        "options": {k: repr(v) for k, v in sorted(options.items())},
        "teacher": str(model_dir.resolve()),
        "files": files,
        "data": os.environ.get("EMBRES_DATA_DIR", ""),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return Path(folder) / f"teacher-{task}-{digest}.json"


def _read_disk(path) -> dict[str, Any] | None:
    import json

    if path is None or not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # a damaged cache entry is recomputed, never trusted


def _write_disk(path, metrics: Mapping[str, Any]) -> None:
    import json

    if path is None or not metrics or numeric(metrics).keys() != metrics.keys():
        return  # Skipped results (missing data) are not kept
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({k: float(v) for k, v in metrics.items()}))


def run_training_evals(
    evals: Mapping[str, Any],
    models: Mapping[str, Model],
    *,
    step: int,
    final: bool,
    heldout_texts: list[str],
    log: Callable[[str], Any] | None = print,
) -> dict[str, dict[str, Any]]:
    """Runs every eval that is due on every model; the teacher's results are computed once.

    Args:
      evals: eval name -> spec (dict or ConfigDict): ``task`` (a key of
        :data:`~embres.evaluate.tasks.TRAINING_TASKS`), optional ``every_steps`` (0, the
        default: at the end only) and the task's constructor options (e.g.
        ``datasets="stsb,sick"``, ``split="dev"``, ``limit=200``).
      models: model name -> ``(embed_fn, info)`` as :func:`~embres.evaluate.load_embedder`
        gives; the one named ``teacher`` is the fidelity reference and is cached.
      step: the current training step.
      final: the run has ended: every eval runs, whatever its period.
      heldout_texts: texts for ``fidelity`` and ``speed``.
      log: called with one line per computed metric, Skipped ones with their reason (None:
        silent). Reused teacher results are not logged again.

    Returns:
      ``{model name: {metric: value}}``, a value being a ``Skipped`` where the data is absent;
      models with no eval due have an empty dict.

    Raises:
      ValueError: naming the eval whose task is unknown or whose options the task refuses
        (checked for every eval, due or not, so a typo fails at the first call).
    """
    from embres.evaluate.report import format_value

    specs = {name: spec_options(name, spec) for name, spec in evals.items()}
    teacher = models.get("teacher")
    results: dict[str, dict[str, Any]] = {name: {} for name in models}
    for eval_name, (task, every, options) in specs.items():
        if not is_due(every, step, final):
            continue
        for model_name, (embed_fn, info) in models.items():
            key = None
            if model_name == "teacher":
                key = (eval_name, repr(sorted(options.items())), teacher_key(teacher))
                key += (_texts_key(heldout_texts),)
                if key in _TEACHER_RESULTS:
                    results[model_name].update(_TEACHER_RESULTS[key])
                    continue
                disk = _disk_path(task, options, info)
                stored = _read_disk(disk)
                if stored is not None:
                    _TEACHER_RESULTS[key] = stored
                    results[model_name].update(stored)
                    continue
            evaluator = build_training_evaluator(task, options, info, heldout_texts, teacher)
            metrics = dict(evaluator.run(embed_fn))
            if key is not None:
                _TEACHER_RESULTS[key] = metrics
                _write_disk(_disk_path(task, options, info), metrics)
            results[model_name].update(metrics)
            if log is not None:
                for metric, value in metrics.items():
                    log(f"step {step}  {model_name}  {metric}: {format_value(metric, value)}")
    return results


def numeric(results: Mapping[str, Any]) -> dict[str, float]:
    """The numeric metrics of one model's results (Skipped and text values left out)."""
    return {
        k: v
        for k, v in results.items()
        if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
    }
