"""Merges bench/gpu.py's per-process results into one JSON file and prints the table.

``python bench/gpu_report.py PART.json ... --out bench/results/gpu.json``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load(paths: list[str]) -> list[dict]:
    """Each part's result; a part that failed or is unreadable is kept as a failed row."""
    rows = []
    for path in paths:
        try:
            rows.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as e:
            rows.append({"section": path, "failed": f"{type(e).__name__}: {e}"})
    return rows


def fmt(value, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[dict]) -> list[str]:
    """Markdown lines: one per measurement, with the ratio to its peer where there is one."""
    lines = ["| measurement | embres | peer | ratio |", "|---|---:|---:|---:|"]
    forward = {}
    e2e = {}
    for row in rows:
        if "failed" in row or "skipped" in row:
            why = row.get("failed") or row.get("skipped")
            what = row.get("shape") or row.get("impl") or ""
            lines.append(f"| {row['section']} {what} | not measured: {why} | | |")
        elif row["section"] == "matmul":
            lines.append(
                f"| bf16 matmul ceiling ({row['device']}) | "
                f"{row['bf16_matmul_flops'] / 1e12:.0f} TFLOP/s | | |"
            )
        elif row["section"] == "forward":
            forward.setdefault(row["shape"], {})[row["impl"]] = row
        elif row["section"] == "e2e":
            e2e[row["impl"]] = row
        elif row["section"] == "train":
            lines.append(
                f"| configs/lowrank.py training (batch {row['batch']}) | "
                f"{row['steps_per_s']:.2f} steps/s, MFU {fmt(row.get('mfu'), '.1%')} | | |"
            )
    for shape, impls in forward.items():
        ours, hf = impls.get("embres"), impls.get("hf")
        for attention in ("eager", "sdpa"):
            peer = (hf or {}).get(f"{attention}_tokens_per_s")
            if ours is None:
                continue
            ratio = f"{ours['tokens_per_s'] / peer:.2f}x" if peer else "-"
            lines.append(
                f"| {shape} forward, tokens/s (MFU) vs HF {attention} | "
                f"{fmt(ours['tokens_per_s'])} ({ours['mfu']:.0%}) | "
                f"{fmt(peer)} ({fmt((hf or {}).get(f'{attention}_mfu'), '.0%')}) | {ratio} |"
            )
    if "embres" in e2e:
        ours, peer = e2e["embres"]["sentences_per_s"], e2e.get("st", {}).get("sentences_per_s")
        ratio = f"{ours / peer:.2f}x" if peer else "-"
        lines.append(
            f"| all-MiniLM-L6-v2 end to end, sentences/s vs sentence-transformers | "
            f"{fmt(ours)} | {fmt(peer)} | {ratio} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("parts", nargs="+")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    rows = load(args.parts)
    Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(table(rows)))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
