r"""A static student: the teacher's table projected to ``target_dim`` by a learned map.

Each sentence vector is the mean of its tokens' projected rows (no transformer at
inference). The map starts from a frequency-weighted PCA of the table and is trained so
the students' in-batch cosine similarities match the teacher's sentence embeddings.
(The static-student issue extends this with vocabulary distillation and Matryoshka.)

Command::

    python -m embres.train --config=configs/projection.py
    python -m embres.train --config=configs/projection.py:runlocal --workdir=/tmp/proj_local
"""

from embres import configlib


def get_config(arg: str | None = None):
    """Config for ``configs/projection.py[:runlocal,target_dim=N]``."""
    arg = configlib.parse_arg(arg, runlocal=False, target_dim=256)
    c = configlib.base_config()

    c.adapter = configlib.section()
    c.adapter.type = "projection"
    c.adapter.target_dim = arg.target_dim
    c.adapter.init = "pca"
    c.adapter.weighting = "frequency"

    c.objective = configlib.section()
    c.objective.kind = "static"
    c.objective.layers = "last"
    c.objective.hidden_weight = 1.0  # in-batch similarity structure
    c.objective.pooled_weight = 0.0  # direct cosine (only when widths match)
    c.objective.cosine_weight = 1.0
    c.objective.mse_weight = 0.0

    c.batch_size = 64
    c.total_steps = 200
    c.optimizer.learning_rate = 1e-3

    if arg.runlocal:
        c.total_steps = 4
        c.batch_size = 8
        c.data.max_length = 16
        c.optimizer.warmup_steps = 1
        c.checkpoint.every_steps = 2
        c.log_every_steps = 1
        c.eval.heldout_texts = 16
        c.eval.sts = False
    return c
