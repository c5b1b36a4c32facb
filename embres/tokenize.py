"""Tokenisation with Hugging Face tokenizers, and length buckets for compiled forwards.

Texts are tokenised once, sorted by length, cut into batches and padded to one of a few fixed
lengths (and a few fixed row counts), so a jitted forward compiles once per bucket shape and
never again, whatever texts come next.

For inference, :func:`batch_windows` does this a window of texts at a time and
:func:`prefetch` runs it in a background thread, so the host tokenises the next window while
the device computes the current one.

Also the facts about a vocabulary every consumer must agree on: the special tokens a text is
wrapped in (:func:`special_template`), which ids are real tokens (:func:`usable_token_mask`)
and the Zipf prior over them when no counts exist (:func:`zipf_prior`).
"""

from __future__ import annotations

import math
import queue
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

LENGTH_BUCKETS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)

# Padded lengths for inference (extraction, :func:`bucketed_batches`): finer than
# LENGTH_BUCKETS, which training keeps since there each shape is a compiled train step. Steps
# of 4 up to 32 tokens and at most 25% beyond, because on CPU the forward's time is its
# tokens, padding included. On 5,000 STS-B sentences (14 tokens on average) batches of 32
# hold 1.13x the real tokens, against 1.35x with LENGTH_BUCKETS (sentence-transformers, which
# pads each batch to its longest text: 1.31x), for 9 compiled lengths instead of 4
# (bench/extract.py prints this as ``padded/real``).
INFERENCE_LENGTH_BUCKETS = (
    8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256,
    320, 384, 448, 512, 640, 768, 896, 1024,
)  # fmt: skip

# Texts tokenised (and sorted by token count) together in :func:`batch_windows`: enough for
# near-global sorting (on STS-B, batches of 32 hold 1.13x the real tokens, 1.12x when all
# texts are sorted at once), few enough that the device starts after a short wait.
WINDOW_TEXTS = 2048

# Placeholders that never occur in text: BERT's ``[unusedN]``, ``<unusedN>`` and XLM-R's
# ``madeupwordN``. They would skew a PCA and the Zipf ranks.
PLACEHOLDER_TOKEN = re.compile(r"\[unused\d+\]|<unused\d+>|madeupword\d+")

# The Zipf prior is p(rank) ~ 1 / (rank + ZIPF_SHIFT) over usable ids (rank 0 = the first).
# The shift flattens the head: WordPiece/BPE lists start with punctuation and single
# characters, not with the most frequent words. The corpus-free ``vocab`` source samples
# from this prior, so changing it changes every corpus-free run.
ZIPF_SHIFT = 10.0


