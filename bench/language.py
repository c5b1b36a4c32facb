r"""The language ablations: each row one ``embres.train`` command, run in order, tabulated.

    python bench/language.py                       # every row (about an hour on 2 cores)
    python bench/language.py --rows static,transfer --root runs/tr

Every row is a command a user runs (printed before it runs), in its own workdir under
``--root``; rows that start from another row's export (the second stage) run after it. The
teacher's vectors of the parallel sentences are shared through one cache folder
(``--config.data.cache_dir``), so only the first row pays for them; the wall time of each
row is the whole command (the teacher's own evaluations, the same in every row, are kept in
``<root>/teacher_evals`` after the first: ``EMBRES_TEACHER_EVAL_CACHE``). The numbers are the run's own end-of-training evaluations
(``summary`` lines of its ``metrics.jsonl``; dev splits): STSb-TR dev, STS-B dev, SICK
trial (Spearman x100), bitext recall@1 TR->EN / EN->TR on STS-B dev <-> STSb-TR dev, the
Turkish sentiment probe's accuracy, and the table's bytes. A row whose workdir already
holds a finished run is read, not rerun (delete the folder to rerun it).

Writes ``--out`` (JSON, default ``docs/results/language.json``) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import defaults  # bench/defaults.py: the same summary lines

REPO = Path(__file__).resolve().parents[1]
STATIC = "configs/language_static.py"
TRANSFER = "configs/language_transfer.py"
FINETUNE = "configs/language_finetune.py"
NO_DICT = "--config.objective.dictionary="  # the rows that vary one thing from "parallel only"

# name -> (group, what changes, config[:args], extra flags, first-stage row or None)
ROWS = {
    "static": (
        "student",
        "static, bilingual vocab, FVT, pairs + dictionary at 0.1 (default)",
        STATIC,
        [],
        None,
    ),
    "data_parallel_only": ("data", "parallel pairs only", STATIC, [NO_DICT], None),
    "vocab_teacher": ("vocabulary", "teacher's", STATIC + ":vocab=teacher", [NO_DICT], None),
    "vocab_target": ("vocabulary", "Turkish only", STATIC + ":vocab=target", [NO_DICT], None),
    "vocab_trimmed": (
        "vocabulary",
        "trimmed teacher's",
        STATIC + ":vocab=trimmed",
        [NO_DICT],
        None,
    ),
    "init_random": ("initialisation", "random", STATIC + ":init=random", [NO_DICT], None),
    "init_teacher": (
        "initialisation",
        "teacher forward",
        STATIC + ":init=teacher",
        [NO_DICT],
        None,
    ),
    "init_dictionary": (
        "initialisation",
        "dictionary (+FVT)",
        STATIC + ":init=dictionary",
        ["--config.objective.dictionary_weight=0"],
        None,
    ),
    "static_finetuned": (
        "data",
        "+ STSb-TR train fine-tuning (second stage)",
        FINETUNE + ":init_from={root}/static",
        [],
        "static",
    ),
    "hybrid": ("student", "hybrid (conv mixer)", STATIC + ":adapter=hybrid", [], None),
    "transfer": ("student", "embedding-layer transfer", TRANSFER, [], None),
    "transfer_finetuned": (
        "student",
        "transfer + STSb-TR train fine-tuning",
        FINETUNE + ":init_from={root}/transfer",
        # a step runs the transformer forward and back on both sides of 32 pairs
        ["--config.total_steps=100", "--config.batch_size=32"],
        "transfer",
    ),
}
COLUMNS = (
    ("sts/stsb_tr_dev", "STSb-TR dev", "{:.2f}"),
    ("sts/stsb_dev", "STS-B dev", "{:.2f}"),
    ("sts/sick_dev", "SICK trial", "{:.2f}"),
    ("bitext/tr_to_en_r@1", "TR->EN R@1", "{:.3f}"),
    ("bitext/en_to_tr_r@1", "EN->TR R@1", "{:.3f}"),
    ("probe/accuracy", "TR sentiment acc.", "{:.3f}"),
    ("table_bytes", "table bytes", "{:,.0f}"),
)


def summaries(workdir: Path) -> dict[str, dict]:
    """The last ``summary`` line per model in ``metrics.jsonl`` ({} if the run never ended)."""
    return defaults.summaries(workdir) if (workdir / "metrics.jsonl").exists() else {}


def command(name: str, root: Path) -> list[str]:
    """The row's ``python -m embres.train`` command (``$EMBRES_DATA_DIR`` expanded)."""
    _, _, config, extra, _ = ROWS[name]
    config = config.format(root=root)
    flags = [os.path.expandvars(f) for f in extra]
    return [
        sys.executable,
        "-m",
        "embres.train",
        f"--config={config}",
        f"--workdir={root / name}",
        # the first stage's teacher vectors and distilled rows, shared by every such row
        *([f"--config.data.cache_dir={root / 'cache'}"] if ROWS[name][4] is None else []),
        *flags,
    ]


def probe_key(row: dict) -> str | None:
    return next((k for k in row if k.startswith("probe/") and "acc" in k), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated of {list(ROWS)}")
    parser.add_argument("--root", default="runs/tr", help="workdirs go under here")
    parser.add_argument("--out", default="docs/results/language.json")
    args = parser.parse_args()
    root = Path(args.root)
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; expected some of {list(ROWS)}")
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    for name in names:
        first = ROWS[name][4]
        if first and "student" not in summaries(root / first):
            raise SystemExit(f"row {name!r} starts from row {first!r}: run that one first")
        workdir = root / name
        done = summaries(workdir)
        if "student" not in done:
            cmd = command(name, root)
            print("$", " ".join(cmd), flush=True)
            start = time.perf_counter()
            # the teacher's own scores are the same in every row: computed once, kept on disk
            env = {"EMBRES_TEACHER_EVAL_CACHE": str(root / "teacher_evals"), **os.environ}
            subprocess.run(cmd, check=True, env=env)
            results[name] = {"seconds": round(time.perf_counter() - start, 1)}
            done = summaries(workdir)
        entry = results.setdefault(name, {})
        entry.update(
            {
                "group": ROWS[name][0],
                "setting": ROWS[name][1],
                "command": " ".join(["python"] + command(name, root)[1:]),
                "student": done.get("student", {}),
                "teacher": done.get("teacher", {}),
            }
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))
    header = ["group", "setting", "wall s"] + [label for _, label, _ in COLUMNS]
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in names:
        entry = results[name]
        row = dict(entry["student"])
        key = probe_key(row)
        if key:
            row["probe/accuracy"] = row[key]
        cells = [entry["group"], entry["setting"], f"{entry.get('seconds', float('nan')):.0f}"]
        cells += ["-" if row.get(k) is None else f.format(row[k]) for k, _, f in COLUMNS]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
