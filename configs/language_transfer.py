r"""Embedding-layer transfer: the frozen English teacher reading Turkish through a new input table.

A bilingual vocabulary (the teacher's tokens with their ids, plus the language's tokens),
its new rows started by FVT (the mean of the teacher's rows of each new token's old pieces),
then trained so that the teacher reading the new language reproduces the teacher reading the
English translation (objective ``cross_lingual``, student ``transfer``, adapter ``table``).
The transformer never changes, and with ``freeze_teacher_rows`` the teacher's own rows do not
either: English input gives exactly the teacher's vectors.

Commands::

    python -m embres.train --config=configs/language_transfer.py
    python -m embres.train --config=configs/language_transfer.py:runlocal --workdir=/tmp/lt

Expected for the first command (alone on 2 quiet CPU cores, fresh workdir): STSb-TR dev /
STS-B dev / SICK trial 69.58 / 86.73 / 79.99 (English is the teacher's), 630 s. Every run and
each number's command: docs/language.md.
"""

from embres import configlib


def get_config(arg: str | None = None):
    """Config for ``configs/language_transfer.py[:runlocal,lang=tr,vocab=V,init=I]``."""
    arg = configlib.parse_arg(arg, runlocal=False, lang="tr", vocab="bilingual", init="fvt")
    c = configlib.base_config()
    c.adapter = configlib.section()
    c.adapter.type = "table"
    configlib.cross_lingual_training(c, arg.lang, "transfer")
    # STS-B train pairs only: a transfer step runs the transformer forward and back, and the
    # mixture's 235k texts would take its teacher pass alone past the 10-minute budget
    c.data.source = "pairs:" + configlib.data_path(f"parallel/en_{arg.lang}_stsb_train.tsv")
    c.objective.vocab = arg.vocab
    c.objective.init = arg.init
    # English rows are frozen (bilingual + freeze_teacher_rows): student(en) is the teacher
    # exactly, so its term would cost a forward and backward for a zero gradient.
    c.objective.english_weight = 0.0
    c.batch_size = 32
    c.total_steps = 300  # 400 steps: 620 s on 2 cores, over the 10-minute budget
    # Only input rows train: they take a large step size (2e-3 left the loss at 0.2 after
    # 1,000 steps; docs/language.md).
    c.optimizer.learning_rate = 1e-2
    c.optimizer.warmup_steps = 20
    c.checkpoint.every_steps = 200
    c.log_every_steps = 50
    c.eval.batch_size = 128
    if arg.runlocal:
        configlib.shrink_for_runlocal(c)
        c.objective.vocab_size = 300
    return c
