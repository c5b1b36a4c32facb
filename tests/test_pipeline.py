"""The overlapped host pipeline of EmbeddingExtractor (issue 14, item 3).

Tokenisation runs in a background thread while the device computes; one batch stays in flight;
the vectors are bitwise those of the serial path, in the caller's order; errors raised in the
thread reach the caller unchanged. Timing is checked with sleeps (which need no CPU), against
a loose bound, so a loaded machine does not make the test flaky.
"""

import copy
import dataclasses
import threading
import time

import numpy as np
import pytest

from embres import EmbeddingExtractor, tokenize
from embres.extract import ACCELERATOR_BATCH_SIZE, CPU_BATCH_SIZE, default_batch_size

# 24 different texts of 3 to 10 tokens: 6 batches of 4 in two length buckets (8 and 12), so
# few shapes compile (the tests stay fast) yet the batches are not all alike.
WORDS = "the man plays guitar a cat dog runs and woman piano".split()
TEXTS = [" ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(1 + i % 8)) for i in range(24)]


class SlowTokenizer:
    """A real tokenizer that sleeps ``seconds`` per call (per window) and counts its calls.

    ``fail_on_call`` (1-based) makes that call raise instead.
    """

    def __init__(self, tokenizer, seconds: float = 0.0, fail_on_call: int | None = None):
        self._tokenizer, self.seconds, self.fail_on_call = tokenizer, seconds, fail_on_call
        self.calls = 0

    def __call__(self, texts, **kwargs):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError(f"tokenizer broke on call {self.calls}")
        time.sleep(self.seconds)
        return self._tokenizer(texts, **kwargs)

    def __getattr__(self, name):  # pad_token_id, bos_token_id, ...: the real tokenizer's
        return getattr(self._tokenizer, name)


@pytest.fixture(scope="module")
def tiny(tiny_models):
    return EmbeddingExtractor(tiny_models("bert"), batch_size=4)


def _extractor(tiny, tokenizer=None, window=1) -> EmbeddingExtractor:
    """A copy of ``tiny`` (sharing its compiled forward) with ``tokenizer`` and ``window``.

    ``window=1``: each batch is tokenised while the previous one computes.
    """
    ex = copy.copy(tiny)
    if tokenizer is not None:
        ex.model = dataclasses.replace(tiny.model, tokenizer=tokenizer)
    ex.window = window
    return ex


def _slow_compute(ex: EmbeddingExtractor, seconds: float) -> None:
    """Makes each forward of ``ex`` take ``seconds`` more, as a slow device would."""
    forward = ex._forward

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return forward(*args, **kwargs)

    ex._forward = slow


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "embres-prefetch"]


def test_tokenisation_overlaps_compute(tiny):
    seconds, batches = 0.2, 6
    slow = SlowTokenizer(tiny.model.tokenizer)
    ex = _extractor(tiny, slow)
    ex.extract_embeddings(TEXTS)  # compiles every bucket shape before any timing
    slow.seconds = seconds
    _slow_compute(ex, seconds)

    def wall(overlap: bool) -> float:
        ex.overlap, slow.calls = overlap, 0
        start = time.perf_counter()
        ex.extract_embeddings(TEXTS)
        elapsed = time.perf_counter() - start
        assert slow.calls == batches  # one window per batch of 4
        return elapsed

    total = batches * (seconds + seconds)  # the sum of the host's and the device's sleeps
    assert wall(overlap=False) >= total  # the serial path does one after the other
    # Overlapped: about max(host, device) + one batch = 1.4 s, against 2.4 s in sequence. The
    # bound is loose on purpose: sleeps need no CPU, so only a very busy machine could break it.
    assert wall(overlap=True) < 0.8 * total


@pytest.mark.parametrize("pooling", ["mean", "none"])
def test_overlap_gives_bitwise_the_serial_vectors_in_the_callers_order(tiny, pooling):
    ex = _extractor(tiny, window=2)  # 3 windows of 2 batches
    ex.overlap = False
    serial = ex.extract_embeddings(TEXTS, pooling=pooling)
    ex.overlap = True
    overlapped = ex.extract_embeddings(TEXTS, pooling=pooling)
    if pooling == "none":
        np.testing.assert_array_equal(overlapped[1], serial[1])  # the masks
        serial, overlapped = serial[0], overlapped[0]
    np.testing.assert_array_equal(overlapped, serial)
    if pooling == "mean":  # the caller's order: each row is its own text's vector
        alone = np.stack([ex.extract_embeddings([t])[0] for t in TEXTS])
        np.testing.assert_allclose(overlapped, alone, atol=1e-5)
        assert not np.allclose(overlapped[0], overlapped[1])  # the rows do differ


