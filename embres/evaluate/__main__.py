"""Command line: evaluate models, or merge earlier reports.

Examples::

    python -m embres.evaluate --model all-MiniLM-L6-v2 --tasks sts --out runs/teacher
    python -m embres.evaluate --model all-MiniLM-L6-v2 \\
        --model sentence-transformers:all-MiniLM-L6-v2 --model model2vec:/path/to/m2v \\
        --tasks sts,probe,retrieval,speed,memory --out runs/side_by_side
    python -m embres.evaluate --model runs/static256 --model int8:runs/static256 \\
        --tasks sts,memory --out runs/int8_cost     # a static export, float32 vs int8 table
    python -m embres.evaluate --model all-MiniLM-L6-v2 --tasks sts,probe,bitext \\
        --out runs/turkish      # STS-B + STSb-TR dev, Turkish sentiment probe, EN<->TR R@1
    python -m embres.evaluate --model all-MiniLM-L6-v2 --tasks bitext \\
        --bitext-dataset pairs:parallel/en_tr_pud.tsv     # human-translated PUD pairs
    python -m embres.evaluate --compare runs/teacher runs/side_by_side --out runs/compare

Data comes from ``--data-dir`` or ``$EMBRES_DATA_DIR``; a task whose data is absent is
skipped with a one-line reason (printed and listed in report.md).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from embres.evaluate import TASKS, evaluate_model
from embres.evaluate.report import compare, write_report


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses the command line (see the module docstring)."""
    p = argparse.ArgumentParser(
        prog="python -m embres.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        help="model name/path, sentence-transformers:<path>, model2vec:<path>, an embres "
        "static export or training workdir (int8:<path> for its int8 table); repeat for "
        "several models in one report",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="evaluate the per-row int8 table of every (static export) --model",
    )
    p.add_argument("--tasks", default="sts", help=f"comma-separated, from {','.join(TASKS)}")
    p.add_argument("--out", default="eval_report", help="folder for report.json/.md and plots")
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="DIR",
        help="merge the report.json of these folders into --out instead of evaluating",
    )
    p.add_argument(
        "--data-dir", help="folder with stsb/, stsb_tr/, sick/, ... (default $EMBRES_DATA_DIR)"
    )
    p.add_argument(
        "--split",
        default="dev",
        help="split of sts, retrieval and bitext data (dev: the one to report)",
    )
    p.add_argument(
        "--sts-datasets",
        default="stsb,stsb_tr,sick",
        help="comma-separated: stsb, stsb_tr, sick, tfds:glue/stsb:validation, files",
    )
    p.add_argument(
        "--probe-dataset",
        default="tr_movie_sentiment",
        help="folder (name under the data dir, or path) with train.tsv and dev.tsv",
    )
    p.add_argument("--probe-max-train", type=int, help="fit the probe on at most this many rows")
    p.add_argument("--retrieval-dataset", default="stsb", help="an STS dataset or pairs:<path>")
    p.add_argument(
        "--bitext-dataset",
        default="stsb",
        help="stsb (STS-B <-> STSb-TR, row by row) or pairs:<two-column TSV with a header>, "
        "a path or one under the data dir",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--dtype", default="float32", help="compute dtype of embres models")
    p.add_argument("--limit", type=int, help="use the first N pairs/rows of each dataset (quick)")
    p.add_argument("--speed-texts", type=int, default=512, help="sentences timed by speed")
    p.add_argument(
        "--curves",
        nargs="+",
        default=[],
        metavar="JSONL",
        help="metrics JSONL files to plot as training curves",
    )
    args = p.parse_args(argv)
    if not args.compare and not args.model:
        p.error("give --model (one or more) or --compare DIR ...")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        p.error(f"unknown tasks {unknown}; expected some of {sorted(TASKS)}")
    args.task_list = tasks
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the exit status."""
    args = parse_args(argv)
    command = "python -m embres.evaluate " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.compare:
        written = compare(args.compare, args.out, command=command)
    else:
        options = {
            "data_dir": args.data_dir,
            "split": args.split,
            "sts_datasets": [d.strip() for d in args.sts_datasets.split(",") if d.strip()],
            "probe_dataset": args.probe_dataset,
            "probe_max_train": args.probe_max_train,
            "retrieval_dataset": args.retrieval_dataset,
            "bitext_dataset": args.bitext_dataset,
            "batch_size": args.batch_size,
            "dtype": args.dtype,
            "limit": args.limit,
            "speed_texts": args.speed_texts,
            "int8": args.int8,
        }
        records = [evaluate_model(spec, args.task_list, **options) for spec in args.model]
        written = write_report(records, args.out, curves=args.curves, command=command)
    for kind, path in written.items():
        print(f"wrote {kind}: {path}")
    print(written["markdown"].read_text().split("\n## ")[0].rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
