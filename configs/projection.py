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

Numbers it produced (all-MiniLM-L6-v2, 2 CPU cores, ``python bench/defaults.py``; dev splits,
Spearman x100; teacher: STS-B 86.72, SICK trial 79.99, STSb-TR 52.91):

* Default command (corpus-free, 16,384 cached sequences, 400 steps): 258 s wall;
  STS-B dev 81.62, SICK trial 65.15, STSb-TR dev 54.45. The same student untrained
  (``ModelAdapter(target_dim=256)``): 79.36 / 64.42 / 54.38, so training helps on all three.
  With 8,192 cached sequences: 173 s; 81.27 / 65.39 / 53.79, fidelity 0.823 (cosine to the
  teacher's vectors on the PCA basis, held-out sequences): 16,384 kept as the default, better
  on two of the three signals. Trained on en.txt: the README's static-student table.
"""

from embres import configlib


def get_config(arg: str | None = None):
    """Config for ``configs/projection.py[:runlocal,target_dim=N]``."""
    arg = configlib.parse_arg(arg, runlocal=False, target_dim=0)
    # The body lives in the package so ``ModelAdapter.fit`` works from any install.
    return configlib.static_student_config(arg.target_dim or None, arg.runlocal)
