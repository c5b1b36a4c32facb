"""Tiny random Hugging Face checkpoints (with tokenizers) for tests and examples.

Needs ``torch`` and ``transformers`` (the test extras): the checkpoints are written by the
PyTorch reference models themselves with ``save_pretrained``, so the parity tests compare
embres against exactly what Hugging Face would load.
"""

from __future__ import annotations

import os
from pathlib import Path

WORDS = (
    "the a an man woman dog cat plays playing guitar piano runs on in at with of and is are "
    "was to for by bir ve bu kedi köpek adam kadın gitar çalıyor koşuyor . , ! ?"
).split()

_SPECIALS = {
    "bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    "xlmr": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    "gpt2": ["<|endoftext|>"],
}


def tiny_tokenizer(family: str):
    """A word-level fast tokenizer with the family's special tokens and templates."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = _SPECIALS[family]
    vocab = {tok: i for i, tok in enumerate(specials + list(WORDS))}
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
    return PreTrainedTokenizerFast(tokenizer_object=tok, **names)


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
) -> Path:
    """Saves a tiny random ``family`` model ("bert", "xlmr" or "gpt2") plus tokenizer.

    Returns the directory. The PyTorch model can be reloaded from it as the reference.
    """
    import torch
    import transformers as tf

    tokenizer = tiny_tokenizer(family)
    vocab_size = len(tokenizer)
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab_size)
    if family == "bert":
        config = tf.BertConfig(
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=4 * hidden_size,
            max_position_embeddings=64,
            pad_token_id=0,
            **common,
        )
        model = tf.BertModel(config, add_pooling_layer=True)
    elif family == "xlmr":
        config = tf.XLMRobertaConfig(
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=4 * hidden_size,
            max_position_embeddings=66,
            type_vocab_size=1,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            **common,
        )
        model = tf.XLMRobertaModel(config, add_pooling_layer=False)
    elif family == "gpt2":
        config = tf.GPT2Config(
            n_embd=hidden_size,
            n_layer=num_layers,
            n_head=num_heads,
            n_positions=64,
            bos_token_id=0,
            eos_token_id=0,
            **common,
        )
        model = tf.GPT2Model(config)
    else:
        raise ValueError(f"family={family!r}; expected 'bert', 'xlmr' or 'gpt2'")
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
