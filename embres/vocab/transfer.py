"""Rows for a new vocabulary's tokens from a source model, without training.

Rules (:func:`transfer_rows`):

* ``random``: normal rows with the old table's per-dimension std (0.02 without a table);
  tokens the old vocabulary also has keep their old rows, so only new tokens are random.
* ``fvt`` (Fast Vocabulary Transfer, Gee et al. 2022): a new token's row is the mean of the
  old rows of its pieces under the old tokenizer; a token the old vocabulary has keeps its row.
* ``teacher`` (Model2Vec style): the teacher's sentence vector of the token's string.
* ``dictionary``: a new token that is a whole translation of source words (a bilingual
  dictionary's target word) starts from the mean of those words' source vectors; FVT elsewhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from embres.vocab import _state

log = logging.getLogger(__name__)

RULES = ("random", "fvt", "teacher", "dictionary")
_ROLES = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token", "bos_token")
_ROLES += ("eos_token",)


def _pieces(tokenizer) -> list[tuple[str, bool]]:
    """(surface string, starts a word) for every id, from the model's conventions."""
    state = _state.state_of(tokenizer)
    vocab = _state.vocab_of(state)
    model = state["model"]
    special = {a["content"] for a in state.get("added_tokens") or [] if a.get("special")}
    out: list[tuple[str, bool]] = [("", True)] * (max(vocab.values()) + 1)
    prefix = model.get("continuing_subword_prefix") or "##"
    byte_decoder = None
    if "ByteLevel" in str(state.get("pre_tokenizer")) or "ByteLevel" in str(state.get("decoder")):
        from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

        byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
    for token, token_id in vocab.items():
        if token in special:
            out[token_id] = (token, True)
        elif model["type"] == "WordPiece" and token.startswith(prefix) and len(token) > len(prefix):
            out[token_id] = (token[len(prefix) :], False)
        elif byte_decoder is not None and all(c in byte_decoder for c in token):
            raw = bytes(byte_decoder[c] for c in token).decode("utf-8", errors="replace")
            out[token_id] = (raw.lstrip(" "), raw.startswith(" "))
        elif "▁" in token or model["type"] == "Unigram":
            out[token_id] = (token.replace("▁", " ").strip(), token.startswith("▁"))
        else:
            out[token_id] = (token, True)
    return out


def token_strings(tokenizer) -> list[str]:
    """The surface string of each id: WordPiece ``##`` and sentencepiece ``▁`` removed,
    byte-level (GPT-2) tokens decoded; special tokens as they are."""
    return [surface for surface, _ in _pieces(tokenizer)]


class _OldSplitter:
    """Splits a string into old-vocabulary ids, as a word start or as a continuation."""

    def __init__(self, tokenizer):
        self.state = _state.state_of(tokenizer)
        self.vocab = _state.vocab_of(self.state)
        self.backend = _state.plain_backend(tokenizer)
        self.kind = self.state["model"]["type"]
        self.prefix = self.state["model"].get("continuing_subword_prefix") or "##"
        self.unk_id = getattr(tokenizer, "unk_token_id", None)

    def _wordpiece(self, word: str, continuation: bool) -> list[int]:
        # Greedy longest match run by hand: the Rust model cannot start a word mid-word.
        ids, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end]
                if start > 0 or continuation:
                    piece = self.prefix + piece
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    start = end
                    break
            else:
                return [self.unk_id] if self.unk_id is not None else []
        return ids

    def split(self, surface: str, word_start: bool) -> list[int]:
        """Old ids of ``surface``; a continuation is split as the middle of a word."""
        if word_start or self.kind not in ("WordPiece", "Unigram"):
            # BPE/WordLevel have no continuation form to ask for: the string as a word.
            return self.backend.encode(surface, add_special_tokens=False).ids
        normalizer, pre = self.backend.normalizer, self.backend.pre_tokenizer
        text = normalizer.normalize_str(surface) if normalizer else surface
        words = [w for w, _ in pre.pre_tokenize_str(text)] if pre else text.split()
        ids: list[int] = []
        for i, word in enumerate(words):
            if self.kind == "WordPiece":
                ids += self._wordpiece(word, continuation=i == 0)
            else:  # Unigram: a piece without the word-start mark is a continuation
                word = word.lstrip("▁") if i == 0 else word
                ids += [t.id for t in self.backend.model.tokenize(word)]
        return ids


