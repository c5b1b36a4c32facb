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

    c.objective = configlib.section()
    c.objective.kind = "static_distill"
    c.objective.layers = "last"
    c.objective.loss = "cosine"  # or "mse", "contrastive"
    c.objective.temperature = 0.05
    c.objective.matryoshka_dims = ""
    c.objective.teacher_layer = -1
    c.objective.sif_coefficient = 1e-4

    c.batch_size = 256
    c.total_steps = 400
    c.data.max_length = 64
    c.data.cache_dir = ""
    c.optimizer.learning_rate = 1e-2
    c.optimizer.warmup_steps = 20
    c.checkpoint.every_steps = 100

    if arg.runlocal:
        configlib.shrink_for_runlocal(c)
    return c
