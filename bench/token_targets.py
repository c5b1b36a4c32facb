"""Token-level targets: cached once, or computed in every step? Measured, on one machine.

    EMBRES_DATA_DIR=../shared/data python bench/token_targets.py [--cache runs/h_transfer/token_cache]
        [--batch 128] [--steps 20]

Times, on the same batches of STS-B-like text from the token cache a training run built:

* **in the step**: the teacher's forward with every hidden state, the PCA projection and
  the float16 cast, for one training batch at its padded length (what a step would add if
  the targets were not cached);
* **from the cache**: :meth:`TokenCacheSource.next_batch` (memory-mapped float16 rows
  gathered into the padded batch);

and prints both per step, their ratio, the one-off cost of building the cache (from its
size and the in-step rate), and the epoch after which the cache has paid for itself.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", default="runs/h_transfer/token_cache")
    parser.add_argument("--teacher", default="all-MiniLM-L6-v2")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    import jax
    import numpy as np

    from embres.data import token_cache
    from embres.models import load_model

    cache = Path(args.cache)
    meta = json.loads((cache / "meta.json").read_text())
    source = token_cache.TokenCacheSource(cache, batch_size=args.batch, seed=0)
    model = load_model(args.teacher)
    width, big = meta["dim"], model.config.hidden_size
    rng = np.random.default_rng(0)
    mean = rng.normal(size=big).astype(np.float32)
    basis = np.linalg.qr(rng.normal(size=(big, width)))[0].astype(np.float32)
    forward = token_cache._forward_fn(model, tuple(meta["layers"]), mean, basis)

    batches = [source.next_batch() for _ in range(args.steps)]
    teacher_inputs = []
    for b in batches:  # the teacher's rows: the template around each sentence's own tokens
        ids = np.full((len(b["ids"]), b["ids"].shape[1] + 2), model.config.pad_token_id, np.int32)
        lengths = b["mask"].sum(1)
        ids[:, 0] = model.tokenizer.cls_token_id
        for j, n in enumerate(lengths):
            ids[j, 1 : n + 1] = b["ids"][j, :n]
            ids[j, n + 1] = model.tokenizer.sep_token_id
        mask = (np.arange(ids.shape[1])[None] < (lengths + 2)[:, None]).astype(np.int32)
        teacher_inputs.append((ids, mask))
    for ids, mask in teacher_inputs:  # compile every shape first
        jax.block_until_ready(forward(model.params, ids, mask))

    start = time.perf_counter()
    for ids, mask in teacher_inputs:
        jax.device_get(forward(model.params, ids, mask))
    in_step = (time.perf_counter() - start) / args.steps

    reader = token_cache.TokenCacheSource(cache, batch_size=args.batch, seed=1)
    start = time.perf_counter()
    for _ in range(args.steps):
        reader.next_batch()
    cached = (time.perf_counter() - start) / args.steps

    rows = meta["count"]
    build = rows / args.batch * in_step
    disk = sum(p.stat().st_size for p in cache.iterdir())
    print(
        f"token cache {cache}: {rows:,} sentences, {meta['tokens']:,} tokens, layers "
        f"{meta['layers']}, {width} wide float16: {disk / 2**20:,.0f} MiB on disk"
    )
    print(
        f"per step of {args.batch} sentences: teacher in the step {in_step * 1e3:,.1f} ms, "
        f"read from the cache {cached * 1e3:,.1f} ms ({in_step / cached:,.0f}x)"
    )
    print(
        f"building the cache costs about one epoch of in-step teacher work ({build:,.0f} s); "
        f"from the second epoch on, each epoch saves {build - rows / args.batch * cached:,.0f} s"
    )


if __name__ == "__main__":
    main()
