r"""Second stage: a trained language student fine-tuned on scored pairs (STSb-TR train).

Starts from the export of ``configs/language_static.py`` or ``configs/language_transfer.py``
and trains its rows with CoSENT on ``stsb_<lang>/stsb_<lang>_train.tsv`` (objective
``sts_finetune``). The transfer's transformer and the teacher's own rows stay frozen.

Commands::

    python -m embres.train --config=configs/language_static.py --workdir=runs/tr_static
    python -m embres.train --config=configs/language_finetune.py:init_from=runs/tr_static \
        --workdir=runs/tr_static_ft

Expected (from the static default): STSb-TR dev 76.81 -> 77.30, STS-B dev 84.08 -> 84.25;
74 s. Every run and each number's command: docs/language.md.
"""

from embres import configlib


def get_config(arg: str | None = None):
    """Config for ``configs/language_finetune.py:init_from=DIR[,lang=tr,runlocal]``."""
    arg = configlib.parse_arg(arg, runlocal=False, lang="tr", init_from="")
    c = configlib.base_config()
    c.adapter = configlib.section(type="table")
    lang = arg.lang
    configlib.sts_finetune_training(
        c, arg.init_from, "pairs:" + configlib.data_path(f"stsb_{lang}/stsb_{lang}_train.tsv")
    )
    c.evals = ml_collections_evals(lang)
    if arg.runlocal:
        configlib.shrink_for_runlocal(c)
    return c


def ml_collections_evals(lang: str):
    """The language evals of ``configlib.cross_lingual_training``."""
    c = configlib.base_config()
    configlib.cross_lingual_training(c, lang)
    return c.evals
