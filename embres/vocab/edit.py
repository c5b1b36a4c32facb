"""Editing a trained vocabulary: drop the tokens a corpus never uses, add whole words.

Both edit the tokenizer's serialised state and keep every other part (normaliser,
pre-tokenizer, templates, decoder) as it was. Supported models: WordPiece (BERT), Unigram
(XLM-R, sentencepiece-style ``tokenizer.json``) and WordLevel; BPE is refused, because its
merges, not its vocabulary, decide the split.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
from transformers import PreTrainedTokenizerFast

from embres.vocab import _state

SUPPORTED = ("WordPiece", "Unigram", "WordLevel")
# sentencepiece's byte-fallback pieces: as good as single characters for coverage.
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def _check_supported(state: dict, what: str) -> str:
    kind = state["model"]["type"]
    if kind not in SUPPORTED:
        raise NotImplementedError(
            f"{what} supports tokenizer models {SUPPORTED}; this tokenizer's model is {kind!r}"
        )
    return kind


def _is_character(token: str, state: dict) -> bool:
    """Whether a token covers one character (so dropping it could create new [UNK]s)."""
    model = state["model"]
    if model["type"] == "WordPiece":
        prefix = model.get("continuing_subword_prefix") or "##"
        if token.startswith(prefix) and len(token) > len(prefix):
            token = token[len(prefix) :]
    elif model["type"] == "Unigram":
        token = token.lstrip("▁")
    return len(token) <= 1 or bool(_BYTE_PIECE.fullmatch(token))


def trim_tokenizer(
    tokenizer, texts: Iterable[str], *, min_count: int = 1, keep: Iterable[str] = ()
) -> tuple[PreTrainedTokenizerFast, np.ndarray]:
    """Drops the tokens ``texts`` never use (the vocabtrimmer idea).

    Kept: tokens used at least ``min_count`` times, special and added tokens, every token of
    one character (``a``, ``##a``, ``▁a``, byte pieces), so text unlike the corpus turns into
    [UNK] no more often than before, and the raw token strings in ``keep``.

    Why the corpus's own tokenisation cannot change (``min_count=1``): every token of its
    splits is kept. WordPiece takes the longest vocabulary match at each position; the match
    the full vocabulary chose is still there and nothing longer was added, so each step
    chooses the same. Unigram takes the most probable segmentation (Viterbi argmax); it is
    still feasible (all its pieces are kept) and every remaining segmentation was already a
    candidate, so it is still the argmax. WordLevel looks up whole words. With
    ``min_count > 1`` the rare words' splits may change.

    Args:
      tokenizer: a fast tokenizer (WordPiece, Unigram or WordLevel model).
      texts: the corpus.
      min_count: minimum uses for a token to be kept.
      keep: raw token strings (as in the vocabulary, e.g. ``##ler``) to keep regardless.

    Returns:
      (trimmed tokenizer, kept_ids): int64 old ids in ascending order; new id ``i`` is old id
      ``kept_ids[i]``, and ``table[kept_ids]`` is the trimmed table.
    """
    state = _state.state_of(tokenizer)
    kind = _check_supported(state, "trim_tokenizer")
    if min_count < 1:
        raise ValueError(f"min_count={min_count}; expected at least 1")
    vocab = _state.vocab_of(state)
    size = max(vocab.values()) + 1
    counts = np.zeros(size, np.int64)
    for ids in _state.encode_ids(tokenizer, texts):
        np.add.at(counts, np.asarray(ids, np.int64), 1)
    mask = counts >= min_count
    for token, token_id in vocab.items():
        if _is_character(token, state):
            mask[token_id] = True
    for added in state.get("added_tokens") or []:
        mask[added["id"]] = True
    for token_id in getattr(tokenizer, "all_special_ids", []) or []:
        mask[token_id] = True
    unk = state["model"].get("unk_token") if kind != "Unigram" else None
    if unk is not None and unk in vocab:
        mask[vocab[unk]] = True
    if kind == "Unigram" and state["model"].get("unk_id") is not None:
        mask[state["model"]["unk_id"]] = True
    for token in keep:
        if token not in vocab:
            raise ValueError(f"keep holds {token!r}, which is not a token of this vocabulary")
        mask[vocab[token]] = True

    kept_ids = np.flatnonzero(mask).astype(np.int64)
    old_to_new = np.full(size, -1, np.int64)
    old_to_new[kept_ids] = np.arange(len(kept_ids))
    model = state["model"]
    if kind == "Unigram":
        model["vocab"] = [p for i, p in enumerate(model["vocab"]) if mask[i]]
        if model.get("unk_id") is not None:
            model["unk_id"] = int(old_to_new[model["unk_id"]])
    else:
        model["vocab"] = {t: int(old_to_new[i]) for t, i in model["vocab"].items() if mask[i]}
    for added in state.get("added_tokens") or []:
        added["id"] = int(old_to_new[added["id"]])
    state["post_processor"] = _state.remap_ids(state.get("post_processor"), old_to_new)
    state["padding"] = _state.remap_ids(state.get("padding"), old_to_new)
    return _state.wrap(state, **_state.special_kwargs(tokenizer)), kept_ids


def add_words(tokenizer, words: Sequence[str]) -> tuple[PreTrainedTokenizerFast, np.ndarray]:
    """A copy of ``tokenizer`` in which each word is one token.

    Each word is normalised with the tokenizer's own normaliser and must stay one
    pre-token (``New York`` cannot be one WordPiece token: the pre-tokenizer splits it). The
    word enters the model's vocabulary, not the added tokens: an added token would match
    anywhere, even inside other words, before pre-tokenisation. In the vocabulary it matches
    as a whole word, and, as any vocabulary entry, may also become the first piece of longer
    words that begin with it (WordPiece ``kediler`` → ``kedi ##ler``; Unigram gives the
    piece the vocabulary's highest score, so it wins for the word itself). Text without
    words starting with a new word tokenises as before.

    Args:
      tokenizer: a fast tokenizer (WordPiece, Unigram or WordLevel model).
      words: the words to add.

    Returns:
      (new tokenizer, ids): one id per word, in order; a word that already was a single
      token gets its existing id, a new word an id after every existing one.

    Raises:
      ValueError: a word that normalises to nothing or to several pre-tokens.
    """
    if isinstance(words, str):
        raise TypeError("words must be a sequence of strings, not a single string; wrap it")
    state = _state.state_of(tokenizer)
    kind = _check_supported(state, "add_words")
    backend = _state.plain_backend(tokenizer)
    vocab = _state.vocab_of(state)
    next_id = max(vocab.values()) + 1
    model = state["model"]
    if kind == "Unigram" and len(model["vocab"]) != next_id:
        raise ValueError(
            f"this Unigram vocabulary has {len(model['vocab'])} pieces but ids up to "
            f"{next_id - 1} (added tokens after it); a piece appended would not get id {next_id}"
        )
    top_score = max((score for _, score in model["vocab"]), default=0.0) if kind == "Unigram" else 0
    ids = []
    for word in words:
        if not isinstance(word, str):
            raise TypeError(f"words hold {type(word).__name__} ({word!r:.40}); expected str")
        text = backend.normalizer.normalize_str(word) if backend.normalizer else word
        pieces = backend.pre_tokenizer.pre_tokenize_str(text) if backend.pre_tokenizer else None
        pieces = [p for p, _ in pieces] if pieces is not None else text.split()
        if len(pieces) != 1:
            raise ValueError(
                f"word {word!r} normalises to pre-tokens {pieces}; expected exactly one"
            )
        piece = pieces[0]
        existing = backend.encode(word, add_special_tokens=False).ids
        if len(existing) == 1:
            ids.append(existing[0])
            continue
        if piece in vocab:  # added earlier in this call
            ids.append(vocab[piece])
            continue
        if kind == "Unigram":
            # Scores are log-probabilities (<= 0): one piece at the top score beats any split
            # of the word into two or more pieces.
            model["vocab"].append([piece, top_score])
        else:
            model["vocab"][piece] = next_id
        vocab[piece] = next_id
        ids.append(next_id)
        next_id += 1
    return _state.wrap(state, **_state.special_kwargs(tokenizer)), np.asarray(ids, np.int64)
