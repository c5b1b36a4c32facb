"""Tiny random Hugging Face checkpoints (with tokenizers) for tests and examples.

Needs ``torch`` and ``transformers`` (the test extras): the checkpoints are written by the
PyTorch reference models themselves with ``save_pretrained``, so the parity tests compare
embres against exactly what Hugging Face would load.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

WORDS = (
    "the a an man woman dog cat plays playing guitar piano runs on in at with of and is are "
    "was to for by bir ve bu kedi köpek adam kadın gitar çalıyor koşuyor . , ! ?"
).split()

_SPECIALS = {
    "bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    "xlmr": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    "gpt2": ["<|endoftext|>"],
}


# The pad token a GPT-2 tokenizer gets when asked for one; it goes after the words, so every
# other id is the same with or without it.
GPT2_PAD = "<|pad|>"


def tiny_tokenizer(family: str, pad_token: bool | None = None):
    """A word-level fast tokenizer with the family's special tokens and templates.

    Args:
      family: "bert", "xlmr" or "gpt2".
      pad_token: whether the tokenizer declares a pad token. None: the family's habit (BERT and
        XLM-R do, GPT-2 does not). False keeps BERT's ``[PAD]``/XLM-R's ``<pad>`` in the
        vocabulary (same ids) but no longer names it the pad token; True gives GPT-2 an extra
        ``<|pad|>`` token after the words.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if family not in _SPECIALS:
        raise ValueError(f"family={family!r}; expected 'bert', 'xlmr' or 'gpt2'")
    if pad_token is None:
        pad_token = family != "gpt2"
    specials = _SPECIALS[family]
    extra = [GPT2_PAD] if family == "gpt2" and pad_token else []
    vocab = {tok: i for i, tok in enumerate(specials + list(WORDS) + extra)}
    unk = {"bert": "[UNK]", "xlmr": "<unk>", "gpt2": "<|endoftext|>"}[family]
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if family == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
        )
        names = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]")
    elif family == "xlmr":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
        )
        names = dict(
            bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>", cls_token="<s>"
        )
    else:
        names = dict(
            bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
        )
        if pad_token:
            names["pad_token"] = GPT2_PAD
    if not pad_token:
        names.pop("pad_token", None)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **names)


def _tiny_config(family: str, hidden_size: int, num_layers: int, num_heads: int):
    """(config class, model class, model kwargs, config fields) of a tiny ``family`` model."""
    import transformers as tf

    shape = dict(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=4 * hidden_size,
    )
    if family == "bert":
        fields = dict(shape, max_position_embeddings=64, pad_token_id=0)
        return tf.BertConfig, tf.BertModel, {"add_pooling_layer": True}, fields
    if family == "xlmr":
        fields = dict(
            shape,
            max_position_embeddings=66,
            type_vocab_size=1,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
        )
        return tf.XLMRobertaConfig, tf.XLMRobertaModel, {"add_pooling_layer": False}, fields
    if family == "gpt2":
        fields = dict(
            n_embd=hidden_size,
            n_layer=num_layers,
            n_head=num_heads,
            n_positions=64,
            bos_token_id=0,
            eos_token_id=0,
        )
        return tf.GPT2Config, tf.GPT2Model, {}, fields
    raise ValueError(f"family={family!r}; expected 'bert', 'xlmr' or 'gpt2'")


def tiny_checkpoint(
    family: str,
    directory: str | os.PathLike,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
    safe_serialization: bool = True,
    max_shard_size: str | None = None,
    pad_token: bool | None = None,
    vocab_size: int | None = None,
    config_overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Saves a tiny random ``family`` model ("bert", "xlmr" or "gpt2") plus tokenizer.

    Args:
      family: "bert", "xlmr" or "gpt2".
      directory: where ``save_pretrained`` writes the model and tokenizer.
      hidden_size, num_layers, num_heads: the model's shape.
      seed: torch seed of the random weights.
      safe_serialization: False writes ``pytorch_model.bin`` instead of safetensors.
      max_shard_size: shard the safetensors (e.g. "20KB").
      pad_token: whether the tokenizer has a pad token; see :func:`tiny_tokenizer`.
      vocab_size: rows of the input table; None: exactly the tokenizer's size. More rows than
        the tokenizer has tokens are allowed (ids the tokenizer never produces).
      config_overrides: extra Hugging Face config fields, e.g. GPT-2's own
        ``{"bos_token_id": 50256, "eos_token_id": 50256}`` with a small table, which puts the
        config's special ids past the table's last row.

    Returns the directory. The PyTorch model can be reloaded from it as the reference.
    """
    import torch

    tokenizer = tiny_tokenizer(family, pad_token=pad_token)
    if vocab_size is None:
        vocab_size = len(tokenizer)
    if vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size={vocab_size} is below the tokenizer's {len(tokenizer)} ids")
    config_class, model_class, model_kwargs, fields = _tiny_config(
        family, hidden_size, num_layers, num_heads
    )
    fields.update(vocab_size=vocab_size, **(config_overrides or {}))
    torch.manual_seed(seed)
    model = model_class(config_class(**fields), **model_kwargs)
    # Random init leaves LayerNorms at identity; perturb every tensor so a mix-up shows.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    directory = Path(directory)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(directory, **kwargs)
    if not safe_serialization:
        # transformers 5 writes safetensors only; write the legacy pickle by hand.
        torch.save(model.state_dict(), directory / "pytorch_model.bin")
        (directory / "model.safetensors").unlink()
    tokenizer.save_pretrained(directory)
    return directory
