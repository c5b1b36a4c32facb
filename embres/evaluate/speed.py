"""Speed: sentences/s and tokens/s at a batch size, single-sentence latency p50/p99.

Warm-up runs (one pass over every text, which also compiles each padded shape) are excluded
from all timings. ``embed_fn`` returns host numpy arrays, so each call has finished when it
returns; no extra synchronisation is needed.

Example::

    SpeedEvaluator(texts, batch_size=64, count_tokens=tok_count, device="cpu").run(embed_fn)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from embres.evaluate.common import EmbedFn, Skipped

CountTokens = Callable[[list[str]], int]


def default_device() -> str:
    """The JAX default device in words, e.g. ``cpu (2 cores)`` or ``NVIDIA H100 80GB HBM3``."""
    import jax

    device = jax.devices()[0]
    if device.platform == "cpu":
        return f"cpu ({os.cpu_count()} cores)"
    return str(getattr(device, "device_kind", device.platform))


def speed_texts(data_dir: str | os.PathLike | None = None, count: int = 512) -> list[str]:
    """``count`` distinct STS-B dev sentences, a varied mix of lengths.

    Raises:
      FileNotFoundError: naming the STS-B dev file when it is absent.
    """
    from embres.evaluate.sts import load_pairs

    pairs = load_pairs("stsb", "dev", data_dir)
    texts = list(dict.fromkeys(pairs.sentences1 + pairs.sentences2))
    return texts[:count]


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of durations in milliseconds."""
    return float(np.percentile(np.asarray(seconds) * 1e3, q))


class SpeedEvaluator:
    """Throughput and latency of ``embed_fn``.

    Args:
      texts: the sentences to embed; None reads STS-B dev sentences from ``data_dir`` (the
        task is skipped with the reason when absent).
      batch_size: texts per ``embed_fn`` call for throughput.
      latency_texts: how many single-sentence calls to time for p50/p99.
      repeats: throughput passes over all texts; the best is reported.
      count_tokens: maps texts to their total token count (no padding); enables tokens/s.
      device: names the device in the report; default the JAX default device.
      data_dir: used when ``texts`` is None.
      num_texts: how many STS-B sentences when ``texts`` is None.
    """

    def __init__(
        self,
        texts: Sequence[str] | None = None,
        batch_size: int = 64,
        latency_texts: int = 100,
        repeats: int = 3,
        count_tokens: CountTokens | None = None,
        device: str | None = None,
        data_dir: str | os.PathLike | None = None,
        num_texts: int = 512,
    ):
        if batch_size <= 0 or repeats <= 0 or latency_texts <= 0:
            raise ValueError(
                f"batch_size={batch_size}, repeats={repeats}, latency_texts={latency_texts}: "
                "expected positive integers"
            )
        self.texts = None if texts is None else list(texts)
        self.batch_size, self.latency_texts, self.repeats = batch_size, latency_texts, repeats
        self.count_tokens, self.device = count_tokens, device
        self.data_dir, self.num_texts = data_dir, num_texts

    def _batches(self, texts: list[str]) -> list[list[str]]:
        return [texts[i : i + self.batch_size] for i in range(0, len(texts), self.batch_size)]

    def run(self, embed_fn: EmbedFn) -> Iterator[tuple[str, float | str | Skipped]]:
        """Yields device, batch size, sentences/s, tokens/s (when countable), latency p50/p99."""
        texts = self.texts
        if texts is None:
            try:
                texts = speed_texts(self.data_dir, self.num_texts)
            except FileNotFoundError as e:
                yield "speed", Skipped(str(e))
                return
        if not texts:
            raise ValueError("SpeedEvaluator needs at least one text")
        yield "speed/device", self.device or default_device()
        yield "speed/batch_size", self.batch_size
        batches = self._batches(texts)
        for batch in batches:  # warm-up: every batch shape once
            embed_fn(batch)
        best = float("inf")
        for _ in range(self.repeats):
            start = time.perf_counter()
            for batch in batches:
                embed_fn(batch)
            best = min(best, time.perf_counter() - start)
        yield "speed/sentences_per_s", len(texts) / best
        if self.count_tokens is not None:
            yield "speed/tokens_per_s", self.count_tokens(texts) / best
        singles = texts[: self.latency_texts]
        for text in singles:  # warm-up of the single-sentence shapes
            embed_fn([text])
        durations = []
        for text in singles:
            start = time.perf_counter()
            embed_fn([text])
            durations.append(time.perf_counter() - start)
        yield "speed/latency_p50_ms", percentile_ms(durations, 50)
        yield "speed/latency_p99_ms", percentile_ms(durations, 99)
