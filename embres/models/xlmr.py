"""XLM-R / RoBERTa: the BERT encoder with RoBERTa positions and a single token type.

The layout differs from BERT in two ways the reference cares about: position ids count only
non-pad tokens and start at ``pad_token_id + 1`` (so the usable length is
``max_position_embeddings - pad_token_id - 1``), and ``type_vocab_size`` is 1. Both are
carried by :class:`embres.models.bert.Config`; this module fixes them for the family.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from embres.models import bert

Encoder = bert.Encoder
KEY_MAP = bert.KEY_MAP
IGNORED_KEYS = bert.IGNORED_KEYS
TABLE_PATH = bert.TABLE_PATH
flops_per_token = bert.flops_per_token  # the same encoder, the same count


class Config(bert.Config):
    """BERT config with RoBERTa defaults (positions from padding_idx + 1, one token type)."""

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any]) -> bert.Config:
        """Builds the config from a Hugging Face ``config.json`` dict of an (XLM-)RoBERTa model."""
        base = bert.Config.from_hf_config({"type_vocab_size": 1, "pad_token_id": 1, **hf})
        return dataclasses.replace(base, position_style="roberta")
