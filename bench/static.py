"""Static students: embres vs Model2Vec on the same teacher, in one run.

    EMBRES_DATA_DIR=../shared/data python bench/static.py [--dims 64,128,256] [--trained DIR ...]

For each width: distillation time, STS-B dev, STSb-TR dev and SICK trial Spearman (x100), encoding
sentences/s on 5,000 STS-B sentences, and table bytes; then a table with ratios against
Model2Vec at the same width. ``--trained`` adds static students trained with
``embres.train`` (their export directories or workdirs), evaluated at every width they
support (Matryoshka tables are truncated).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def sentences(limit: int = 5000) -> list[str]:
    data = Path(os.environ.get("EMBRES_DATA_DIR", "../shared/data")) / "stsb"
    seen: dict[str, None] = {}
    for name in ("sts-train.csv", "sts-dev.csv"):
        for line in (data / name).read_text(encoding="utf-8").splitlines():
            for s in line.split("\t")[5:7]:
                seen.setdefault(s, None)
    return list(seen)[:limit]


def rate(encode, texts, repeats: int = 3) -> float:
    encode(texts[:64])  # warm-up
    best = min(_timed(encode, texts) for _ in range(repeats))
    return len(texts) / best


def _timed(fn, texts) -> float:
    start = time.perf_counter()
    fn(texts)
    return time.perf_counter() - start


def quality(encode) -> dict[str, float]:
    from embres.evaluate.sts import evaluate_sts

    return {
        "stsb_dev": evaluate_sts(encode, "stsb", "dev"),
        "stsb_tr_dev": evaluate_sts(encode, "stsb_tr", "dev"),
        "sick_trial": evaluate_sts(encode, "sick", "dev"),
    }


def trained_rows(path: Path, dims: list[int], texts: list[str], teacher: str) -> list[dict]:
    """Rows for a trained export (static, Matryoshka-truncated, or hybrid)."""
    from embres import ModelAdapter
    from embres.export import ADAPTER_FILE, load_student

    export = path / "export" if (path / "export").is_dir() else path
    name = export.parent.name if export.name == "export" else export.name
    rows = []
    if (export / ADAPTER_FILE).exists():
        from embres.adapters import hybrid
        from embres.models import load_model

        student = load_student(export)
        encode, params = student.encode, student.params
        flops = hybrid.flops_per_token(params)
        teacher_flops = hybrid.teacher_flops_per_token(load_model(teacher).config, length=16)
        print(
            f"hybrid {export}: {flops:,} FLOPs/token vs teacher {teacher_flops:,} at 16 tokens "
            f"({100 * flops / teacher_flops:.2f}%)"
        )
        rows.append(
            {
                "model": f"embres hybrid ({name})",
                "dims": int(params["table"].shape[1]),
                "distill_s": float("nan"),
                **quality(encode),
                "sent_per_s": rate(encode, texts),
                "table_bytes": int(sum(v.nbytes for v in params.values())),
                "flops_per_token": flops,
                "teacher_flops_per_token": teacher_flops,
            }
        )
        return rows
    trained = ModelAdapter.load(export)
    for d in dims:
        if d > trained.target_dim:
            continue
        encode = lambda t, m=trained, d=d: m.adapt(t, dims=d)  # noqa: E731
        rows.append(
            {
                "model": f"embres trained ({name})",
                "dims": d,
                "distill_s": float("nan"),
                **quality(encode),
                "sent_per_s": rate(encode, texts),
                "table_bytes": int(trained.table[:, :d].nbytes),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher", default="all-MiniLM-L6-v2")
    parser.add_argument("--dims", default="64,128,256")
    parser.add_argument("--trained", nargs="*", default=[], help="static exports to add")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    dims = [int(d) for d in args.dims.split(",")]

    from model2vec.distill import distill

    from embres import ModelAdapter
    from embres.models import resolve

    texts = sentences()
    teacher_path = str(resolve(args.teacher))
    rows = []
    for d in dims:
        start = time.perf_counter()
        m2v = distill(model_name=teacher_path, pca_dims=d, device="cpu")
        m2v_seconds = time.perf_counter() - start
        encode = lambda t, m=m2v: m.encode(t)  # noqa: E731
        rows.append(
            {
                "model": "Model2Vec distill",
                "dims": d,
                "distill_s": m2v_seconds,
                **quality(encode),
                "sent_per_s": rate(encode, texts),
                "table_bytes": int(m2v.embedding.nbytes),
            }
        )
        start = time.perf_counter()
        ours = ModelAdapter(args.teacher, target_dim=d)
        ours_seconds = time.perf_counter() - start
        rows.append(
            {
                "model": "embres corpus-free",
                "dims": d,
                "distill_s": ours_seconds,
                **quality(ours.adapt),
                "sent_per_s": rate(ours.adapt, texts),
                "table_bytes": int(ours.table.nbytes),
            }
        )
    for path in args.trained:
        rows.extend(trained_rows(Path(path), dims, texts, args.teacher))

    base = {r["dims"]: r for r in rows if r["model"] == "Model2Vec distill"}
    rows = [r for r in rows if r["dims"] in base]
    header = (
        f"{'model':34} {'dims':>4} {'distill s':>9} {'STS-B dev':>9} {'vs M2V':>7} "
        f"{'STSb-TR dev':>11} {'SICK trial':>10} {'sent/s':>8} {'x M2V':>6} {'table MB':>8}"
    )
    print(header)
    for r in rows:
        b = base[r["dims"]]
        print(
            f"{r['model']:34} {r['dims']:4d} {r['distill_s']:9.1f} {r['stsb_dev']:9.2f} "
            f"{r['stsb_dev'] - b['stsb_dev']:+7.2f} {r['stsb_tr_dev']:11.2f} {r['sick_trial']:10.2f} "
            f"{r['sent_per_s']:8.0f} {r['sent_per_s'] / b['sent_per_s']:5.2f}x "
            f"{r['table_bytes'] / 1e6:8.1f}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
