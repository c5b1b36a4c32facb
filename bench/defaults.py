r"""Times every shipped config's default command and tabulates what it scored.

    python bench/defaults.py                          # lowrank, projection, hybrid
    python bench/defaults.py --configs projection --extra=--config.data.cache_rows=32768

Each config runs as a user runs it (``python -m embres.train --config=configs/<x>.py``) in a
fresh workdir under ``--root``, one after the other, with nothing else of ours running; the
wall time is the whole command (teacher loading, distillation, caching, training, every
evaluator, export). The scores are the run's own end-of-training evaluations (``summary``
lines of its ``metrics.jsonl``): STS-B dev, SICK trial, STSb-TR dev (Spearman x100, with
``EMBRES_DATA_DIR``), fidelity to the teacher on held-out text, sentences/s and table bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLUMNS = (
    ("sts/stsb_dev", "STS-B dev", "{:.2f}"),
    ("sts/sick_dev", "SICK trial", "{:.2f}"),
    ("sts/stsb_tr_dev", "STSb-TR dev", "{:.2f}"),
    ("fidelity/cosine", "fidelity", "{:.3f}"),
    ("speed/sentences_per_s", "sent/s", "{:,.0f}"),
    ("table_bytes", "table bytes", "{:,.0f}"),
)


def summaries(workdir: Path) -> dict[str, dict]:
    """The last ``summary`` line per model in ``metrics.jsonl``."""
    rows: dict[str, dict] = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "summary" in record:
            rows[record["summary"]] = record
    return rows


def cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    return "-" if value is None else fmt.format(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="lowrank,projection,hybrid")
    parser.add_argument("--root", default="runs/defaults", help="workdirs go under here")
    parser.add_argument("--extra", action="append", default=[], help="extra embres.train flag")
    args = parser.parse_args()
    results = []
    for name in args.configs.split(","):
        workdir = Path(args.root) / name
        if workdir.exists():
            raise SystemExit(f"{workdir} exists: a default run starts fresh; remove it first")
        command = [
            sys.executable,
            "-m",
            "embres.train",
            f"--config={REPO / 'configs' / name}.py",
            f"--workdir={workdir}",
            *args.extra,
        ]
        print("$", " ".join(command), flush=True)
        start = time.perf_counter()
        subprocess.run(command, check=True, env=os.environ)
        seconds = time.perf_counter() - start
        results.append((name, seconds, summaries(workdir)))
        print(f"== {name}: {seconds:.0f} s", flush=True)
    header = ["config", "wall s", "model"] + [label for _, label, _ in COLUMNS]
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, seconds, rows in results:
        for model in ("teacher", "student"):
            row = rows.get(model, {})
            cells = [cell(row, key, fmt) for key, _, fmt in COLUMNS]
            print("| " + " | ".join([name, f"{seconds:.0f}", model, *cells]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
