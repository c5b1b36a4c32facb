r"""The strongest language student: the teacher's whole transformer trained, reading a
bilingual vocabulary (multilingual knowledge distillation, Reimers & Gurevych 2020).

The bilingual vocabulary keeps the teacher's tokens at their ids (their rows stay exact) and
adds the language's tokens, their rows started by FVT. Every block of the transformer is
trained as well (``config.objective.student="full"``), at ``transformer_lr_scale`` times the
rows' learning rate, so that student(tr) and student(en) both land on teacher(en).

Commands::

    python -m embres.train --config=configs/language_full.py            # CPU-sized default
    python -m embres.train --config=configs/language_full.py:full       # sized for one GPU
    python -m embres.train --config=configs/language_full.py:runlocal --workdir=/tmp/lf

Expected (CPU default, 120 steps of 32; dev): STSb-TR 53.01, STS-B 86.22, SICK 79.80, NTREX
R@1 0.430 / 0.469; 577 s alone on 2 CPU cores, peak RSS 4.7 GB: 3,840 pairs barely move it
(the teacher: 52.91). ``:full`` was never run (no GPU lent); sized at 6,000 steps of 128.
Results and the command behind each number: docs/language.md.
"""

from embres import configlib


def get_config(arg: str | None = None):
    """Config for ``configs/language_full.py[:runlocal,full,lang=tr,vocab=V,init=I]``."""
    arg = configlib.parse_arg(
        arg, runlocal=False, full=False, lang="tr", vocab="bilingual", init="fvt"
    )
    c = configlib.base_config()
    c.adapter = configlib.section(type="table")
    configlib.cross_lingual_training(c, arg.lang, "full")
    c.objective.vocab = arg.vocab
    c.objective.init = arg.init
    c.objective.english_weight = 1.0  # the blocks move: English must be held in place
    c.objective.transformer_lr_scale = 0.01  # 1e-4 for the blocks at the rows' 1e-2
    c.batch_size = 32
    c.total_steps = 120
    c.optimizer.learning_rate = 1e-2
    c.optimizer.warmup_steps = 20
    c.checkpoint.every_steps = 100
    c.log_every_steps = 25
    c.eval.batch_size = 128
    c.evals.probe.max_train = 2000  # the probe embeds reviews through a transformer
    if arg.full:  # one GPU: every pair of the mixture several times over
        c.batch_size = 128
        c.total_steps = 6000
        c.checkpoint.every_steps = 1000
        c.log_every_steps = 100
        c.evals.probe.max_train = None  # every review
    if arg.runlocal:
        configlib.shrink_for_runlocal(c)
        c.objective.vocab_size = 300
    return c