def check_texts(texts: Sequence[Any], first_index: int = 0) -> list[str]:
    """Returns ``texts`` as a list, raising ``TypeError`` naming the first non-string's index.

    ``first_index`` is the place of ``texts[0]`` in the caller's whole input (a chunk of a
    stream), so the message names the text where the user will look for it.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not a single string; wrap it: [text]")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(
                f"texts[{first_index + i}] is {type(t).__name__} ({t!r:.40}); expected str"
            )
    return texts


def check_unicode(texts: Sequence[str], first_index: int = 0) -> None:
    """Raises ``ValueError`` naming the first text that is not valid Unicode (a lone surrogate).

    Python strings may hold surrogate code points (U+D800..U+DFFF) on their own: text decoded
    with ``errors="surrogateescape"`` or a JSON ``"\\ud800"`` escape gives them. Tokenizers
    reject such a text with an error that names none of the texts; this finds which one.
    It costs a UTF-8 encode of every text, so :func:`encode` calls it only after a failure.
    """
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            code = ord(text[e.start])
            if 0xDC80 <= code <= 0xDCFF:  # how surrogateescape stores an undecodable byte
                cause = (
                    f"the byte 0x{code - 0xDC00:02X} of input that is not UTF-8, decoded with "
                    "errors='surrogateescape'"
                )
            else:
                cause = "half of a character pair, or a broken \\u escape"
            raise ValueError(
                f"texts[{first_index + i}] holds a lone surrogate U+{code:04X} at character "
                f"{e.start} ({cause}); it is not valid Unicode and cannot be tokenized: fix the "
                "source, or replace it with text.encode('utf-8', 'replace').decode('utf-8')"
            ) from None


def fallback_token_id(tokenizer: Any) -> int:
    """The token an empty text becomes when the tokenizer adds no special tokens (GPT-2)."""
    for attr in ("bos_token_id", "eos_token_id", "cls_token_id", "unk_token_id", "pad_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def encode(
    tokenizer: Any, texts: Sequence[str], max_length: int, first_index: int = 0
) -> list[np.ndarray]:
    """Token ids per text, with special tokens, truncated to ``max_length`` tokens.

    An empty text is embedded, not dropped: it becomes the tokenizer's special tokens, or a
    single BOS/EOS token for tokenizers that add none (GPT-2).

    Args:
      tokenizer: a Hugging Face tokenizer.
      texts: strings.
      max_length: most tokens per text.
      first_index: the place of ``texts[0]`` in the caller's whole input; error messages
        count from it.

    Raises:
      TypeError: naming the first text that is not a string.
      ValueError: naming the first text that is not valid Unicode (a lone surrogate).
    """
    texts = check_texts(texts, first_index)
    return _encode_or_name(tokenizer, texts, max_length, texts, first_index)


def _encode_or_name(
    tokenizer: Any, texts: list[str], max_length: int, whole: list[str], first_index: int
) -> list[np.ndarray]:
    """Token ids of ``texts``, a part of ``whole``; a failure names the first bad text of it.

    Hugging Face tokenizers refuse invalid Unicode with a TypeError that names no text; the
    check runs only then, so valid input pays nothing for it. It scans ``whole`` (the call's
    texts, numbered from ``first_index``), so the text named is the first bad one in the
    caller's order, whichever part the tokenizer was given.
    """
    if not texts:
        return []
    try:
        ids = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length)[
            "input_ids"
        ]
    except Exception:
        check_unicode(whole, first_index)
        raise
    fallback = fallback_token_id(tokenizer)
    return [np.asarray(row if len(row) else [fallback], dtype=np.int32) for row in ids]


def bucket_lengths(max_length: int, buckets: Sequence[int] = LENGTH_BUCKETS) -> tuple[int, ...]:
    """The fixed padded lengths used for a model whose sequences hold ``max_length`` tokens."""
    return tuple(b for b in buckets if b < max_length) + (max_length,)


def bucket_rows(batch_size: int) -> tuple[int, ...]:
    """Row counts a batch is padded to: powers of two below ``batch_size``, and ``batch_size``."""
    rows, r = [], 1
    while r < batch_size:
        rows.append(r)
        r *= 2
    return tuple(rows) + (batch_size,)


def _round_up(value: int, choices: tuple[int, ...]) -> int:
    for c in choices:
        if c >= value:
            return c
    return choices[-1]


def bucketed_batches(
    token_ids: Sequence[np.ndarray],
    batch_size: int,
    max_length: int,
    pad_id: int,
    buckets: Sequence[int] = INFERENCE_LENGTH_BUCKETS,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yields ``(indices, input_ids, attention_mask)`` over length-sorted, bucket-padded batches.

    ``indices`` says which input rows the batch holds, so callers can restore the original
    order; padding rows (to reach a bucketed row count) are not in ``indices``. Batches are
    padded to the lengths ``buckets`` allows (see :func:`bucket_lengths`); the default is
    the fine set meant for inference (training's coarser :data:`LENGTH_BUCKETS` means fewer
    compiled train steps).
    """
    lengths = np.fromiter((len(t) for t in token_ids), dtype=np.int64, count=len(token_ids))
    order = np.argsort(-lengths, kind="stable")
    lengths_choices = bucket_lengths(max_length, buckets)
    rows_choices = bucket_rows(batch_size)
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        length = _round_up(int(lengths[indices[0]]), lengths_choices)
        rows = _round_up(len(indices), rows_choices)
        input_ids = np.full((rows, length), pad_id, dtype=np.int32)
        mask = np.zeros((rows, length), dtype=np.int32)
        for r, i in enumerate(indices):
            n = len(token_ids[i])
            input_ids[r, :n] = token_ids[i]
            mask[r, :n] = 1
        yield indices, input_ids, mask


Batch = tuple[np.ndarray, np.ndarray, np.ndarray]  # (indices, input_ids, attention_mask)


def window_batches(batch_size: int) -> int:
    """Batches per window of :func:`batch_windows`: about :data:`WINDOW_TEXTS` texts, two at least.

    Two batches at least, so a window's tokenisation can hide behind more than one batch of
    device work even with the large batches of an accelerator.
    """
    return max(2, math.ceil(WINDOW_TEXTS / batch_size))


