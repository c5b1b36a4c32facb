"""Config helpers: ``parse_arg`` for ``configs/x.py:key=val,runlocal``, shared fragments,
dotted overrides, and ``check_static`` (bad values caught before anything is loaded).

The bottom layer: nothing here imports the rest of embres. Checks that need a model, an
adapter or an objective live with them (``adapter.check_config``, ``objective.check``)."""

from __future__ import annotations

from typing import Any

import ml_collections
from ml_collections import config_dict

PARALLEL_MODES = ("jit", "pmap")


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """Parses ``"runlocal,rank=32"`` into a ConfigDict typed by ``defaults``.

    A bare name sets a boolean to True; ``key=value`` is cast to the default's type.

    Raises:
      ValueError: for a key not in ``defaults``, naming the accepted keys.
    """
    result = ml_collections.ConfigDict(dict(defaults))
    for part in filter(None, (p.strip() for p in (arg or "").split(","))):
        key, _, raw = part.partition("=")
        if key not in defaults:
            raise ValueError(f"config argument {key!r} is unknown; accepted: {sorted(defaults)}")
        default = defaults[key]
        if not raw:
            value = True
        elif isinstance(default, bool):
            value = raw.lower() in ("1", "true", "yes", "on")
        elif default is None:
            value = raw
        else:
            value = type(default)(raw)
        result[key] = value
    return result


def base_config() -> ml_collections.ConfigDict:
    """Fields every training config shares; configs override what they need."""
    c = ml_collections.ConfigDict()
    c.model = "all-MiniLM-L6-v2"
    c.dtype = "float32"
    c.seed = 0
    c.batch_size = 32
    c.total_steps = 200
    c.log_every_steps = 10
    c.parallel = "jit"
    c.num_devices = -1  # -1: every device; N: the first N (one process only)
    c.mesh = ml_collections.ConfigDict({"data": -1, "model": 1})
    # (regex, partition spec) pairs searched in order; the first match places a leaf and
    # unmatched leaves are replicated. Regexes see "params/A", "opt_state/.../mu/A" (the
    # adapter state) and "teacher/word_embeddings/embedding" (the frozen teacher). None: the
    # adapter's VOCAB_ROWS and the family's TABLE_PATH over "model"
    # (distributed.vocab_row_rules); set e.g. --config.mesh.model=8 to shard them.
    c.sharding_rules = None
    # Vocabulary-row arrays (the adapter's A or table, a sharded teacher table) get zero
    # rows up to this multiple, so they divide over any model axis that divides it.
    c.pad_vocab_to_multiple_of = 128

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 20
    c.optimizer.end_learning_rate_ratio = 0.01
    c.optimizer.weight_decay = 0.0
    c.optimizer.clip_norm = 1.0
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.frozen = ""  # regex over adapter param paths kept fixed, e.g. "B$"

    c.data = ml_collections.ConfigDict()
    c.data.source = "vocab"  # or "text:PATH", "tfds:NAME[/CONFIG][:SPLIT]", "pairs:PATH"
    c.data.max_length = 32
    c.data.min_length = 4
    c.data.heldout = 256  # text: first lines kept out of training, for fidelity checks
    c.data.count_lines = 100_000  # text: lines counted for token frequencies
    c.data.columns = ""  # pairs: "a,b" text columns (default: the first two)
    c.data.score_column = ""  # pairs: score column (default: score/label/similarity if any)
    # pairs: the range the file's scores lie in, "low,high" (default 0,5); yielded in [0, 1]
    c.data.score_range = ""
    # No training sentence may be an evaluation sentence (data.check_eval_overlap, before
    # anything runs): True trains anyway; drop_eval_overlap leaves such items of mixture
    # components and dictionaries out when they are read.
    c.data.allow_eval_overlap = False
    c.data.drop_eval_overlap = False

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 50
    c.checkpoint.keep = 3

    c.eval = ml_collections.ConfigDict()
    c.eval.heldout_texts = 256  # texts never trained on: fidelity and speed are measured here
    c.eval.batch_size = 64
    # Evaluators run on the teacher and the student at the end of training (and every
    # ``every_steps`` when > 0), through embres.evaluate's evaluator contract. STS needs
    # EMBRES_DATA_DIR; without it the scores are reported as skipped.
    c.evals = ml_collections.ConfigDict()
    c.evals.sts = section(task="sts", datasets="stsb,sick,stsb_tr", split="dev", every_steps=0)
    c.evals.fidelity = section(task="fidelity", every_steps=0)
    c.evals.speed = section(task="speed", every_steps=0)
    c.export = True
    return c


