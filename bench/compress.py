"""Compressed teacher (low-rank input table) vs the teacher, in one process.

    python -m embres.train --config=configs/lowrank.py:rank=64 --workdir=workdirs/lowrank64
    EMBRES_DATA_DIR=../shared/data python bench/compress.py \\
        --workdir workdirs/lowrank32 --workdir workdirs/lowrank64 [--json out.json]

For the teacher and each training workdir (its ``export/``, a Hugging Face directory with
the factors merged back): STS-B dev and STSb-TR dev Spearman (x100), the input table's bytes
and sentences/s on the first ``--speed-texts`` distinct STS-B dev sentences (one warm-up
pass, then the best of ``--repeats``). Table bytes are those of the factors
(``export/adapter/adapter.safetensors``, as ``embres.train`` writes them) when the workdir
has them, else of the merged table. Prints a table with differences and ratios against the
teacher.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FACTORS = Path("export", "adapter", "adapter.safetensors")


def factor_info(workdir: Path) -> tuple[int | None, int | None]:
    """(factor bytes, rank) from a workdir's saved factors, or (None, None) without them."""
    path = workdir / FACTORS
    if not path.is_file():
        return None, None
    from safetensors.numpy import load_file

    factors = load_file(str(path))
    rank = factors["A"].shape[1] if "A" in factors else None
    return int(sum(v.nbytes for v in factors.values())), rank


def measure(spec: str, args: argparse.Namespace) -> dict:
    """Quality, table bytes and speed of one model (the teacher or a workdir)."""
    from bench.teacher import sentences_per_s
    from embres.evaluate import load_embedder
    from embres.evaluate.speed import speed_texts
    from embres.evaluate.sts import evaluate_sts

    _, embed_fn, info = load_embedder(spec, batch_size=args.batch_size)
    merged = int(info["table"].size * info["table"].dtype.itemsize)
    factor_bytes, rank = factor_info(Path(spec)) if Path(spec).is_dir() else (None, None)
    return {
        "model": spec,
        "rank": rank,
        "stsb_dev": evaluate_sts(embed_fn, "stsb", "dev"),
        "stsb_tr_dev": evaluate_sts(embed_fn, "stsb_tr", "dev"),
        "table_bytes": factor_bytes if factor_bytes is not None else merged,
        "table_stored_as": "factors" if factor_bytes is not None else "dense",
        "sent_per_s": sentences_per_s(embed_fn, speed_texts(count=args.speed_texts), args.repeats),
    }


def main(argv: list[str] | None = None) -> int:
    """Runs the comparison and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="all-MiniLM-L6-v2")
    parser.add_argument(
        "--workdir", action="append", default=[], required=True, help="repeat per rank"
    )
    parser.add_argument("--speed-texts", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    for workdir in args.workdir:
        if not Path(workdir, "export", "config.json").is_file():
            parser.error(f"--workdir {workdir}: expected {Path(workdir, 'export', 'config.json')}")

    base = measure(args.teacher, args)
    rows = [base] + [measure(w, args) for w in args.workdir]
    print(
        f"{'model':32} {'rank':>4} {'STS-B dev':>9} {'diff':>6} {'STSb-TR':>8} {'diff':>6} "
        f"{'table MB':>9} {'x smaller':>9} {'sent/s':>7} {'ratio':>6}"
    )
    for r in rows:
        print(
            f"{Path(r['model']).name:32} {r['rank'] or '-':>4} {r['stsb_dev']:9.2f} "
            f"{r['stsb_dev'] - base['stsb_dev']:+6.2f} {r['stsb_tr_dev']:8.2f} "
            f"{r['stsb_tr_dev'] - base['stsb_tr_dev']:+6.2f} {r['table_bytes'] / 1e6:9.2f} "
            f"{base['table_bytes'] / r['table_bytes']:8.1f}x {r['sent_per_s']:7.0f} "
            f"{r['sent_per_s'] / base['sent_per_s']:5.2f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for bench.teacher
    sys.exit(main())
