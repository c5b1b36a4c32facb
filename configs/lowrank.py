r"""The compressed teacher: the teacher's input table replaced by a low-rank ``A·B``.

The transformer above the table stays frozen; ``A`` (vocab × rank) and ``B`` (rank × dim)
start from a frequency-weighted truncated SVD of the table and are trained so the teacher
fed with ``A·B`` reproduces its own hidden states (every layer) and pooled output.

Default run (no data files; corpus-free sequences sampled by token frequency; workdir
``workdirs/lowrank``)::

    python -m embres.train --config=configs/lowrank.py

Quick smoke run::

    python -m embres.train --config=configs/lowrank.py:runlocal --workdir=/tmp/lowrank_local

On a text corpus (one sentence per line)::

    python -m embres.train --config=configs/lowrank.py \
        --config.data.source=text:../shared/data/text/en.txt --config.adapter.rank=64

Table rows sharded over a "model" mesh axis (A, its Adam moments and the teacher's own
table; ``config.sharding_rules``), the batch over "data"; vocabulary rows are padded to a
multiple of ``config.pad_vocab_to_multiple_of`` (128) so they divide. On 8 devices (a GPU
host, or a CPU with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``)::

    python -m embres.train --config=configs/lowrank.py --config.mesh.data=2 --config.mesh.model=4

Expected (``python bench/defaults.py``, 2 quiet CPU cores): STS-B dev / SICK trial /
STSb-TR dev 86.24 / 78.34 / 55.11 (teacher 86.72 / 79.99 / 52.91), table 5.93x smaller,
179 s. Every run, the rank sweep and each number's command: docs/lowrank.md.
"""

from embres import configlib


def get_config(arg: str | None = None):
    """Config for ``configs/lowrank.py[:runlocal,rank=N]``."""
    arg = configlib.parse_arg(arg, runlocal=False, rank=128)
    c = configlib.base_config()

    c.adapter = configlib.section()
    c.adapter.type = "lowrank"
    c.adapter.rank = arg.rank
    c.adapter.init = "svd"
    c.adapter.weighting = "frequency"  # row-weighted SVD by token frequency
    c.adapter.target_dim = configlib.placeholder(int)  # unset: keep the teacher's width
    c.adapter.storage_dtype = "float16"  # factors as exported; training is float32

    c.objective = configlib.section()
    c.objective.kind = "compressed_teacher"
    c.objective.layers = "all"  # hidden states distilled: "all", "last" or "0,3,6"
    c.objective.hidden_weight = 1.0
    c.objective.pooled_weight = 1.0
    c.objective.cosine_weight = 1.0
    c.objective.mse_weight = 1.0

    c.batch_size = 32
    c.total_steps = 150
    c.data.max_length = 32
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 10
    c.checkpoint.every_steps = 50
    c.log_every_steps = 10

    if arg.runlocal:
        configlib.shrink_for_runlocal(c)
    return c
