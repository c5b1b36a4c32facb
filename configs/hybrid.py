r"""The hybrid student: static token vectors plus a gated depthwise-conv mixer (word order).

Starts from vocabulary distillation of the teacher (as the static student does) and trains
the table, the mixer and its gate against the teacher's sentence vectors. With no data it
runs corpus-free (the teacher embeds random token sequences inside the step); with a text
corpus the teacher's vectors are computed once and cached in the workdir.

Commands::

    python -m embres.train --config=configs/hybrid.py                           # corpus-free
    python -m embres.train --config=configs/hybrid.py \
        --config.data.source=text:../shared/data/text/en.txt
    python -m embres.train --config=configs/hybrid.py:runlocal --workdir=/tmp/hybrid_local

Numbers it produced are in the README (``bench/static.py`` rows "hybrid").
"""

from embres import configlib


def get_config(arg: str | None = None):
    """Config for ``configs/hybrid.py[:runlocal,target_dim=N]``."""
    arg = configlib.parse_arg(arg, runlocal=False, target_dim=0)
    c = configlib.base_config()

    c.adapter = configlib.section()
    c.adapter.type = "hybrid"
    # runlocal is a smoke run: a width any teacher, even a tiny test model, has.
    c.adapter.target_dim = arg.target_dim or (16 if arg.runlocal else 256)
    c.adapter.kernel_size = 5
    c.adapter.hidden_dim = 256
    c.adapter.weighting = "none"  # SIF weights from vocabulary distillation instead

    configlib.static_distill_training(c)

    if arg.runlocal:
        configlib.shrink_for_runlocal(c)
    return c
