r"""Hybrid students: static rows plus a context module, distilled token by token.

Variants (``configs/hybrid.py:variant=NAME``), each an adapter plus an objective:

* ``transfer`` (default; layer adaptation): the teacher's last block carried over into the
  256-wide basis of the teacher's own token states (all heads, FFN pruned to 1,024 of 1,536
  neurons by activity), fine-tuned with the rows (adapter ``transfer``, objective
  ``token_distill``, in-batch contrastive pooled loss);
* ``conv_transfer``: the conv mixer standing in for the teacher's lower layers (fitted to
  their layer-5 states), feeding the carried-over block (FFN 768);
* ``attention``: one small pre-LN attention layer (4 heads, FFN 512) over the rows, trained
  from scratch;
* ``conv``: the gated depthwise-conv mixer (adapter ``hybrid``) under the token-level
  objective;
* ``conv_pooled``: the conv mixer as first trained, on pooled sentence vectors only
  (objective ``static_distill``, corpus-free by default): the baseline.

The token-level variants train on ``sentences:stsb,sick`` (the STS-B and SICK train splits'
sentences, no score, no sentence of any dev/trial file) against the teacher's last-layer
token states (cached once, float16, in the basis) plus the pooled vector.

Commands and what they printed (all-MiniLM-L6-v2; Spearman x100 on STS-B dev / SICK trial /
STSb-TR dev; teacher 86.72 / 79.99 / 52.91; FLOPs per token at 16 tokens, teacher 21.38 M;
wall time on 2 CPU cores, some while another job ran)::

    python -m embres.train --config=configs/hybrid.py --workdir=runs/h_transfer
        # 84.93 / 76.90 / 56.74, 2.12 M FLOPs (9.9%), 260 s
        # (cosine pooled loss: 84.65 / 77.04 / 56.46; 1,000 steps: 84.70 / 77.19 / 56.25)
    python -m embres.train --config=configs/hybrid.py:variant=conv_transfer --workdir=runs/h_conv_transfer
        # 84.72 / 77.10 / 56.06, 1.99 M FLOPs (9.3%), 252 s
    python -m embres.train --config=configs/hybrid.py:variant=attention --workdir=runs/h_attention
        # 83.99 / 77.02 / 54.12, 1.07 M FLOPs (5.0%), 235 s
        # (--config.adapter.layers=2 --config.adapter.ffn_dim=384: 84.45 / 76.92 / 55.61)
    python -m embres.train --config=configs/hybrid.py:variant=conv --workdir=runs/h_conv
        # 81.86 / 74.95 / 55.48, 0.27 M FLOPs (1.2%), 161 s
    python -m embres.train --config=configs/hybrid.py:variant=conv_pooled \
        --config.data.source=sentences:stsb,sick --workdir=runs/h_conv_pooled
        # 84.09 / 75.96 / 53.50, 206 s
    python -m embres.train --config=configs/projection.py \
        --config.data.source=sentences:stsb,sick --workdir=runs/h_static
        # the static student on the same text: 84.13 / 75.58 / 55.13, 127 s
    python -m embres.train --config=configs/hybrid.py:runlocal --workdir=/tmp/hybrid_local

On ``text:../shared/data/text/en.txt`` instead (news, 25k lines), the transfer gave 82.26 /
71.07 / 52.39 against the static student's 82.72 / 66.61 / 54.51: +4.5 on SICK there, but
in-domain text lifts the static student as much as the hybrids. CPU speeds, parameters and
bytes of every variant: ``python bench/hybrid.py`` (see the README).
"""

from embres import configlib

VARIANTS = ("transfer", "conv_transfer", "attention", "conv", "conv_pooled")


def get_config(arg: str | None = None):
    """Config for ``configs/hybrid.py[:variant=NAME,runlocal,target_dim=N]``."""
    arg = configlib.parse_arg(arg, runlocal=False, target_dim=0, variant="transfer")
    if arg.variant not in VARIANTS:
        raise ValueError(f"variant={arg.variant!r}; expected one of {list(VARIANTS)}")
    c = configlib.base_config()
    c.adapter = configlib.section()
    # runlocal is a smoke run: a width any teacher, even a tiny test model, has.
    c.adapter.target_dim = arg.target_dim or (16 if arg.runlocal else 256)

    if arg.variant in ("conv", "conv_pooled"):
        c.adapter.type = "hybrid"
        c.adapter.kernel_size = 5
        c.adapter.hidden_dim = 256
        c.adapter.weighting = "none"
    elif arg.variant == "attention":
        c.adapter.type = "attention"
        c.adapter.layers = 1
        c.adapter.heads = 4
        c.adapter.ffn_dim = 512
        c.adapter.max_positions = 64
        c.adapter.weighting = "none"
    else:
        c.adapter.type = arg.variant
        c.adapter.layers = 1  # the teacher's last block
        c.adapter.heads = 0  # 0: all the teacher's heads
        c.adapter.head_dim = 0  # 0: the teacher's (filled in before training)
        # FFN neurons kept of the teacher's 1,536: keeps FLOPs per token under 10% of its own
        c.adapter.ffn_dim = 0 if arg.runlocal else (1024 if arg.variant == "transfer" else 768)
        c.adapter.max_positions = 64
        c.adapter.weighting = "none"
        if arg.variant == "conv_transfer":
            c.adapter.kernel_size = 5
            c.adapter.hidden_dim = 128

    if arg.variant == "conv_pooled":
        configlib.static_distill_training(c)
        c.data.cache_rows = 8_192
    else:
        configlib.token_distill_training(c)
        # Rows start as each token's mean state over the corpus (its vocabulary row where
        # unseen); a transferred block's input is also fitted to the states it was built for.
        c.objective.row_init = "corpus"
        c.objective.mid_weight = 1.0 if "transfer" in arg.variant else 0.0
        # In-domain text: the STS-B and SICK train splits' sentences (no score used, and no
        # sentence that any dev, trial or test file holds), 14,404 short sentences.
        c.data.source = "sentences:stsb,sick"
        if arg.variant == "transfer":
            # In-batch contrastive pooled loss: 84.93 / 76.90 / 56.74 (STS-B dev, SICK trial,
            # STSb-TR dev) against cosine's 84.65 / 77.04 / 56.46: better on two signals of three.
            c.objective.loss = "contrastive"
    if arg.runlocal:
        configlib.shrink_for_runlocal(c)
    return c
