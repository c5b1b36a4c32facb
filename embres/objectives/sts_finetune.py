"""Fine-tuning a trained student on scored pairs: the optional second stage.

Starts from a student exported by a first stage (``config.objective.init_from``) and trains
it on a ``pairs:`` or ``scored:`` source with scores (STSb-TR train for Turkish, the STS-B
and SICK train splits for English) so that the cosine of each pair follows its score:
CoSENT (order of the scores, in-batch) or cosine-MSE (``cos - score``, the scores in [0, 1]
as the source delivers them: the score range belongs to the source).

* An embres static export, or the Hugging Face directory of an embedding-layer transfer:
  its rows are trained and keep their width and space (adapter ``table``); a transfer's
  transformer stays frozen, and so do the teacher's own rows of a bilingual vocabulary
  (``freeze_teacher_rows``: a frozen array, never parameters, so neither the gradient nor
  weight decay moves them), so English input still gives the teacher's vectors.
* A contextual (hybrid) export: every param of its adapter is trained from where the first
  stage left it (``config.adapter.type`` must name the export's adapter; its sizes are the
  export's). Pairs are pooled as served: the tokenizer's template ([CLS]/[SEP]) is taken out
  and the text's own tokens moved to the front, so positions match serving; [UNK] keeps its
  place but is not pooled.

Never point this at a dev split: dev is where the numbers come from.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from embres import pooling as pooling_lib
from embres.objectives import Plan, common, losses, stages
from embres.objectives.students import TransferStudent

NAME = "sts_finetune"
ADAPTERS = ("table",)  # of static tables and embedding-layer transfers


def _student_kind(path: Path) -> str:
    if (path / "embres_static.json").exists():
        if (path / "adapter.safetensors").exists():
            return "contextual"
        return "static"
    if (path / "config.json").exists() and (path / "tokenizer.json").exists():
        return "transfer"
    raise FileNotFoundError(
        f"config.objective.init_from={str(path)!r} is neither an embres static export "
        "(embres_static.json, tokenizer.json, model.safetensors) nor a Hugging Face model "
        "directory with its tokenizer (config.json, tokenizer.json); give the export/ folder "
        "of a first-stage run"
    )


def _export_dir(init_from: str) -> Path:
    """``init_from``, or the ``export/`` folder of the workdir it names."""
    path = Path(init_from).expanduser()
    if not (path / "tokenizer.json").exists() and (path / "export").is_dir():
        path = path / "export"
    return path


def _init_dir(config: Any) -> Path:
    raw = config.objective.init_from
    if not raw:
        raise ValueError(
            "config.objective.init_from is empty; expected the export/ folder of a trained "
            "student (e.g. <workdir>/export of configs/language_static.py)"
        )
    return _export_dir(raw)


def trained_adapter(init_from: str) -> str:
    """The ``config.adapter.type`` that trains the student in ``init_from`` (a workdir or an
    export): a contextual export's own adapter, else ``"table"`` (also for a path that holds
    no student yet: :func:`check` then names what is missing)."""
    path = _export_dir(init_from)
    if (path / "embres_static.json").exists() and (path / "adapter.safetensors").exists():
        return json.loads((path / "embres_static.json").read_text()).get("adapter", "table")
    return "table"


def check(config: Any, model: Any, adapter: Any) -> None:
    """Adapter, loss, the starting student and a scored ``pairs:`` source."""
    from embres import data

    path = _init_dir(config)
    kind = _student_kind(path)
    if kind == "contextual":
        saved = trained_adapter(str(path))
        if config.adapter.type != saved:
            raise ValueError(
                f"config.objective.init_from={str(path)!r} is a contextual student of adapter "
                f"{saved!r}; config.adapter.type={config.adapter.type!r} must name it"
            )
    elif config.adapter.type not in ADAPTERS:
        common.refuse_pair(
            NAME,
            config.adapter.type,
            f"{str(path)!r} is a {kind} student, whose rows it trains as they are",
            ADAPTERS,
        )
    obj = config.objective
    if obj.loss not in losses.PAIR_LOSSES:
        raise ValueError(
            f"config.objective.loss={obj.loss!r}; expected one of {losses.PAIR_LOSSES}"
        )
    spec = data.parse_spec(config.data.source)
    if spec.kind not in ("pairs", "scored"):
        raise ValueError(
            f"objective {NAME!r} trains on scored pairs; config.data.source="
            f"{config.data.source!r} is a {spec.kind!r} source; expected 'pairs:PATH' or "
            "'scored:NAME[,NAME]'"
        )
    common.check_sizes(config, model)


# ----------------------------------------------------------------------------- the students


@dataclasses.dataclass
class RowsStudent:
    """A static export's rows, trained as they are (adapter ``table``), pooled over the
    text's own tokens (no template, no ``[UNK]``), as served."""

    tokenizer: Any
    rows: np.ndarray  # [V, d]

    @property
    def vocab_size(self) -> int:
        return len(self.rows)

    def trained_rows(self) -> np.ndarray:
        return self.rows

    def start_params(self) -> None:
        return None  # the adapter's init on the rows

    def frozen(self) -> dict:
        return {"content": common.content_mask(self.tokenizer, self.vocab_size)}

    def embed(self, params, frozen, ids, mask):
        mask = mask * frozen["content"][ids].astype(mask.dtype)
        return pooling_lib.pool(jnp.take(params["table"], ids, axis=0), mask, "mean")

    def served_table(self, params) -> np.ndarray:
        table = np.asarray(params["table"])[: self.vocab_size]
        return stages.unk_zeroed(table, self.tokenizer.unk_token_id)

    def student(self, params, batch_size: int):
        table = self.served_table(params)
        return stages.static_student(table, self.tokenizer, params, int(table.nbytes))

    def export(self, params, directory, meta: dict):
        table = self.served_table(params)
        return stages.export_static_student(table, self.tokenizer, directory, meta)


