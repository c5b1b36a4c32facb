r"""Hybrid students: static rows plus a context module, distilled token by token.

Variants (``configs/hybrid.py:variant=NAME``), each an adapter plus an objective:

* ``transfer`` (default; layer adaptation): the teacher's last two blocks carried over into
  the 256-wide basis of the teacher's own token states, each pruned to 8 of 12 heads (by
  weight norms) and 64 of 1,536 FFN neurons (by activity on real text), fine-tuned with the
  rows (adapter ``transfer``, objective ``token_distill``, in-batch contrastive pooled loss,
  learning rate 3e-3);
* ``transfer1``: the teacher's last block only, all 12 heads, FFN 1,024;
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
token states (cached once, float16, in the basis) plus the pooled vector. The second stage
on the same splits' scored pairs is its own config: ``configs/hybrid_finetune.py``.

Commands (expected: STS-B dev / SICK trial / STSb-TR dev, Spearman x100)::

    python -m embres.train --config=configs/hybrid.py --workdir=runs/h_transfer
        # 85.01 / 77.92 / 57.11 at 7.5% of the teacher's FLOPs per token; 229 s on 2 cores
    python -m embres.train --config=configs/hybrid.py:variant=transfer1 --workdir=runs/h_transfer1
        # 84.99 / 76.93 / 56.81
    python -m embres.train --config=configs/hybrid.py:variant=conv_transfer --workdir=runs/h_conv_transfer
        # 84.72 / 77.10 / 56.06
    python -m embres.train --config=configs/hybrid.py:variant=attention --workdir=runs/h_attention
        # 83.99 / 77.02 / 54.12
    python -m embres.train --config=configs/hybrid.py:variant=conv --workdir=runs/h_conv
        # 81.86 / 74.95 / 55.48
    python -m embres.train --config=configs/hybrid.py:variant=conv_pooled --workdir=runs/h_conv_pooled_vocab
        # 81.09 / 64.22 / 52.93 (corpus-free; on sentences:stsb,sick 84.09 / 75.96 / 53.50)
    python -m embres.train --config=configs/hybrid.py:runlocal --workdir=/tmp/hybrid_local
        # a smoke run: 4 steps on the first 64 sentences, no evaluation

Every run, setting tried and speed, each with its command: docs/hybrid.md.
"""

from embres import configlib

VARIANTS = ("transfer", "transfer1", "conv_transfer", "attention", "conv", "conv_pooled")


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
        c.adapter.type = "conv_transfer" if arg.variant == "conv_transfer" else "transfer"
        # The teacher's last block(s); heads (0: all) and FFN neurons kept of its 12 and 1,536
        # keep FLOPs per token under 10% of its own.
        c.adapter.layers, c.adapter.heads, c.adapter.ffn_dim = {
            "transfer": (2, 8, 64),
            "transfer1": (1, 0, 1024),
            "conv_transfer": (1, 0, 768),
        }[arg.variant]
        if arg.runlocal:  # a tiny test teacher may have fewer of each: keep all
            c.adapter.heads, c.adapter.ffn_dim = 0, 0
        c.adapter.head_dim = 0  # 0: the teacher's (filled in before training)
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
        if arg.variant in ("transfer", "transfer1"):
            # The in-batch contrastive pooled loss beat cosine on two signals of three, and
            # 3e-3 beat 1e-3 on all three and on fidelity (docs/hybrid.md, "Settings tried").
            c.objective.loss = "contrastive"
            c.optimizer.learning_rate = 3e-3
    if arg.runlocal:
        configlib.shrink_for_runlocal(c)
    return c
