"""Private helpers: a fast tokenizer's ``tokenizer.json`` state, edited and wrapped back.

Editing the serialised state (not the Rust objects) is what lets a vocabulary be trimmed or
extended while every other part (normaliser, pre-tokenizer, templates, decoder) is kept
byte for byte.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

import numpy as np
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

SPECIAL_NAMES = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
SPECIAL_NAMES += ("bos_token", "eos_token")


def backend_of(tokenizer: Any) -> Tokenizer:
    """The Rust ``tokenizers.Tokenizer`` behind a fast tokenizer (or the object itself)."""
    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(
            f"tokenizer of type {type(tokenizer).__name__} has no backend_tokenizer; expected a "
            "fast (Rust-backed) Hugging Face tokenizer"
        )
    return backend


def state_of(tokenizer: Any) -> dict:
    """The ``tokenizer.json`` content of ``tokenizer`` as a dict (a private copy)."""
    return json.loads(backend_of(tokenizer).to_str())


def model_type(tokenizer: Any) -> str:
    """The tokenizer model's type: "WordPiece", "Unigram", "BPE" or "WordLevel"."""
    return state_of(tokenizer)["model"]["type"]


def plain_backend(tokenizer: Any) -> Tokenizer:
    """A copy of the backend without padding or truncation (tokenizer.json may carry them)."""
    backend = copy.deepcopy(backend_of(tokenizer))
    backend.no_padding()
    backend.no_truncation()
    return backend


def encode_ids(tokenizer: Any, texts: Iterable[str], batch: int = 4096) -> Iterable[list[int]]:
    """Token ids per text, no special tokens, no truncation, in batches (texts may stream)."""
    backend = plain_backend(tokenizer)
    chunk: list[str] = []
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"texts hold a {type(text).__name__} ({text!r:.40}); expected str")
        chunk.append(text)
        if len(chunk) == batch:
            yield from (e.ids for e in backend.encode_batch(chunk, add_special_tokens=False))
            chunk = []
    if chunk:
        yield from (e.ids for e in backend.encode_batch(chunk, add_special_tokens=False))


def special_kwargs(tokenizer: Any) -> dict[str, Any]:
    """The special-token names of a transformers tokenizer, to build a sibling with."""
    out: dict[str, Any] = {}
    for name in SPECIAL_NAMES:
        value = getattr(tokenizer, name, None)
        if value is not None:
            out[name] = str(value)
    max_len = getattr(tokenizer, "model_max_length", None)
    if isinstance(max_len, int) and max_len < 10**9:
        out["model_max_length"] = max_len
    return out


def wrap(state: dict, **specials: Any) -> PreTrainedTokenizerFast:
    """A ``PreTrainedTokenizerFast`` over the state, with the given special-token names."""
    backend = Tokenizer.from_str(json.dumps(state, ensure_ascii=False))
    return PreTrainedTokenizerFast(tokenizer_object=backend, **specials)


def vocab_of(state: dict) -> dict[str, int]:
    """token -> id over the model's vocabulary and the added tokens."""
    model = state["model"]
    if model["type"] == "Unigram":
        vocab = {piece: i for i, (piece, _) in enumerate(model["vocab"])}
    elif model["type"] in ("WordPiece", "WordLevel", "BPE"):
        vocab = dict(model["vocab"])
    else:
        raise NotImplementedError(f"tokenizer model type {model['type']!r} is not supported")
    for added in state.get("added_tokens") or []:
        vocab[added["content"]] = added["id"]
    return vocab


def remap_ids(node: Any, old_to_new: np.ndarray) -> Any:
    """Remaps the special-token ids held by a post-processor or padding state, recursively.

    Covers ``TemplateProcessing`` (``special_tokens.*.ids``), ``BertProcessing`` and
    ``RobertaProcessing`` (``sep``/``cls`` as ``[token, id]``) and ``Sequence`` processors.
    """
    if isinstance(node, list):
        return [remap_ids(n, old_to_new) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "ids" and isinstance(value, list):
            out[key] = [int(old_to_new[i]) for i in value]
        elif key in ("sep", "cls") and isinstance(value, list) and len(value) == 2:
            out[key] = [value[0], int(old_to_new[value[1]])]
        elif key == "pad_id" and isinstance(value, int):
            out[key] = int(old_to_new[value])
        else:
            out[key] = remap_ids(value, old_to_new)
    return out