def test_extract_to_overlapped_writes_the_serial_vectors(tmp_path, tiny):
    ex = _extractor(tiny, window=1)
    ex.overlap = False
    serial = np.load(ex.extract_to(tmp_path / "serial.npy", TEXTS, chunk_size=10, progress=False))
    ex.overlap = True
    path = ex.extract_to(tmp_path / "overlap.npy", iter(TEXTS), chunk_size=10, progress=False)
    np.testing.assert_array_equal(np.load(path), serial)


def test_an_error_in_the_tokenizer_thread_reaches_the_caller(tmp_path, tiny):
    ex = _extractor(tiny, SlowTokenizer(tiny.model.tokenizer, fail_on_call=3))
    with pytest.raises(RuntimeError, match=r"^tokenizer broke on call 3$"):
        ex.extract_embeddings(TEXTS)
    assert _prefetch_threads() == []  # stopped and joined before the error reached us
    # A lone surrogate in a later window names its text by its place in the caller's input.
    texts = TEXTS[:20] + ["fine", "the man\ud800"] + TEXTS[20:]
    ex = _extractor(tiny)
    with pytest.raises(ValueError, match=r"^texts\[21\] holds a lone surrogate U\+D800"):
        ex.extract_embeddings(texts)
    with pytest.raises(ValueError, match=r"^texts\[21\] holds a lone surrogate U\+D800"):
        ex.extract_to(tmp_path / "out.npy", texts, chunk_size=100, progress=False)
    assert list(tmp_path.iterdir()) == []  # no partial file, no lock
    assert _prefetch_threads() == []


class FakeResult:
    """Stands for a device array: logs when its copy starts and when the host reads it."""

    def __init__(self, log: list[str], i: int, rows: int):
        self.log, self.i, self.rows = log, i, rows

    def copy_to_host_async(self):
        self.log.append(f"copy {self.i}")

    def __array__(self, dtype=None, copy=None):
        self.log.append(f"fetch {self.i}")
        return np.zeros((self.rows, 32), np.float32)


def test_batch_i_plus_1_is_dispatched_before_batch_i_is_fetched(tiny):
    ex = _extractor(tiny, window=2)
    log: list[str] = []

    def forward(params, input_ids, mask, *args):
        i = sum(entry.startswith("dispatch") for entry in log)
        log.append(f"dispatch {i}")
        return FakeResult(log, i, len(input_ids))

    ex._forward = forward
    assert ex.extract_embeddings(TEXTS[:12]).shape == (12, 32)  # 3 batches of 4
    assert log == [
        "dispatch 0",
        "copy 0",
        "dispatch 1",
        "copy 1",
        "fetch 0",
        "dispatch 2",
        "copy 2",
        "fetch 1",
        "fetch 2",
    ]


def test_prefetch_stops_its_thread_when_the_caller_stops_early():
    produced = []

    def numbers():
        for i in range(1000):
            produced.append(i)
            yield i

    items = tokenize.prefetch(numbers(), depth=2)
    assert [next(items), next(items)] == [0, 1]
    items.close()
    assert _prefetch_threads() == []
    assert len(produced) <= 5  # 2 taken, 2 queued, 1 waiting to be: never the whole stream


def test_batch_size_follows_the_device():
    assert default_batch_size("cpu") == CPU_BATCH_SIZE
    assert default_batch_size("gpu") == default_batch_size("tpu") == ACCELERATOR_BATCH_SIZE
    assert ACCELERATOR_BATCH_SIZE >= 512 > CPU_BATCH_SIZE


def test_default_batch_size_and_window_of_an_extractor(tiny):
    ex = EmbeddingExtractor(tiny.model)  # the tests run on CPU (conftest)
    assert ex.batch_size == CPU_BATCH_SIZE
    assert ex.window * ex.batch_size >= tokenize.WINDOW_TEXTS
    with pytest.raises(ValueError, match="batch_size=0 must be a positive integer"):
        EmbeddingExtractor(tiny.model, batch_size=0)
