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

Every --model is checked before anything is evaluated (the name resolves, the path exists,
the prefix is known; nothing is loaded), and all bad ones are named at once. The report is
rewritten after each model, so a stop keeps every model measured so far (the report then
says which models are missing). A task that raises is recorded in the report (error type
and message, under "Failed" in report.md) and the run goes on with the next task and model.

An earlier report in --out is replaced, with one line saying so; its files are kept beside
the new ones as report.prev.json, report.prev.md and *.prev.png (one generation).

A score that is not a finite number (NaN or Inf: a model whose vectors hold NaN, e.g. from
a diverged training run) is not a measurement: its task is recorded as failed, naming the
metrics and why (whether the model's vectors are finite), and no plot or table shows it.

Exit status: 0 when every task ran (skips included); 1 when a task or a model's load
failed, a non-finite score included (the report is written first and lists it); 2 for a
mistake on the command line (a bad --model, an empty --tasks, an --out that cannot be
written, a missing --compare folder, ...) or a write the file system refuses (read-only,
full), reported in one line on stderr with no traceback (--verbose or EMBRES_VERBOSE=1
shows it, and the tracebacks of failed tasks).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embres import cli
from embres.evaluate import TASKS, evaluate_model
from embres.evaluate.models import check_specs
from embres.evaluate.report import (
    COMPARE_TITLE,
    keep_previous,
    merge_records,
    read_jsonl,
    report_curves,
    write_report,
)

PROG = "embres.evaluate"  # how error lines start: "embres.evaluate: error: ..."
TASK_FAILED = 1


def positive_int(text: str) -> int:
    """An argparse type: an integer above zero (0 or -1 batches would fail only mid-run)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_data_options(p: cli.ArgumentParser) -> None:
    """The data each task reads: folder, split and every task's dataset."""
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
    p.add_argument(
        "--probe-max-train", type=positive_int, help="fit the probe on at most this many rows"
    )
    p.add_argument("--retrieval-dataset", default="stsb", help="an STS dataset or pairs:<path>")
    p.add_argument(
        "--bitext-dataset",
        default="stsb",
        help="stsb (STS-B <-> STSb-TR, row by row) or pairs:<two-column TSV with a header>, "
        "a path or one under the data dir",
    )


def build_parser() -> cli.ArgumentParser:
    """The command line's parser (see the module docstring)."""
    p = cli.ArgumentParser(
        prog="python -m embres.evaluate",
        error_prog=PROG,
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
    p.add_argument(
        "--out",
        default="eval_report",
        help="folder for report.json/.md and plots; an earlier report there is replaced, and "
        "kept as report.prev.json/.md",
    )
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="DIR",
        help="merge the report.json of these folders into --out instead of evaluating",
    )
    _add_data_options(p)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--dtype", default="float32", help="compute dtype of embres models")
    p.add_argument(
        "--limit", type=positive_int, help="use the first N pairs/rows of each dataset (quick)"
    )
    p.add_argument("--speed-texts", type=positive_int, default=512, help="sentences timed by speed")
    p.add_argument(
        "--curves",
        nargs="+",
        default=[],
        metavar="JSONL",
        help="metrics JSONL files to plot as training curves",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help=f"show tracebacks: of a mistake (else one line) and of failed tasks (also "
        f"${cli.VERBOSE_ENV}=1)",
    )
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses the command line (see the module docstring); a mistake exits with status 2."""
    p = build_parser()
    args = p.parse_args(argv)
    if not args.compare and not args.model:
        p.error("give --model (one or more) or --compare DIR ...")
    if args.compare and args.model:
        p.error("give --model (evaluate) or --compare (merge reports), not both")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks and not args.compare:
        p.error(f"--tasks {args.tasks!r} names no task; expected one or more of {','.join(TASKS)}")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        p.error(f"unknown tasks {unknown}; expected some of {sorted(TASKS)}")
    args.task_list = tasks
    return args


def out_problem(out: str) -> str | None:
    """Why --out cannot hold a report (a file, on a read-only file system, ...), or None."""
    return cli.writable_problem(out, f"--out {out}")


def curves_problems(paths: Sequence[str]) -> list[str]:
    """One line per --curves file that is missing or not JSON lines (found before evaluating)."""
    problems = []
    for path in paths:
        try:
            read_jsonl(path)
        except (OSError, ValueError) as e:
            problems.append(f"--curves {cli.one_line(e)}")
    return problems


def check_inputs(args: argparse.Namespace) -> None:
    """Everything cheap to check before evaluating or merging, all reported at once.

    Raises:
      cli.UsageError: listing every bad --model, --curves file and --out.
    """
    problems = check_specs(args.model, int8=args.int8) + curves_problems(args.curves)
    problems += [p for p in (out_problem(args.out),) if p]
    if problems:
        count = f"{len(problems)} problems: " if len(problems) > 1 else ""
        raise cli.UsageError(count + "; ".join(problems))


def task_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options every task is built from (see ``embres.evaluate.tasks``)."""
    return {
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


def announce_replacement(out: str) -> None:
    """Moves an earlier report in ``out`` aside and says so (one line)."""
    line = keep_previous(out)
    if line:
        print(line, flush=True)


def evaluate_all(args: argparse.Namespace, command: str) -> tuple[list[dict], dict[str, Path]]:
    """Evaluates every --model, rewriting the report after each; returns records and files.

    The rewrite after each model (report.json and .md, atomic; the plots at the end) is
    what keeps finished models when a later one fails or the run is stopped.
    """
    verbose = args.verbose or cli.verbose_requested([])  # [] : the environment alone

    def on_error(task: str, error: BaseException) -> None:
        if verbose:  # the record keeps type and message; the traceback goes to stderr
            traceback.print_exception(error, file=sys.stderr)

    options = task_options(args)
    records: list[dict[str, Any]] = []
    for index, spec in enumerate(args.model):
        records.append(evaluate_model(spec, args.task_list, on_error=on_error, **options))
        pending = args.model[index + 1 :]
        if pending:
            write_report(records, args.out, command=command, pending=pending, plots=False)
    written = write_report(records, args.out, curves=args.curves, command=command)
    return records, written


def failure_summary(records: Sequence[dict[str, Any]], out: str) -> str | None:
    """One line naming every failed task (``model · task (Type)``), or None."""
    failed = [
        f"{r['name']} · {task} ({e.get('type', 'Error')})"
        for r in records
        for task, e in r.get("errors", {}).items()
    ]
    if not failed:
        return None
    return (
        f"{len(failed)} task(s) failed: {'; '.join(failed)}; the report in {out}/ has the "
        "messages (--verbose for tracebacks)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the exit status (0 ok, 1 a task failed; see the docstring).

    A mistake in the arguments raises (``cli.UsageError``, ``FileNotFoundError``, ...);
    :func:`run` turns it into one stderr line and exit status 2.
    """
    args = parse_args(argv)
    command = "python -m embres.evaluate " + shlex.join(sys.argv[1:] if argv is None else argv)
    check_inputs(args)
    if args.compare:
        records = merge_records(args.compare)  # every folder is read before --out is touched
        curves = report_curves(args.compare) + list(args.curves)
        announce_replacement(args.out)
        written = write_report(
            records, args.out, curves=curves, title=COMPARE_TITLE, command=command
        )
    else:
        Path(args.out).mkdir(parents=True, exist_ok=True)  # a permission error shows now
        announce_replacement(args.out)
        records, written = evaluate_all(args, command)
    for kind, path in written.items():
        print(f"wrote {kind}: {path}")
    # The report up to its first section: the table, and why any plot is missing.
    print(written["markdown"].read_text().split("\n## ")[0].rstrip(), flush=True)
    summary = failure_summary(records, args.out) if not args.compare else None
    if summary:
        print(f"{PROG}: error: {summary}", file=sys.stderr, flush=True)
        return TASK_FAILED
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    """:func:`main` with a user's mistake as one stderr line and exit status 2 (embres.cli)."""
    return cli.run(lambda: main(argv), prog=PROG, argv=argv)


if __name__ == "__main__":
    sys.exit(run())
