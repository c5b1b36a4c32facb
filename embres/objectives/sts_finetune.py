"""Fine-tuning a trained student on scored pairs: the optional second stage.

Starts from a student exported by a first stage (``config.objective.init_from``) and trains
it on a ``pairs:`` or ``scored:`` source with scores (STSb-TR train for Turkish, the STS-B
and SICK train splits for English) so that the cosine of each pair follows its score:
CoSENT (order of the scores, in-batch) or cosine-MSE (``cos - score / max_score``).

* An embres static export, or the Hugging Face directory of an embedding-layer transfer:
  its rows are trained and keep their width and space (adapter ``table``); a transfer's
  transformer stays frozen, and so do the teacher's own rows of a bilingual vocabulary
  (``freeze_teacher_rows``), so English input still gives the teacher's vectors.
* A contextual (hybrid) export: every param of its adapter is trained from where the first
  stage left it (``config.adapter.type`` must name the export's adapter; its sizes are the
  export's). Pairs are pooled as served: the tokenizer's template ([CLS]/[SEP]) is taken out
  and the text's own tokens moved to the front, so positions match serving; [UNK] keeps its
  place but is not pooled.

Never point this at a dev split: dev is where the numbers come from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from embres import pooling as pooling_lib
from embres.objectives import Plan, common, losses

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
    raw = config.objective.get("init_from", "")
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
    if obj.get("loss", "cosent") not in losses.PAIR_LOSSES:
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


def prepare(
    config: Any,
    model: Any,
    adapter: Any,
    workdir: Path,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> Plan:
    """Loads the first-stage student, its rows as the start, the scored pairs, the loss."""
    from safetensors.numpy import load_file
    from transformers import AutoTokenizer

    from embres import data
    from embres.data.pairs import PairsSource
    from embres.export import ADAPTER_FILE, STATIC_MAX_LENGTH, load_static_table
    from embres.models import load_model

    del workdir
    obj = config.objective
    path = _init_dir(config)
    kind = _student_kind(path)
    host = common.host_model(model)
    start = None  # a contextual student's whole params
    if kind in ("static", "contextual"):
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        meta = json.loads((path / "embres_static.json").read_text())
        served_model = None
        if kind == "static":
            rows = np.asarray(load_static_table(path), np.float32)
        else:
            start = {
                k: np.asarray(v, np.float32) for k, v in load_file(path / ADAPTER_FILE).items()
            }
            rows = start["table"]
    else:
        served_model = load_model(path, dtype=config.dtype)
        tokenizer = served_model.tokenizer
        rows = np.asarray(served_model.embedding_table(), np.float32)
        meta_file = path / "embres_transfer.json"
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    vocab_size = rows.shape[0]
    source = PairsSource(
        str(data.pairs_file(data.parse_spec(config.data.source))),
        tokenizer,
        vocab_size=vocab_size,
        pad_id=tokenizer.pad_token_id or 0,
        batch_size=config.batch_size // process_count,
        max_length=config.data.max_length,
        columns=config.data.columns,
        score_column=config.data.score_column,
        heldout=config.data.heldout,
        process_index=process_index,
        process_count=process_count,
    )
    if source.score is None:
        raise ValueError(
            f"{source.path} has no score column (columns {source.header}); {NAME!r} needs "
            "scored pairs: name it with config.data.score_column"
        )

    # Static and contextual: pool the text's own tokens (no template, no [UNK]), as served.
    content = common.content_mask(tokenizer, vocab_size)
    trainable = np.ones(vocab_size, np.float32)
    if kind == "transfer" and obj.get("freeze_teacher_rows", True):
        trainable[: int(meta.get("teacher_rows", 0))] = 0.0
    frozen = {"content": content, "trainable": trainable}
    if served_model is not None:
        frozen["teacher"] = served_model.params
    if kind == "contextual":
        frozen["template"] = template_mask(tokenizer, vocab_size)
    loss_kind, scale = obj.get("loss", "cosent"), float(obj.get("scale", 20.0))
    max_score = float(obj.get("max_score", 5.0))

    def embed(params, frozen, ids, mask):
        if kind == "contextual":
            ids, mask = served_tokens(ids, mask, frozen["template"], frozen["content"])
            if hasattr(adapter, "apply_pooled"):
                return adapter.apply_pooled(params, None, ids, mask)
            return pooling_lib.pool(adapter.apply(params, None, ids, mask), mask, "mean")
        table = params["table"]
        keep = jnp.pad(frozen["trainable"], (0, table.shape[0] - frozen["trainable"].shape[0]))
        table = jnp.where(keep[:, None] > 0, table, jax.lax.stop_gradient(table))
        if served_model is None:
            mask = mask * frozen["content"][ids].astype(mask.dtype)
            return pooling_lib.pool(jnp.take(table, ids, axis=0), mask, "mean")
        out = served_model.apply(
            frozen["teacher"], ids, mask, inputs_embeds=jnp.take(table, ids, axis=0)
        )
        return pooling_lib.pool(out["last_hidden_state"], mask, served_model.pooling)

    def loss(params, batch, frozen, rng):
        del rng
        a = embed(params, frozen, batch["ids"], batch["mask"])
        b = embed(params, frozen, batch["ids_b"], batch["mask_b"])
        cosines = losses.cosine_similarity(a, b)
        if loss_kind == "cosent":
            value = losses.cosent_loss(cosines, batch["score"], scale)
        else:
            value = jnp.mean(losses.cosine_mse_loss(cosines, batch["score"], max_score))
        return value, {"mean_cosine": jnp.mean(cosines)}

    def served_table(params) -> np.ndarray:
        table = np.array(params["table"], np.float32)[:vocab_size]
        if served_model is None and tokenizer.unk_token_id is not None:
            table[tokenizer.unk_token_id] = 0.0
        return table

    def contextual_params(params) -> dict:
        out = {k: np.asarray(v, np.float32) for k, v in params.items()}
        return {**out, "table": out["table"][:vocab_size]}

    def student(params):
        from embres.objectives.cross_lingual import transfer_model
        from embres.static import StaticEmbedder

        if kind == "contextual":
            served = contextual_params(params)
            return common.served_student(adapter, served, None, tokenizer, rows.shape, None)
        table = served_table(params)
        size = int(table.nbytes)
        info = {"table_bytes": size, "total_bytes": size, "params": params}
        if served_model is None:
            embedder = StaticEmbedder(table, tokenizer, True, STATIC_MAX_LENGTH)
            info["count_tokens"] = lambda texts: sum(len(r) for r in embedder.token_ids(texts))
            return embedder.encode, info
        served = transfer_model(served_model, tokenizer, table)
        return common.extractor_fn(served, config.eval.batch_size), info

    def export(params, directory):
        from embres.export import export_static, export_transfer
        from embres.objectives.cross_lingual import transfer_model

        out_meta = {**meta, "finetuned_from": str(path), "objective": NAME, "loss": loss_kind}
        if kind == "contextual":
            served = contextual_params(params)
            for key in ("normalize", "max_length", "dim", "int8", "dtype"):
                out_meta.pop(key, None)
            return export_static(
                served["table"], tokenizer, directory, meta=out_meta, adapter_params=served
            )
        table = served_table(params)
        if served_model is None:
            out_meta.pop("normalize", None)
            out_meta.pop("max_length", None)
            return export_static(table, tokenizer, directory, meta=out_meta)
        return export_transfer(transfer_model(served_model, tokenizer, table), out_meta, directory)

    return Plan(
        init_table=rows,
        init_weights=None,
        frozen=frozen,
        source=source,
        loss=loss,
        in_batch=loss_kind == "cosent",
        meta={"objective": NAME, "init_from": str(path.resolve()), "student": kind},
        student=student,
        teacher=lambda: common.teacher(host, config.eval.batch_size),
        export=export,
        vocab_size=vocab_size,
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
