"""Teacher extraction: embres vs sentence-transformers on the same data, in one process.

    EMBRES_DATA_DIR=../shared/data python bench/teacher.py [--model all-MiniLM-L6-v2]
        [--probe-max-train 2000] [--speed-texts 2000] [--json out.json]

Both sides are loaded through ``embres.evaluate.load_embedder`` and measured by the same
evaluators: STS-B dev, STSb-TR dev and SICK trial Spearman (x100; embres must agree with
sentence-transformers to +-0.05), the Turkish sentiment linear probe (accuracy and macro-F1 on
dev; ``--probe-max-train`` fits on a seeded subset of train to keep it quick, 0 skips it) and
sentences/s over the first ``--speed-texts`` distinct STS-B dev sentences at ``--batch-size``
(one warm-up pass, which also compiles embres's padded shapes, then the best of
``--repeats`` timed passes). Prints a table with the embres - peer difference and the
embres / peer ratio; exits 1 when an STS score disagrees by more than the tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

STS_SETS = (("stsb", "dev"), ("stsb_tr", "dev"), ("sick", "dev"))
TOLERANCE = 0.05


def sentences_per_s(embed_fn, texts: list[str], repeats: int) -> float:
    """Best-of-``repeats`` throughput after one untimed warm-up pass over all texts."""
    embed_fn(texts)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        embed_fn(texts)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


def measure(spec: str, args: argparse.Namespace) -> dict[str, float]:
    """Every metric of the comparison for one model spec."""
    from embres.evaluate import load_embedder
    from embres.evaluate.probe import ProbeEvaluator
    from embres.evaluate.speed import speed_texts
    from embres.evaluate.sts import evaluate_sts

    start = time.perf_counter()
    _, embed_fn, info = load_embedder(spec, batch_size=args.batch_size)
    row: dict[str, float] = {"load_s": time.perf_counter() - start}
    for dataset, split in STS_SETS:
        row[f"sts/{dataset}_{split}"] = evaluate_sts(embed_fn, dataset, split)
        print(f"{spec}  sts/{dataset}_{split}: {row[f'sts/{dataset}_{split}']:.4f}", flush=True)
    if args.probe_max_train:
        probe = ProbeEvaluator("tr_movie_sentiment", max_train=args.probe_max_train)
        for name, value in probe.run(embed_fn):
            row[name] = value if isinstance(value, float) else float("nan")
            print(f"{spec}  {name}: {value}", flush=True)
    texts = speed_texts(count=args.speed_texts)
    row["speed/sentences_per_s"] = sentences_per_s(embed_fn, texts, args.repeats)
    print(f"{spec}  sentences/s: {row['speed/sentences_per_s']:.0f}", flush=True)
    row["speed/texts"] = len(texts)
    row["device"] = info.get("device", "?")
    return row


def table(ours: dict, peer: dict) -> str:
    """The side-by-side table: metric, embres, peer, difference, ratio."""
    lines = [f"{'metric':34} {'embres':>10} {'sent-tr':>10} {'diff':>8} {'ratio':>7}"]
    for key, value in ours.items():
        if not isinstance(value, float) or key.endswith("load_s"):
            continue
        other = peer[key]
        lines.append(
            f"{key:34} {value:10.4g} {other:10.4g} {value - other:+8.3g} {value / other:6.3f}x"
        )
    lines.append(f"device: embres {ours['device']}; sentence-transformers {peer['device']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Runs the comparison; returns 1 when STS agreement fails."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--probe-max-train", type=int, default=2000)
    parser.add_argument("--speed-texts", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write both rows and the verdict here")
    args = parser.parse_args(argv)

    ours = measure(args.model, args)
    peer = measure(f"sentence-transformers:{args.model}", args)
    print(table(ours, peer))
    gaps = {k: abs(ours[k] - peer[k]) for k in ours if k.startswith("sts/")}
    agree = all(gap <= TOLERANCE for gap in gaps.values())
    print(f"STS agreement within +-{TOLERANCE}: {'yes' if agree else 'NO'} ({gaps})")
    if args.json:
        payload = {"args": vars(args) | {"json": str(args.json)}, "embres": ours, "peer": peer}
        args.json.write_text(json.dumps(payload | {"sts_agree": agree}, indent=2) + "\n")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
