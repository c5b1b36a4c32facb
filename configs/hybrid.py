r"""The hybrid student: static token vectors plus a gated depthwise-conv mixer (word order).

Starts from vocabulary distillation of the teacher (as the static student does) and trains
the table, the mixer and its gate against the teacher's sentence vectors (objective
``static_distill``). Corpus-free by default: the teacher embeds ``config.data.cache_rows``
sequences sampled from its vocabulary once (cached in the workdir), never inside the step;
with a text corpus it embeds each line once.

Commands::

    python -m embres.train --config=configs/hybrid.py                           # corpus-free
    python -m embres.train --config=configs/hybrid.py \
        --config.data.source=text:../shared/data/text/en.txt
    python -m embres.train --config=configs/hybrid.py:runlocal --workdir=/tmp/hybrid_local

Numbers it produced (all-MiniLM-L6-v2, 2 CPU cores, ``python bench/defaults.py``; dev splits,
Spearman x100; teacher: STS-B 86.72, SICK trial 79.99, STSb-TR 52.91):

* Default command: 266 s wall; STS-B dev 81.09, SICK trial 64.22, STSb-TR dev 52.93,
  fidelity 0.832 (cosine to the teacher's vectors on its PCA basis, held-out sequences).
  With 16,384 cached sequences: 315 s; 80.81 / 63.71 / 53.29.
* The static rows alone of that export (``load_student(dir, static=True)``) score higher
  than with the mixer (81.66 / 65.70 / 54.77 at 16,384): on random token sequences the
  mixer learns no useful word order. On en.txt, see the README's static-student table.
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
    # Corpus-free: 8,192 sampled sequences embedded once keep the default run under 5 minutes
    # on 2 cores (266 s; 16,384 took 315 s) and score as well on three signals (bench/defaults.py).
    c.data.cache_rows = 8_192

    if arg.runlocal:
        configlib.shrink_for_runlocal(c)
    return c
