r"""Hybrid students: static rows plus a context module, distilled token by token.

Variants (``configs/hybrid.py:variant=NAME``), each an adapter plus an objective:

* ``transfer`` (layer adaptation): the teacher's last block carried over into the
  256-wide PCA basis of its hidden space (heads kept, FFN pruned to 1,024 neurons),
  fine-tuned with the rows (adapter ``transfer``, objective ``token_distill``);
* ``attention``: one small pre-LN attention layer (4 heads, FFN 512) over the rows,
  trained from scratch (adapter ``attention``);
* ``conv``: the gated depthwise-conv mixer (adapter ``hybrid``) under the same
  token-level objective;
* ``conv_pooled``: the conv mixer as it was first trained, on pooled sentence vectors
  only (objective ``static_distill``): the baseline.

All but ``conv_pooled`` train on ``text/en.txt`` against the teacher's last-layer token
states (cached once, float16, in the PCA basis) plus the pooled vector.

Commands::

    python -m embres.train --config=configs/hybrid.py --workdir=runs/hybrid_transfer
    python -m embres.train --config=configs/hybrid.py:variant=attention --workdir=runs/hybrid_attention
    python -m embres.train --config=configs/hybrid.py:variant=conv --workdir=runs/hybrid_conv
    python -m embres.train --config=configs/hybrid.py:variant=conv_pooled \
        --config.data.source=text:../shared/data/text/en.txt --workdir=runs/hybrid_conv_pooled
    python -m embres.train --config=configs/hybrid.py:runlocal --workdir=/tmp/hybrid_local
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
    if arg.runlocal:
        configlib.shrink_for_runlocal(c)
    return c