def batch_windows(
    tokenizer: Any,
    texts: list[str],
    batch_size: int,
    max_length: int,
    pad_id: int,
    window: int,
    first_index: int = 0,
    buckets: Sequence[int] = INFERENCE_LENGTH_BUCKETS,
) -> Iterator[list[Batch]]:
    """Tokenises ``texts`` a window at a time; yields each window's padded batches.

    Texts are ordered by character count, longest first (known before tokenising, and close
    to the token count), and cut into windows of ``window`` batches. Each window is
    tokenised, sorted by token count and cut into bucket-padded batches
    (:func:`bucketed_batches`), so a caller can compute one window while the next is
    tokenised (:func:`prefetch`) and lose little to padding against a sort of all texts at
    once. Only the very last batch can be short.

    Args:
      tokenizer: a Hugging Face tokenizer.
      texts: strings (already checked with :func:`check_texts`).
      batch_size: rows per batch.
      max_length: most tokens per text.
      pad_id: the id padded positions hold.
      window: batches per window.
      first_index: the place of ``texts[0]`` in the caller's whole input, for errors.
      buckets: the padded lengths allowed (``max_length`` is always one).

    Yields:
      per window, a list of ``(indices, input_ids, attention_mask)``; ``indices`` are
      positions in ``texts`` (see :func:`bucketed_batches`).

    Raises:
      ValueError: naming the first text, in the caller's order, that is not valid Unicode.
    """
    chars = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    order = np.argsort(-chars, kind="stable")
    size = window * batch_size
    for start in range(0, len(order), size):
        members = order[start : start + size]
        token_ids = _encode_or_name(
            tokenizer, [texts[i] for i in members], max_length, texts, first_index
        )
        yield [
            (members[rows], input_ids, mask)
            for rows, input_ids, mask in bucketed_batches(
                token_ids, batch_size, max_length, pad_id, buckets
            )
        ]


T = TypeVar("T")

# Seconds a blocked producer waits between checks that its consumer is still there.
_POLL_SECONDS = 0.05


def prefetch(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Yields ``items``, produced by a background thread up to ``depth`` items ahead.

    The thread runs the host work (tokenising, padding) while the caller runs the device:
    Hugging Face's fast tokenizers release the GIL, so both proceed at once. An exception
    raised while producing is re-raised here, in the caller, as it was raised (the same
    object, its message and type intact). Closing this generator (or an error in the
    caller) stops the thread and waits for it, so the tokenizer is never left in use by a
    thread after the call that started it has returned.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as error:  # whatever it is, it is the caller's to handle
            put((False, error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="embres-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            is_item, value = ready.get()
            if is_item:
                yield value
            elif value is None:
                return
            else:
                raise value
    finally:
        stop.set()
        thread.join()


def special_template(tokenizer: Any) -> tuple[list[int], list[int]]:
    """(prefix, suffix): the special-token ids the tokenizer wraps every text in.

    ``([CLS], [SEP])`` for BERT, ``(<s>, </s>)`` for XLM-R, ``([], [])`` for GPT-2. Found by
    locating a plain text's ids inside the same text encoded with special tokens.

    Raises:
      ValueError: the plain ids do not occur inside the wrapped ones (a tokenizer whose
        special tokens change how the text itself is split).
    """
    wrapped = list(tokenizer("x", add_special_tokens=True)["input_ids"])
    plain = list(tokenizer("x", add_special_tokens=False)["input_ids"])
    for start in range(len(wrapped) - len(plain) + 1):
        if wrapped[start : start + len(plain)] == plain:
            return wrapped[:start], wrapped[start + len(plain) :]
    raise ValueError(
        f"cannot find the special-token template of {type(tokenizer).__name__}: 'x' is "
        f"{plain} alone but {wrapped} with special tokens"
    )


def usable_token_mask(tokenizer: Any, vocab_size: int) -> np.ndarray:
    """bool [vocab_size]: True for ids that are real text pieces.

    False for special tokens (``[CLS]``, ``<pad>``, ...), placeholders (``[unusedN]``,
    ``<unusedN>``, ``madeupwordN``) and ids the tokenizer has no token for (a table padded
    beyond the vocabulary).
    """
    names = tokenizer.convert_ids_to_tokens(list(range(min(vocab_size, len(tokenizer)))))
    specials = set(getattr(tokenizer, "all_special_ids", []))
    keep = np.zeros(vocab_size, bool)
    for i, name in enumerate(names):
        keep[i] = name is not None and i not in specials and not PLACEHOLDER_TOKEN.fullmatch(name)
    return keep


def zipf_prior(usable: np.ndarray) -> np.ndarray:
    """float64 [V] probabilities ``1 / (rank + ZIPF_SHIFT)`` over the usable ids, 0 elsewhere.

    ``rank`` counts usable ids in id order (WordPiece and BPE vocabularies roughly list
    frequent pieces first). The result sums to one.

    Raises:
      ValueError: ``usable`` is not 1-D or has no True entry.
    """
    usable = np.asarray(usable, bool)
    if usable.ndim != 1 or not usable.any():
        raise ValueError(
            f"usable has shape {usable.shape} and {int(usable.sum())} usable ids; "
            "expected a 1-D mask with at least one True"
        )
    ids = np.flatnonzero(usable)
    weights = np.zeros(usable.shape, np.float64)
    weights[ids] = 1.0 / (np.arange(len(ids)) + ZIPF_SHIFT)
    return weights / weights.sum()