@dataclasses.dataclass
class PairsContextualStudent:
    """A contextual export's whole params, every one trained from where the first stage left
    them; pairs are read as served (:func:`served_tokens`)."""

    adapter: Any
    tokenizer: Any
    params: dict  # the export's params (float32)

    @property
    def vocab_size(self) -> int:
        return len(self.params["table"])

    def trained_rows(self) -> np.ndarray:
        return self.params["table"]

    def start_params(self) -> dict:
        return self.params

    def frozen(self) -> dict:
        return {
            "content": common.content_mask(self.tokenizer, self.vocab_size),
            "template": template_mask(self.tokenizer, self.vocab_size),
        }

    def embed(self, params, frozen, ids, mask):
        ids, mask = served_tokens(ids, mask, frozen["template"], frozen["content"])
        if hasattr(self.adapter, "apply_pooled"):
            return self.adapter.apply_pooled(params, None, ids, mask)
        return pooling_lib.pool(self.adapter.apply(params, None, ids, mask), mask, "mean")

    def served_params(self, params) -> dict:
        return stages.contextual_params(self.adapter, params, self.vocab_size)

    def student(self, params, batch_size: int):
        served = self.served_params(params)
        size = self.adapter.table_bytes(served, self.params["table"].shape)
        return stages.contextual_student(self.adapter, served, self.tokenizer, size)

    def export(self, params, directory, meta: dict):
        unk = self.tokenizer.unk_token_id
        served = self.served_params(params)
        return stages.export_contextual_student(served, self.tokenizer, unk, directory, meta)


# ----------------------------------------------------------------------------- the stages


def first_stage(config: Any, adapter: Any, path: Path) -> tuple[Any, dict]:
    """(the student this stage trains, the first stage's export meta), from its export.

    A transfer's rows are split as :class:`~embres.objectives.students.TransferStudent`
    does: with ``freeze_teacher_rows``, the teacher's own rows of a bilingual vocabulary are
    a frozen array, never parameters, so no gradient and no weight decay moves them.
    """
    from safetensors.numpy import load_file
    from transformers import AutoTokenizer

    from embres.export import ADAPTER_FILE, load_static_table
    from embres.models import load_model

    kind = _student_kind(path)
    if kind == "transfer":
        host = load_model(path, dtype=config.dtype)
        meta_file = path / "embres_transfer.json"
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        # a Hugging Face directory embres did not write keeps no teacher rows
        kept = int(meta.get("teacher_rows", 0)) if config.objective.freeze_teacher_rows else 0
        rows = np.asarray(host.embedding_table(), np.float32)
        return TransferStudent.start(host, host.tokenizer, rows, kept), meta
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    meta = json.loads((path / "embres_static.json").read_text())
    if kind == "static":
        return RowsStudent(tokenizer, np.asarray(load_static_table(path), np.float32)), meta
    params = {k: np.asarray(v, np.float32) for k, v in load_file(path / ADAPTER_FILE).items()}
    return PairsContextualStudent(adapter, tokenizer, params), meta


