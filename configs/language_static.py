r"""A static Turkish (or any language's) student from the English teacher, without pretraining.

A new vocabulary trained on the language's text (``objective.vocab``: target / bilingual /
trimmed / teacher), rows for its tokens transferred from the teacher with no training
(``objective.init``: fvt / teacher / dictionary / random), then cross-lingual distillation
on translation pairs: student(tr) -> teacher(en) and student(en) -> teacher(en)
(objective ``cross_lingual``, see :mod:`embres.objectives.cross_lingual`).

Commands::

    python -m embres.train --config=configs/language_static.py
    python -m embres.train --config=configs/language_static.py:lang=tr,vocab=bilingual
    python -m embres.train --config=configs/language_static.py:runlocal --workdir=/tmp/ls

Expected for the first command (the mixture of configlib.translation_mixture, 600 steps of
256, width 256; 499 s alone on 2 CPU cores, peak RSS 3.1 GB): STSb-TR dev / STS-B dev / SICK
trial 77.59 / 84.05 / 71.43, NTREX bitext R@1 TR->EN / EN->TR 0.917 / 0.923, STS-B dev <->
STSb-TR dev 0.910 / 0.889, probe 0.828.
Every ablation and each number's command: docs/language.md.
"""

from embres import configlib


def get_config(arg: str | None = None):
    """Config for ``configs/language_static.py[:runlocal,lang=tr,vocab=V,init=I,adapter=A]``."""
    arg = configlib.parse_arg(
        arg,
        runlocal=False,
        lang="tr",
        vocab="bilingual",
        init="fvt",
        adapter="static",
        target_dim=0,
    )
    c = configlib.base_config()
    c.adapter = configlib.section()
    c.adapter.type = arg.adapter  # static | projection | hybrid
    c.adapter.target_dim = arg.target_dim or (16 if arg.runlocal else 256)
    c.adapter.kernel_size = 5
    c.adapter.hidden_dim = 256
    c.adapter.weighting = "none"
    configlib.cross_lingual_training(c, arg.lang, "static")
    c.objective.vocab = arg.vocab
    c.objective.init = arg.init
    # The data: configlib.translation_mixture (every decontaminated parallel file and the MUSE
    # dictionary, each component drawn with its own probability; its entries weigh a tenth
    # of a sentence). With a single pairs: source, the Wiktionary dictionary joins as items
    # at weight 0.1 (better than pairs alone on every signal; at full weight it costs points).
    c.objective.dictionary = configlib.data_path(f"dict/en_{arg.lang}_wiktionary.tsv")
    c.objective.dictionary_weight = 0.1
    c.batch_size = 256
    c.total_steps = 600
    c.optimizer.learning_rate = 1e-2
    c.optimizer.warmup_steps = 20
    c.checkpoint.every_steps = 200
    c.log_every_steps = 50
    if arg.runlocal:
        configlib.shrink_for_runlocal(c)
        c.objective.vocab_size = 300
        c.data.source = "pairs:" + configlib.data_path(f"parallel/en_{arg.lang}_stsb_train.tsv")
    return c