def _special_rows(new_tokenizer, old_tokenizer) -> dict[int, int]:
    """new special id -> old special id of the same role (cls -> cls, ...)."""
    out = {}
    for role in _ROLES:
        new_id = getattr(new_tokenizer, f"{role}_id", None)
        old_id = getattr(old_tokenizer, f"{role}_id", None)
        if new_id is not None and old_id is not None:
            out[int(new_id)] = int(old_id)
    return out


def fvt_rows(new_tokenizer, old_tokenizer, old_table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fast Vocabulary Transfer: each new token's row is the mean of its old pieces' rows.

    A token whose raw string is an old token copies that row; specials take the old row of
    the same role; a continuation (``##ler``, Unigram ``ler``) is split as the middle of a
    word. Tokens whose pieces are all unknown get the old table's mean row.

    Args:
      new_tokenizer: the new vocabulary's fast tokenizer.
      old_tokenizer: the source model's fast tokenizer.
      old_table: [V_old, d] source rows.

    Returns:
      (rows [V_new, d] float32, covered bool [V_new]: False where all pieces were unknown).
    """
    old_table = np.asarray(old_table, np.float32)
    splitter = _OldSplitter(old_tokenizer)
    new_vocab = _state.vocab_of(_state.state_of(new_tokenizer))
    raw = {i: t for t, i in new_vocab.items()}
    pieces = _pieces(new_tokenizer)
    specials = _special_rows(new_tokenizer, old_tokenizer)
    rows = np.zeros((len(pieces), old_table.shape[1]), np.float32)
    covered = np.ones(len(pieces), bool)
    mean_row = old_table.mean(0)
    for token_id, (surface, word_start) in enumerate(pieces):
        old_id = specials.get(token_id, splitter.vocab.get(raw.get(token_id, "")))
        if old_id is not None and old_id < len(old_table):
            rows[token_id] = old_table[old_id]
            continue
        ids = [i for i in splitter.split(surface, word_start) if i != splitter.unk_id]
        ids = [i for i in ids if i < len(old_table)]
        if ids:
            rows[token_id] = old_table[ids].mean(0)
        else:
            rows[token_id], covered[token_id] = mean_row, False
    return rows, covered


def teacher_forward_rows(
    strings: Sequence[str],
    embed_fn: Callable[[list[str]], np.ndarray],
    batch_size: int = 1024,
) -> np.ndarray:
    """Model2Vec-style rows: the teacher's vector of each token's string.

    Args:
      strings: one string per token (see :func:`token_strings`).
      embed_fn: any ``list[str] -> [n, d]`` callable (a sentence encoder).
      batch_size: strings per call.

    Returns:
      [len(strings), d] float32.
    """
    strings = list(strings)
    chunks = []
    for start in range(0, len(strings), batch_size):
        out = np.asarray(embed_fn(strings[start : start + batch_size]), np.float32)
        if out.ndim != 2 or out.shape[0] != len(strings[start : start + batch_size]):
            raise ValueError(f"embed_fn returned shape {out.shape}; expected [n_strings, d]")
        chunks.append(out)
        if len(strings) > 10 * batch_size:
            log.info("teacher rows: %d / %d strings", start + len(out), len(strings))
    if not chunks:
        raise ValueError("strings is empty; expected at least one token string")
    return np.concatenate(chunks)


def dictionary_rows(
    new_tokenizer,
    pairs: Sequence[tuple[str, str]],
    source_vectors: Callable[[list[str]], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Rows for tokens that are whole translations in a bilingual dictionary.

    A token qualifies when it starts a word (not a continuation) and its string equals a
    dictionary target word normalised by ``new_tokenizer``'s normaliser; its row is the mean
    of ``source_vectors`` of all source words translated by it.

    Args:
      new_tokenizer: the target language's fast tokenizer.
      pairs: (source word, target word) pairs, e.g. (en, tr).
      source_vectors: ``list[str] -> [n, d]`` vectors of source words.

    Returns:
      (rows [V_new, d] float32, zeros where has_row is False; has_row bool [V_new]).
    """
    pieces = _pieces(new_tokenizer)
    special = set(getattr(new_tokenizer, "all_special_ids", []) or [])
    by_string = {s: i for i, (s, start) in enumerate(pieces) if start and s and i not in special}
    normalizer = _state.backend_of(new_tokenizer).normalizer
    sources: dict[int, list[str]] = {}
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"pairs hold {pair!r}; expected (source word, target word)")
        source, target = pair
        key = (normalizer.normalize_str(target) if normalizer else target).strip()
        if key in by_string and source.strip():
            sources.setdefault(by_string[key], []).append(source.strip())
    words = sorted({w for ws in sources.values() for w in ws})
    probe = words or [p[0] for p in pairs][:1]
    if not probe:
        raise ValueError("pairs is empty; expected (source word, target word) pairs")
    vectors = np.asarray(source_vectors(probe), np.float32)
    rows = np.zeros((len(pieces), vectors.shape[1]), np.float32)
    has_row = np.zeros(len(pieces), bool)
    index = {w: i for i, w in enumerate(words)}
    for token_id, ws in sources.items():
        rows[token_id] = vectors[[index[w] for w in ws]].mean(0)
        has_row[token_id] = True
    log.info("dictionary rows for %d of %d tokens", has_row.sum(), len(pieces))
    return rows, has_row


def transfer_rows(
    rule: str,
    new_tokenizer,
    *,
    old_tokenizer=None,
    old_table: np.ndarray | None = None,
    embed_fn: Callable[[list[str]], np.ndarray] | None = None,
    pairs: Sequence[tuple[str, str]] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Rows [V_new, d] for ``new_tokenizer`` by one of :data:`RULES` (module docstring).

    Args:
      rule: "random", "fvt", "teacher" or "dictionary".
      new_tokenizer: the new vocabulary.
      old_tokenizer, old_table: the source model's tokenizer and rows (fvt, dictionary;
        random uses them for the scale and shared tokens).
      embed_fn: ``list[str] -> [n, d]`` (teacher; dictionary: source words' vectors, which
        are otherwise the FVT of each word under the old tokenizer).
      pairs: (source, target) dictionary pairs (dictionary).
      seed: random rule's seed.

    Raises:
      ValueError: an unknown rule, or an input the rule needs is missing.
    """
    if rule not in RULES:
        raise ValueError(f"rule={rule!r}; expected one of {RULES}")

    def need(**inputs):
        missing = [name for name, value in inputs.items() if value is None]
        if missing:
            raise ValueError(f"rule={rule!r} needs {', '.join(missing)}")

    if rule == "teacher":
        need(embed_fn=embed_fn)
        return teacher_forward_rows(token_strings(new_tokenizer), embed_fn)
    if rule == "random":
        if old_table is None:
            need(embed_fn=embed_fn)  # only to learn the width
            dim, std = np.asarray(embed_fn(["a"])).shape[1], 0.02
        else:
            old_table = np.asarray(old_table, np.float32)
            dim, std = old_table.shape[1], old_table.std(0)
        size = len(_pieces(new_tokenizer))
        rows = np.random.default_rng(seed).normal(size=(size, dim)) * std
        rows = rows.astype(np.float32)
        if old_tokenizer is not None and old_table is not None:
            old_vocab = _state.vocab_of(_state.state_of(old_tokenizer))
            for token, token_id in _state.vocab_of(_state.state_of(new_tokenizer)).items():
                if old_vocab.get(token, len(old_table)) < len(old_table):
                    rows[token_id] = old_table[old_vocab[token]]
        return rows
    need(old_tokenizer=old_tokenizer, old_table=old_table)
    rows, _ = fvt_rows(new_tokenizer, old_tokenizer, old_table)
    if rule == "fvt":
        return rows
    need(pairs=pairs)
    if embed_fn is None:
        splitter, table = _OldSplitter(old_tokenizer), np.asarray(old_table, np.float32)

        def embed_fn(words: list[str]) -> np.ndarray:
            out = np.zeros((len(words), table.shape[1]), np.float32)
            for i, word in enumerate(words):
                ids = [t for t in splitter.split(word, True) if t != splitter.unk_id]
                out[i] = table[ids].mean(0) if ids else table.mean(0)
            return out

    dict_rows, has_row = dictionary_rows(new_tokenizer, pairs, embed_fn)
    if dict_rows.shape[1] != rows.shape[1]:
        raise ValueError(
            f"embed_fn gives width {dict_rows.shape[1]}; old_table has {rows.shape[1]}"
        )
    rows[has_row] = dict_rows[has_row]
    return rows
