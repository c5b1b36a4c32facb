r"""Second stage: a trained language student fine-tuned on scored pairs.

Starts from the export of any language student (``configs/language_static.py``,
``language_hybrid.py``, ``language_full.py``, ``language_transfer.py``) and trains it with
CoSENT (objective ``sts_finetune``) on the STSb-TR and STS-B train splits' scored pairs
(``scored:stsb_tr,stsb``: scores rescaled to [0, 1]; a pair is dropped when it, or for
STSb-TR the English pair it translates, holds a sentence of any dev, trial or test file).
A static student's rows and a contextual student's every param train; a transformer
student's new rows train under its transformer, its teacher rows kept exact.

Commands::

    python -m embres.train --config=configs/language_static.py --workdir=runs/tr_static
    python -m embres.train --config=configs/language_finetune.py:init_from=runs/tr_static \
        --workdir=runs/tr_static_ft

Expected (from the static default): STSb-TR dev 77.59 -> 77.34, STS-B dev 84.05 -> 83.97,
SICK 71.43 -> 71.92; 231 s alone on 2 CPU cores. From the hybrid (600 steps of 128) it costs
the bitext alignment (NTREX 0.855 -> 0.459): a second stage is not the default path. Every
run and each number's command: docs/language.md.
"""

from embres import configlib
from embres.objectives import sts_finetune


def get_config(arg: str | None = None):
    """Config for ``configs/language_finetune.py:init_from=DIR[,lang=tr,runlocal]``."""
    arg = configlib.parse_arg(arg, runlocal=False, lang="tr", init_from="")
    c = configlib.base_config()
    # A contextual export's own adapter; static rows and a transformer's table: "table"
    adapter = sts_finetune.trained_adapter(arg.init_from) if arg.init_from else "table"
    c.adapter = configlib.section(type=adapter)
    lang = arg.lang
    configlib.sts_finetune_training(c, arg.init_from, f"scored:stsb_{lang},stsb")
    c.evals = ml_collections_evals(lang)
    if arg.runlocal:
        configlib.shrink_for_runlocal(c)
    return c


def ml_collections_evals(lang: str):
    """The language evals of ``configlib.cross_lingual_training``."""
    c = configlib.base_config()
    configlib.cross_lingual_training(c, lang)
    return c.evals