def static_distill_training(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Objective and schedule shared by the static and hybrid students (``static_distill``)."""
    c.objective = section()
    c.objective.kind = "static_distill"
    c.objective.loss = "cosine"  # or "mse", "contrastive"
    c.objective.temperature = 0.05
    c.objective.matryoshka_dims = ""  # e.g. "32,64,128": every prefix trained to stand alone
    c.objective.teacher_layer = -1
    c.objective.sif_coefficient = 1e-4
    c.batch_size = 256
    c.total_steps = 400
    c.data.max_length = 64
    c.data.cache_dir = ""  # default: <workdir>/cache
    c.data.vocab_samples = 16_384  # source "vocab": sequences sampled once for the teacher
    c.data.cache_rows = 0  # the first N training rows are cached and trained on; 0: all
    c.optimizer.learning_rate = 1e-2
    c.optimizer.warmup_steps = 20
    c.checkpoint.every_steps = 100
    return c


def token_distill_training(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Objective, data and schedule of the contextual students (``token_distill``)."""
    c.objective = section()
    c.objective.kind = "token_distill"
    c.objective.loss = "cosine"  # pooled vector: or "mse", "contrastive"
    c.objective.temperature = 0.05
    c.objective.pooled_target = "tokens"  # mean of the teacher's token states; or "sentence"
    c.objective.token_loss = "mse"  # relative squared error per token; or "cosine"
    c.objective.token_weight = 1.0
    c.objective.mid_weight = 0.0  # the context module's input against the row layer's states
    c.objective.row_layer = "auto"  # the transfer's input layer, else the last
    c.objective.row_pooling = "mean"  # vocabulary rows: mean over the template, or "token"
    c.objective.row_init = "vocab"  # or "corpus": each token's mean state over the corpus
    c.objective.row_prior = 1.0
    c.objective.basis_sentences = 1024  # first training sentences the PCA basis is fitted on
    c.data.source = "text:" + data_path("text/en.txt")
    c.data.max_length = 64
    c.data.cache_dir = ""  # default: <workdir>/token_cache
    c.data.cache_rows = 0  # training sentences cached (the first ones); 0: the whole corpus
    c.batch_size = 128
    c.total_steps = 600
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 30
    c.checkpoint.every_steps = 100
    return c


def sts_finetune_training(
    c: ml_collections.ConfigDict, init_from: str, source: str
) -> ml_collections.ConfigDict:
    """Objective, data and schedule of a second stage on scored pairs (``sts_finetune``).

    ``init_from`` is a first stage's workdir or export; ``source`` a scored ``pairs:`` TSV
    (columns ``sentence1``, ``sentence2``, ``score``) or ``scored:NAME[,NAME]``.
    """
    c.objective = section()
    c.objective.kind = "sts_finetune"
    c.objective.init_from = init_from
    c.objective.loss = "cosent"  # or "cosine_mse"
    c.objective.scale = 20.0
    c.objective.freeze_teacher_rows = True
    c.data.source = source
    c.data.columns = "sentence1,sentence2"
    c.data.score_column = "score"
    c.data.heldout = 0  # the evaluations are the dev splits, never trained on
    c.data.max_length = 64
    c.batch_size = 64
    c.total_steps = 400
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 20
    c.checkpoint.every_steps = 200
    c.log_every_steps = 50
    return c


def static_student_config(
    target_dim: int | None = None, runlocal: bool = False
) -> ml_collections.ConfigDict:
    """The static student of ``configs/projection.py`` (also what ``ModelAdapter.fit`` trains).

    Args:
      target_dim: the student's width (default 256; 16 with ``runlocal``).
      runlocal: shrink to a seconds-long smoke run.
    """
    c = base_config()
    c.adapter = section()
    c.adapter.type = "static"  # or "projection": a learned map over the distilled rows
    # runlocal is a smoke run: a width any teacher, even a tiny test model, has.
    c.adapter.target_dim = target_dim or (16 if runlocal else 256)
    c.adapter.init = "pca"
    c.adapter.weighting = "none"  # SIF weights come from vocabulary distillation

    static_distill_training(c)
    if runlocal:
        shrink_for_runlocal(c)
    return c


def data_path(relative: str) -> str:
    """``$EMBRES_DATA_DIR/relative`` (default data dir ``../shared/data``), as a string."""
    import os

    return os.path.join(os.environ.get("EMBRES_DATA_DIR", "../shared/data"), relative)


def cross_lingual_training(
    c: ml_collections.ConfigDict, lang: str = "tr", student: str = "static"
) -> ml_collections.ConfigDict:
    """Objective, data and evals of a ``cross_lingual`` student for language ``lang``.

    Another language is a data change: the ``parallel/en_<lang>_*.tsv`` files and
    ``dict/en_<lang>_muse.tsv`` of :func:`translation_mixture` (columns ``en``, ``<lang>``),
    ``text/<lang>.txt`` for the vocabulary, ``stsb_<lang>`` and ``parallel/en_<lang>_ntrex.tsv``
    for evaluation, all under ``$EMBRES_DATA_DIR``.
    """
    c.objective = section()
    c.objective.kind = "cross_lingual"
    # "static" (static/projection/hybrid), "transfer" or "full" (table), or "contextual" (an
    # English contextual export, init_from, carried to the language)
    c.objective.student = student
    c.objective.init_from = ""  # contextual: a configs/hybrid.py workdir or its export/
    c.objective.lang = lang
    # teacher | target | bilingual | trimmed; or a prepared tokenizer dir in .tokenizer
    c.objective.vocab = "target"
    c.objective.tokenizer = ""
    c.objective.vocab_model = "wordpiece"  # or "unigram"
    # bilingual: "seen" drops new tokens that change a seen English word's pieces; "letters"
    # keeps only new tokens holding the language's own letters (English ids exact, more pieces)
    c.objective.english_guard = "seen"
    c.objective.vocab_size = 16_000
    c.objective.vocab_text = data_path(f"text/{lang}.txt")  # plus the pairs' target side
    c.objective.init = "fvt"  # random | fvt | teacher | dictionary
    c.objective.loss = "cosine"  # or "mse", "contrastive"
    c.objective.matryoshka_dims = ""
    c.objective.temperature = 0.05
    c.objective.english_weight = 1.0  # student(en) -> teacher(en) as well as student(tr)
    c.objective.contrastive_weight = 0.0
    c.objective.dictionary = ""  # e.g. data_path(f"dict/en_{lang}_wiktionary.tsv")
    c.objective.dictionary_weight = 0.1
    c.objective.freeze_teacher_rows = True  # transfer + bilingual: English stays exact
    # full / contextual: the transformer's (blocks') learning rate relative to the rows'
    # (weights = teacher + s·delta, or English student + s·delta)
    c.objective.transformer_lr_scale = 0.01
    c.objective.teacher_layer = -1
    c.objective.sif_coefficient = 1e-3
    # Every decontaminated parallel file and the MUSE dictionary, weighed (configs whose
    # default reads one file set c.data.source = "pairs:PATH" instead).
    c.data.source = "mixture"
    c.data.mixture = translation_mixture(lang)
    # Tatoeba, MUSE and Wiktionary hold 13 of the NTREX dev and probe dev sentences (e.g.
    # "It didn't go well.", "remember"): left out when read, and reported
    c.data.drop_eval_overlap = True
    c.data.columns = f"en,{lang}"
    c.data.heldout = 0
    c.data.max_length = 64
    c.data.cache_dir = ""
    c.evals = ml_collections.ConfigDict()
    c.evals.sts = section(task="sts", datasets=f"stsb_{lang},stsb,sick", split="dev", every_steps=0)
    c.evals.bitext = section(task="bitext", every_steps=0)  # STS-B dev <-> STSb-TR dev
    # NTREX news, professionally translated: a clean bitext dev set (never trained on)
    c.evals.ntrex = section(
        task="bitext", dataset=f"pairs:parallel/en_{lang}_ntrex.tsv", every_steps=0
    )
    # max_train: fit the probe on fewer reviews (a transformer student embeds all 8,511)
    c.evals.probe = section(task="probe", every_steps=0, max_train=placeholder(int))
    return c


# The language mixture's sampling weights (probabilities are the weights normalised): the
# STS-domain pairs are not drowned by the short conversational Tatoeba pairs, which are 14x
# more numerous; dictionary entries are items at a tenth of a sentence's loss weight.
MIXTURE_WEIGHTS = {
    "stsb": 0.4,
    "tatoeba": 0.25,
    "news": 0.2,
    "gb": 0.05,
    "pud": 0.05,  # 1,000 human translations (news and Wikipedia), each seen ~8 times
    "muse": 0.1,
}


def translation_mixture(
    lang: str = "tr", weights: dict[str, float] | None = None
) -> ml_collections.ConfigDict:
    """``config.data.mixture`` of every decontaminated ``parallel/`` file of ``en_<lang>``
    (STS-B train, Tatoeba, news, grammar book, PUD; NTREX is the dev set, never trained on) and
    the MUSE dictionary, at ``weights`` (default :data:`MIXTURE_WEIGHTS`)."""
    weights = {**MIXTURE_WEIGHTS, **(weights or {})}
    files = {
        "stsb": f"pairs:parallel/en_{lang}_stsb_train.tsv",
        "tatoeba": f"pairs:parallel/en_{lang}_tatoeba.tsv",
        "news": f"pairs:parallel/en_{lang}_news.tsv",
        "gb": f"pairs:parallel/en_{lang}_gb.tsv",
        "pud": f"pairs:parallel/en_{lang}_pud.tsv",
        "muse": f"dict:dict/en_{lang}_muse.tsv",
    }
    mixture = ml_collections.ConfigDict()
    for name, spec in files.items():
        kind, _, path = spec.partition(":")
        mixture[name] = section(
            source=f"{kind}:{data_path(path)}",
            weight=weights[name],
            item_weight=0.1 if kind == "dict" else 1.0,
            heldout=0,
        )
    return mixture


def shrink_for_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The ``:runlocal`` sizes every config shares: a seconds-long smoke run, no STS eval."""
    c.total_steps = 4
    c.batch_size = 8
    c.data.max_length = 16
    c.optimizer.warmup_steps = 1
    c.checkpoint.every_steps = 2
    c.log_every_steps = 1
    c.eval.heldout_texts = 16
    c.evals = ml_collections.ConfigDict()  # no evaluators: a smoke run
    for key in ("cache_rows", "vocab_samples"):
        if key in c.data:
            c.data[key] = 64
    return c


def parse_layers(spec: str, num_layers: int) -> tuple[int, ...]:
    """``"all"``, ``"last"`` or ``"0,3,-1"`` -> hidden-state indices in ``[0, num_layers]``.

    Raises:
      ValueError: naming ``config.objective.layers`` and the allowed range.
    """
    allowed = f"'all', 'last' or comma-separated ints in -{num_layers + 1}..{num_layers}"
    if spec == "all":
        return tuple(range(num_layers + 1))
    if spec == "last":
        return (num_layers,)
    out = []
    for part in str(spec).split(","):
        try:
            k = int(part)
        except ValueError:
            raise ValueError(f"config.objective.layers={spec!r}; expected {allowed}") from None
        if not -(num_layers + 1) <= k <= num_layers:
            raise ValueError(
                f"config.objective.layers={spec!r}: layer {k} is out of range for this "
                f"{num_layers}-layer model; expected {allowed}"
            )
        out.append(k % (num_layers + 1))
    return tuple(out)


def check_static(config: ml_collections.ConfigDict) -> None:
    """Checks that need no model: names, modes, positive sizes, the data file.

    Raises:
      ValueError / FileNotFoundError: naming the key and the allowed values.
    """
    if config.parallel not in PARALLEL_MODES:
        raise ValueError(f"config.parallel={config.parallel!r}; expected one of {PARALLEL_MODES}")
    for key in (
        "batch_size",
        "total_steps",
        "log_every_steps",
        "checkpoint.every_steps",
        "checkpoint.keep",
        "data.max_length",
    ):
        value = config
        for part in key.split("."):
            value = value[part]
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"config.{key}={value!r}; expected a positive integer")
    if not config.optimizer.learning_rate > 0:
        raise ValueError(
            f"config.optimizer.learning_rate={config.optimizer.learning_rate!r}; expected > 0"
        )
    if not 0 <= config.optimizer.warmup_steps < config.total_steps:
        raise ValueError(
            f"config.optimizer.warmup_steps={config.optimizer.warmup_steps}; expected "
            f"0 <= warmup_steps < config.total_steps={config.total_steps}"
        )


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> None:
    """Sets dotted keys (``{"data.source": "text:x.txt"}``) as ``--config.KEY=`` would.

    Raises:
      ValueError: for a key the config does not have, naming it and the keys it does.
    """
    import difflib

    known = sorted(set(_flat_keys(config)))
    for key in sorted(overrides):
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3)
            hint = f"did you mean {close}?" if close else f"known keys: {known}"
            raise ValueError(f"unknown config key {key!r} (nothing was trained); {hint}")
    config.update_from_flattened_dict(dict(overrides))


def _flat_keys(config: Any, prefix: str = ""):
    for key, value in config.items():
        yield prefix + key
        if isinstance(value, ml_collections.ConfigDict):
            yield from _flat_keys(value, f"{prefix}{key}.")


def section(**fields: Any) -> ml_collections.ConfigDict:
    """An empty (or pre-filled) config section."""
    return ml_collections.ConfigDict(fields)


def placeholder(kind: type) -> Any:
    """An unset field that a command-line override may fill with a ``kind`` value."""
    return config_dict.placeholder(kind)
