r"""The compressed teacher: the teacher's input table replaced by a low-rank ``A·B``.

The transformer above the table stays frozen; ``A`` (vocab × rank) and ``B`` (rank × dim)
start from a frequency-weighted truncated SVD of the table and are trained so the teacher
fed with ``A·B`` reproduces its own hidden states (every layer) and pooled output.

Default run (no data files; corpus-free sequences sampled by token frequency)::

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

Numbers it produced (all-MiniLM-L6-v2, 2 shared CPU cores; STS-B dev Spearman x100 with
EMBRES_DATA_DIR=../shared/data; teacher 86.72; table 30,522 x 384 float32 = 46,881,792 B):

* Default command (corpus-free "vocab" data, rank 128, float16 factors, 150 steps;
  ``python bench/defaults.py``): 179 s wall on a quiet machine; STS-B dev 86.24 (-0.48),
  SICK trial 78.34 (teacher 79.99: -1.65), STSb-TR dev 55.11 (teacher 52.91), fidelity 0.961
  on held-out sampled sequences, table 7,911,936 B (5.93x smaller). STS-B dev alone
  understates the cost: SICK trial shows -1.65, in line with the -1.59 measured on held-out
  STS data; read the three together. Re-running on the same workdir resumes (here:
  "already holds the final step").
* Rank sweep on en.txt (--config.data.source=text:../shared/data/text/en.txt). "init" is
  the frequency-weighted SVD (counts from en.txt) before any step; "trained" is 200 steps
  at --config.optimizer.learning_rate=1e-4:

  | rank | factors | table bytes | x smaller | STS-B init | STS-B trained |
  |------|---------|-------------|-----------|------------|---------------|
  | 48   | float32 |   5,933,952 | 7.90      |            | 83.63         |
  | 64   | float32 |   7,911,936 | 5.93      | 84.84      | 84.82         |
  | 94   | float32 |  11,620,656 | 4.03      | 85.50      | 85.36         |
  | 96   | float16 |   5,933,952 | 7.90      | 85.58      |               |
  | 128  | float16 |   7,911,936 | 5.93      | 86.30      | 86.20         |
  | 160  | float16 |   9,889,920 | 4.74      | 86.58      |               |

  Check 2 of the issue (en.txt, within 1.0 point, >= 4x smaller) holds at rank 128 with
  float16 factors: 86.20 trained (86.30 at init), 5.93x; in float32 the 4x bound caps the
  rank at 94, which reaches 85.50 (-1.22) and misses it.
  Plain (unweighted) SVD is far worse: rank 96 gives 79.37, rank 128 82.14. float16
  storage costs nothing measurable (rank 128: 86.30 either way). Distillation on en.txt
  raises fidelity on held-out en.txt lines (rank 94: 0.848 -> 0.868) but not STS-B dev.
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
