r"""The static student: a [vocab, target_dim] table whose mean over a text's tokens is its vector.

No transformer at inference. The table starts from vocabulary distillation (each token
through the teacher on its own, SIF weights, PCA to ``target_dim``: Model2Vec's recipe) and
is trained so sentence vectors match the teacher's, projected onto the same PCA basis.
``--config.adapter.type=projection`` trains only the linear map instead of the whole table.

Commands::

    python -m embres.train --config=configs/projection.py                      # corpus-free
    python -m embres.train --config=configs/projection.py \
        --config.data.source=text:../shared/data/text/en.txt                   # better
    python -m embres.train --config=configs/projection.py \
        --config.data.source=text:../shared/data/text/en.txt \
        --config.objective.matryoshka_dims=32,64,128                           # truncatable
    python -m embres.train --config=configs/projection.py:runlocal --workdir=/tmp/proj_local

Numbers it produced (all-MiniLM-L6-v2, 2 CPU cores, ``bench/static.py``, STS-B dev): see the
README's static-student table; corpus-trained on en.txt at 256 dims it beats Model2Vec's
79.19 by more than 2 points.
"""

from embres import configlib


def get_config(arg: str | None = None):
    """Config for ``configs/projection.py[:runlocal,target_dim=N]``."""
    arg = configlib.parse_arg(arg, runlocal=False, target_dim=0)
    # The body lives in the package so ``ModelAdapter.fit`` works from any install.
    return configlib.static_student_config(arg.target_dim or None, arg.runlocal)
