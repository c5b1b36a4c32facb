"""Objectives: each way of training a student is one module with one contract.

``embres.train`` looks the module up by ``config.objective.kind`` and calls only these, so a
new way of training (cross-lingual distillation, fine-tuning on scored pairs, a toy in a
test) is a new module and a config, with no edit to the trainer:

* ``check(config, model, adapter) -> None``: raises ``ValueError`` naming the objective, the
  adapter and the key at fault, before anything is distilled, cached or compiled.
* ``prepare(config, model, adapter, workdir, *, process_index, process_count) -> Plan``:
  everything the objective needs before the loop (see :class:`Plan`).

A module is found by its built-in name (:data:`BUILTIN`), by a name given to
:func:`register`, or as an importable module path (``config.objective.kind =
"my_package.my_objective"``) that defines ``check`` and ``prepare``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

BUILTIN = (
    "compressed_teacher",
    "cross_lingual",
    "static_distill",
    "sts_finetune",
    "token_distill",
)
_REGISTERED: dict[str, ModuleType] = {}

EmbedFn = Callable[[list[str]], Any]


@dataclasses.dataclass
class Plan:
    """What an objective hands the trainer.

    Attributes:
      init_table: the [vocab, d] rows ``adapter.init`` starts from (the teacher's table, or
        rows distilled from it).
      init_weights: optional [vocab] weights ``adapter.init`` receives.
      frozen: arrays ``loss`` reads but never trains (e.g. ``{"teacher": params}``); leaves
        are placed by the sharding rules under their "/"-joined names.
      source: the data source (``next_batch``, ``get_state``/``set_state``,
        ``heldout_texts``).
      loss: pure ``loss(params, batch, frozen, rng) -> (scalar, aux dict)``.
      in_batch: True when the loss compares examples within a batch (the pmap path, whose
        shards see other negatives, refuses it).
      meta: JSON facts a resumed run must share (a projection's hash, a cache key); the
        trainer stores them in the checkpoint and refuses a resume where they differ.
      student: ``student(params) -> (embed_fn, info)`` for host params of the trained
        student; ``info`` carries sizes (``table_bytes``, ``total_bytes``) and what the
        evaluators read (``params``, ``count_tokens``...).
      teacher: ``teacher() -> (embed_fn, info)``.
      export: ``export(params, directory) -> Path`` writes the served model.
      vocab_size: rows of the student's vocabulary when it has its own tokenizer (a new
        language's); ``None``: the teacher's ``vocab_size``.
      init_params: the adapter's whole params to start from (a trained contextual student
        being fine-tuned), in place of ``adapter.init``; ``None``: ``adapter.init`` on
        ``init_table`` and ``init_weights``.
    """

    init_table: Any
    init_weights: Any
    frozen: dict[str, Any]
    source: Any
    loss: Callable
    in_batch: bool
    meta: dict[str, Any]
    student: Callable[[Any], tuple[EmbedFn, dict]]
    teacher: Callable[[], tuple[EmbedFn, dict]]
    export: Callable[[Any, Any], Any]
    vocab_size: int | None = None
    init_params: dict[str, Any] | None = None


def register(name: str, module: ModuleType) -> None:
    """Makes ``module`` available as ``config.objective.kind = name``."""
    _REGISTERED[name] = module


def get(kind: str) -> ModuleType:
    """The objective module for ``config.objective.kind``.

    Raises:
      ValueError: naming the value and the objectives known.
    """
    if kind in _REGISTERED:
        return _REGISTERED[kind]
    name = f"embres.objectives.{kind}" if kind in BUILTIN else kind
    module = None
    if isinstance(kind, str) and kind:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
    if module is None or not all(hasattr(module, f) for f in ("check", "prepare")):
        raise ValueError(
            f"config.objective.kind={kind!r} is not a known objective; expected one of "
            f"{sorted(BUILTIN + tuple(_REGISTERED))} or an importable module path that "
            "defines check() and prepare()"
        )
    return module