def scored_pairs(config: Any, tokenizer: Any, vocab_size: int, process_index, process_count):
    """The scored pairs (``pairs:`` or ``scored:``), batched with the tokenizer's template;
    their scores arrive in [0, 1], rescaled by the source from the range it declares."""
    from embres import data

    source = data.make_source(
        config.data,
        tokenizer,
        vocab_size=vocab_size,
        pad_id=tokenizer.pad_token_id or 0,
        batch_size=config.batch_size,
        seed=config.seed,
        process_index=process_index,
        process_count=process_count,
    )
    if source.score is None:
        raise ValueError(
            f"{source.path} has no score column (columns {source.header}); {NAME!r} needs "
            "scored pairs: name it with config.data.score_column"
        )
    return source


def make_loss(config: Any, embed):
    """``loss(params, batch, frozen, rng)``: the pair's cosine against its score."""
    kind, scale = config.objective.loss, float(config.objective.scale)

    def loss(params, batch, frozen, rng):
        del rng  # deterministic
        a = embed(params, frozen, batch["ids"], batch["mask"])
        b = embed(params, frozen, batch["ids_b"], batch["mask_b"])
        cosines = losses.cosine_similarity(a, b)
        if kind == "cosent":
            value = losses.cosent_loss(cosines, batch["score"], scale)
        else:
            value = jnp.mean(losses.cosine_mse_loss(cosines, batch["score"]))
        return value, {"mean_cosine": jnp.mean(cosines)}

    return loss


# Fields of embres_static.json that the export writes itself (a first stage's are stale).
EXPORT_WRITES = ("normalize", "max_length", "dim", "int8", "dtype")


def export_meta(config: Any, first_meta: dict, path: Path, student: Any) -> dict:
    """The first stage's export meta, marked as fine-tuned here."""
    meta = {**first_meta, "finetuned_from": str(path), "objective": NAME}
    if not isinstance(student, TransferStudent):
        meta = {k: v for k, v in meta.items() if k not in EXPORT_WRITES}
    return {**meta, "loss": config.objective.loss}


def prepare(
    config: Any,
    model: Any,
    adapter: Any,
    workdir: Path,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> Plan:
    """The first-stage student as the start, the scored pairs, the loss, serve and export."""
    del workdir
    path = _init_dir(config)
    student, first_meta = first_stage(config, adapter, path)
    meta = export_meta(config, first_meta, path, student)
    host, batch_size = common.host_model(model), config.eval.batch_size
    # None: adapter.init on the trained rows (a transfer's and a static student's start)
    start = None if isinstance(student, TransferStudent) else student.start_params()
    return Plan(
        init_table=student.trained_rows(),
        init_weights=None,
        frozen=student.frozen(),
        source=scored_pairs(
            config, student.tokenizer, student.vocab_size, process_index, process_count
        ),
        loss=make_loss(config, student.embed),
        in_batch=config.objective.loss == "cosent",
        meta={"objective": NAME, "init_from": str(path.resolve()), "student": _student_kind(path)},
        student=lambda params: student.student(params, batch_size),
        teacher=lambda: stages.teacher_embedder(host, batch_size),
        export=lambda params, directory: student.export(params, directory, meta),
        vocab_size=len(student.trained_rows()),  # a transfer's kept rows are no params
        init_params=start,
    )


def template_mask(tokenizer: Any, vocab_size: int) -> np.ndarray:
    """float32 [vocab_size]: 1 at the ids of the tokenizer's template ([CLS]/[SEP])."""
    from embres import tokenize

    prefix, suffix = tokenize.special_template(tokenizer)
    out = np.zeros(vocab_size, np.float32)
    out[[i for i in [*prefix, *suffix] if i < vocab_size]] = 1.0
    return out


def served_tokens(
    ids: jax.Array, mask: jax.Array, template: jax.Array, content: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Ids and mask as a served contextual student sees a text: the template taken out and
    the text's own tokens moved to the front in order (so its positions are the served ones,
    pads after them as 0), [UNK] kept in place but masked out ([b, l] each)."""
    own = mask * (1 - template[ids]).astype(mask.dtype)
    order = jnp.argsort(1 - own, axis=1, stable=True)  # own tokens first, in their order
    ids = jnp.take_along_axis(ids, order, axis=1)
    own = jnp.take_along_axis(own, order, axis=1)
    ids = jnp.where(own > 0, ids, 0)
    return ids, own * content[ids].astype(own.dtype)
