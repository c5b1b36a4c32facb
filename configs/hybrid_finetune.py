r"""Second stage of the hybrid students: a trained student fine-tuned on scored STS pairs.

Starts from the student trained in ``init_from`` (a workdir of ``configs/hybrid.py``, any
variant, or of ``configs/projection.py``; or its ``export/``) and trains every param with
CoSENT (objective ``sts_finetune``) on the scores of the STS-B and SICK train splits' pairs
(``scored:stsb,sick``: 8,427 pairs, each dataset's scores rescaled to [0, 1], no pair holding
a sentence of any dev, trial or test file): 600 steps of 64, learning rate 3e-4. The
architecture, FLOPs and speed are the first stage's. The adapter is the export's own (a
static student's rows are trained by ``table``).

Commands (expected: STS-B dev / SICK trial / STSb-TR dev, Spearman x100)::

    python -m embres.train --config=configs/hybrid.py --workdir=runs/h_transfer
    python -m embres.train --config=configs/hybrid_finetune.py:init_from=runs/h_transfer \
        --workdir=runs/h_transfer_sts
        # 85.45 / 81.54 / 59.62 (the first stage: 85.01 / 77.92 / 57.11); 342 s on 2 cores
    python -m embres.train --config=configs/hybrid_finetune.py:init_from=runs/h_transfer,runlocal \
        --workdir=/tmp/hybrid_finetune_local
        # a smoke run

Every run and learning rate tried, each with its command: docs/hybrid.md.
"""

from embres import configlib
from embres.objectives import sts_finetune


def get_config(arg: str | None = None):
    """Config for ``configs/hybrid_finetune.py:init_from=DIR[,runlocal]``."""
    arg = configlib.parse_arg(arg, runlocal=False, init_from="")
    if not arg.init_from:
        raise ValueError(
            "configs/hybrid_finetune.py needs :init_from=DIR (the workdir or export/ of a "
            "trained configs/hybrid.py or configs/projection.py run); got none"
        )
    c = configlib.base_config()
    # A contextual export's own adapter; a static student's rows are trained by "table".
    c.adapter = configlib.section(type=sts_finetune.trained_adapter(arg.init_from))
    configlib.sts_finetune_training(c, arg.init_from, "scored:stsb,sick")
    c.total_steps = 600
    c.optimizer.learning_rate = 3e-4
    c.optimizer.warmup_steps = 60
    # Fidelity to the teacher is not what this stage is after; STS and speed are measured.
    del c.evals.fidelity
    if arg.runlocal:
        configlib.shrink_for_runlocal(c)
    return c
