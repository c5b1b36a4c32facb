r"""The two-block hybrid of ``configs/hybrid.py`` carried to a new language.

Starts from a trained English hybrid (``init_from``: its workdir or export; default
``workdirs/hybrid``, where ``python -m embres.train --config=configs/hybrid.py`` leaves it).
Its vocabulary is extended bilingually (the teacher's tokens keep their ids), each new
token's row starts as the mean of the hybrid's rows of its old pieces (FVT), and every param
(rows and the two carried-over blocks) trains by cross-lingual distillation onto the English
hybrid's own vectors of the English side: student(tr) -> hybrid(en), student(en) ->
hybrid(en) (objective ``cross_lingual``, student ``contextual``).

Commands::

    python -m embres.train --config=configs/hybrid.py                      # the English hybrid
    python -m embres.train --config=configs/language_hybrid.py             # -> workdirs/language_hybrid
    python -m embres.train --config=configs/language_hybrid.py:init_from=DIR,runlocal --workdir=/tmp/lh

Expected (default, mixture, 600 steps of 64; dev): STSb-TR 75.32, STS-B 84.57, SICK 77.82,
NTREX R@1 0.799 / 0.852; 538 s alone on 2 CPU cores, peak RSS 3.4 GB. With
``--config.batch_size=128`` (893 s): 77.86 / 84.66 / 77.81, NTREX 0.855 / 0.892.
Results and the command behind each number: docs/language.md.
"""

import importlib.util
from pathlib import Path

from embres import configlib


def english_config(arg: str):
    """``configs/hybrid.py``'s config (its adapter section names the English student's)."""
    spec = importlib.util.spec_from_file_location(
        "hybrid_config", Path(__file__).with_name("hybrid.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def get_config(arg: str | None = None):
    """Config for ``configs/language_hybrid.py[:init_from=DIR,runlocal,lang=tr,vocab=V]``."""
    arg = configlib.parse_arg(
        arg, runlocal=False, lang="tr", vocab="bilingual", init_from="workdirs/hybrid"
    )
    c = configlib.base_config()
    c.adapter = english_config("runlocal" if arg.runlocal else "").adapter
    configlib.cross_lingual_training(c, arg.lang, "contextual")
    c.objective.init_from = arg.init_from
    c.objective.vocab = arg.vocab
    c.objective.init = "fvt"
    c.objective.english_weight = 1.0  # every param moves: English is held by its own term
    # 600 steps of 64 fit the 10-minute CPU budget; 600 of 128 score a little higher in 15
    # minutes (docs/language.md): --config.batch_size=128
    c.batch_size = 64
    c.total_steps = 600
    # The new rows learn at 1e-2 (they start from FVT and must travel), the blocks at 1e-3.
    c.optimizer.learning_rate = 1e-2
    c.objective.transformer_lr_scale = 0.1
    c.optimizer.warmup_steps = 30
    c.checkpoint.every_steps = 200
    c.log_every_steps = 50
    c.evals.probe.max_train = 2000
    if arg.runlocal:
        configlib.shrink_for_runlocal(c)
        c.objective.vocab_size = 300
    return c
