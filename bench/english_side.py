r"""Does the English side of the parallel files help the English students?

    python bench/english_side.py                       # every row, under runs/english_side
    python bench/english_side.py --rows hybrid,hybrid_parallel

The English sides of the decontaminated ``parallel/`` files (STS-B train, Tatoeba, news,
grammar book, PUD; never NTREX, the dev bitext set) are English text too: 165k distinct
sentences against the 14,404 STS train sentences ``configs/hybrid.py`` distils on and the
25k lines of ``text/en.txt``. Each row is one ``python -m embres.train`` command (printed),
run in its own workdir under ``--root`` as a user runs it; the English text is written once
to ``<root>/en_parallel.txt`` in a seeded shuffled order, so that ``config.data.cache_rows``
(the first N lines) is a uniform sample of it. A row whose workdir holds a finished run is
read, not rerun. Columns as ``bench/defaults.py`` (dev splits, Spearman x100).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import defaults  # bench/defaults.py: the same summary lines and columns
import language  # bench/language.py: the evaluation sentences a pair must not hold

REPO = Path(__file__).resolve().parents[1]
PARALLEL = ("en_tr_stsb_train", "en_tr_tatoeba", "en_tr_news", "en_tr_gb", "en_tr_pud")
SAMPLE = 40_000  # lines of the parallel English text a parallel row embeds (cache_rows)
ROWS = {  # name -> (config, extra flags; {text} is the parallel English file)
    "projection": ("projection", []),
    "projection_en_txt": ("projection", ["--config.data.source=text:$EMBRES_DATA_DIR/text/en.txt"]),
    "projection_parallel": (
        "projection",
        ["--config.data.source=text:{text}", f"--config.data.cache_rows={SAMPLE}"],
    ),
    "hybrid": ("hybrid", []),
    "hybrid_parallel": (
        "hybrid",
        ["--config.data.source=text:{text}", f"--config.data.cache_rows={SAMPLE}"],
    ),
}


def write_text(path: Path, data_dir: Path, seed: int = 0) -> int:
    """The distinct English sentences of the parallel files, shuffled; returns the count."""
    exclude = language.evaluation_sentences()
    seen: dict[str, None] = {}
    for name in PARALLEL:
        lines = (data_dir / "parallel" / f"{name}.tsv").read_text(encoding="utf-8").splitlines()
        for line in lines[1:]:
            if line.strip() and not language.held_out(line, exclude):
                seen.setdefault(line.split("\t")[0].strip(), None)
    sentences = [s for s in seen if s]
    random.Random(seed).shuffle(sentences)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    return len(sentences)


def finished(workdir: Path) -> bool:
    """Whether ``workdir`` holds a run that reached its final evaluation."""
    metrics = workdir / "metrics.jsonl"
    return metrics.exists() and "student" in defaults.summaries(workdir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"of {list(ROWS)}")
    parser.add_argument("--root", default="runs/english_side", help="workdirs go under here")
    args = parser.parse_args()
    root = Path(args.root).resolve()
    data_dir = Path(os.environ.get("EMBRES_DATA_DIR", REPO.parent / "shared" / "data"))
    text = root / "en_parallel.txt"
    if not text.exists():
        print(f"{text}: {write_text(text, data_dir):,} English sentences", flush=True)
    results = []
    for name in args.rows.split(","):
        config, extra = ROWS[name]
        workdir = root / name
        flags = [os.path.expandvars(f.format(text=text)) for f in extra]
        command = [sys.executable, "-m", "embres.train", f"--config=configs/{config}.py",
                   f"--workdir={workdir}", *flags]  # fmt: skip
        print("$", " ".join(command), flush=True)
        seconds = None
        if not finished(workdir):
            start = time.perf_counter()
            subprocess.run(command, check=True, cwd=REPO, env=os.environ)
            seconds = time.perf_counter() - start
        results.append((name, seconds, defaults.summaries(workdir)))
        print(f"== {name}: {seconds or 0:.0f} s", flush=True)
    header = ["row", "wall s", "model"] + [label for _, label, _ in defaults.COLUMNS]
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, seconds, rows in results:
        row = rows.get("student", {})
        cells = [defaults.cell(row, key, fmt) for key, _, fmt in defaults.COLUMNS]
        wall = "-" if seconds is None else f"{seconds:.0f}"
        print("| " + " | ".join([name, wall, "student", *cells]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
