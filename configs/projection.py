r"""The static student: a [vocab, target_dim] table whose mean over a text's tokens is its vector.

No transformer at inference. The table starts from vocabulary distillation (each token
through the teacher on its own, SIF weights, PCA to ``target_dim``: Model2Vec's recipe) and
is trained (objective ``static_distill``) so sentence vectors match the teacher's, projected
onto the same PCA basis. The teacher embeds each training sequence once (cached in the
workdir): ``config.data.cache_rows`` sequences sampled from its vocabulary by default, or
every line of a ``text:`` corpus. ``--config.adapter.type=projection`` trains only an affine
map over the distilled rows instead of the whole table.

Commands::

    python -m embres.train --config=configs/projection.py                      # corpus-free
    python -m embres.train --config=configs/projection.py \
        --config.data.source=text:../shared/data/text/en.txt                   # better
    python -m embres.train --config=configs/projection.py \
        --config.data.source=text:../shared/data/text/en.txt \
        --config.objective.matryoshka_dims=32,64,128                           # truncatable
    python -m embres.train --config=configs/projection.py:runlocal --workdir=/tmp/proj_local

Expected for the first (corpus-free) command (``python bench/defaults.py``, 2 quiet CPU
cores): STS-B dev / SICK trial / STSb-TR dev 81.62 / 65.15 / 54.45, 258 s; on en.txt STS-B
dev 82.72. Every run and each number's command: docs/static.md.
"""

from embres import configlib


def get_config(arg: str | None = None):
    """Config for ``configs/projection.py[:runlocal,target_dim=N]``."""
    arg = configlib.parse_arg(arg, runlocal=False, target_dim=0)
    # The body lives in the package so ``ModelAdapter.fit`` works from any install.
    return configlib.static_student_config(arg.target_dim or None, arg.runlocal)
