"""Static students: embres vs Model2Vec on the same teacher, in one run.

    EMBRES_DATA_DIR=../shared/data python bench/static.py [--dims 64,128,256] [--repeats 3]
        [--trained DIR ...] [--json out.json]

For each width, the two distillations run alternately ``--repeats`` times (Model2Vec first,
then embres, the order swapped every round) on the same teacher, the same PCA width and
the same device (CPU); the table shows each one's best time and embres's ratio to
Model2Vec's, and the per-run times are printed above it (embres's first call in the process
includes compiling the teacher's forward, later calls reuse it). Both libraries are
imported before any clock starts, so neither pays the other's imports. Then: STS-B dev,
STSb-TR dev and SICK trial Spearman (x100), encoding sentences/s on 5,000 STS-B sentences
and embres's ratio to Model2Vec, and the bytes of each saved table on disk
(``model.safetensors``: float16 for both by default). ``--trained`` adds static students
trained with ``embres.train`` (their export directories or workdirs), evaluated at every
width they support (Matryoshka tables are truncated).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
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
    best = min(timed(encode, texts) for _ in range(repeats))
    return len(texts) / best


def timed(fn, texts) -> float:
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
    """Rows for a trained export (static, Matryoshka-truncated, or hybrid).

    A static table's disk bytes are those of its (truncated) table saved as embres saves
    today (float16), whatever the export on disk holds.
    """
    from embres import ModelAdapter
    from embres.export import ADAPTER_FILE, export_static, load_student

    export = path / "export" if (path / "export").is_dir() else path
    name = export.parent.name if export.name == "export" else export.name
    rows = []
    if (export / ADAPTER_FILE).exists():
        from embres import adapters
        from embres.models import load_model

        student = load_student(export)
        encode, params = student.encode, student.params
        flops = adapters.get(student.kind).flops_per_token(params, length=16)
        model = load_model(teacher, with_tokenizer=False)
        teacher_flops = model.family.flops_per_token(model.config, length=16)
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
                "disk_bytes": int(student.disk_bytes),  # adapter.safetensors: what embres reads
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
        save = lambda out, m=trained, d=d: export_static(m.table[:, :d], m.tokenizer, out)  # noqa: E731
        rows.append(
            {
                "model": f"embres trained ({name})",
                "dims": d,
                "distill_s": float("nan"),
                **quality(encode),
                "sent_per_s": rate(encode, texts),
                "disk_bytes": disk_bytes(save),
            }
        )
    return rows


def disk_bytes(save) -> int:
    """Bytes of ``model.safetensors`` that ``save(directory)`` writes (the table on disk)."""
    with tempfile.TemporaryDirectory() as tmp:
        save(tmp)
        return (Path(tmp) / "model.safetensors").stat().st_size


def warm_imports() -> None:
    """Imports what embres's distillation imports lazily and starts JAX's backend, so the
    first timed call pays no more imports than Model2Vec's (torch and transformers are
    imported with ``model2vec.distill``)."""
    import jax

    import embres.distill  # noqa: F401  (flax and the model ports)

    jax.devices()


def timed_distillations(teacher: str, teacher_path: str, d: int, repeats: int) -> dict:
    """Both distillations at width ``d``, alternated ``repeats`` times (the order swapped
    every round, so a drift in machine load falls on both): their models and every time."""
    from model2vec.distill import distill

    from embres import ModelAdapter

    runs = {
        "Model2Vec distill": lambda: distill(model_name=teacher_path, pca_dims=d, device="cpu"),
        "embres corpus-free": lambda: ModelAdapter(teacher, target_dim=d),
    }
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    models = {}
    for round_ in range(repeats):
        for name in runs if round_ % 2 == 0 else reversed(list(runs)):
            start = time.perf_counter()
            models[name] = runs[name]()
            seconds[name].append(time.perf_counter() - start)
    for name, times in seconds.items():
        print(f"{d:4d}-d {name}: distillation s per run {', '.join(f'{t:.2f}' for t in times)}")
    return {"models": models, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher", default="all-MiniLM-L6-v2")
    parser.add_argument("--dims", default="64,128,256")
    parser.add_argument("--repeats", type=int, default=3, help="distillations per library")
    parser.add_argument("--trained", nargs="*", default=[], help="static exports to add")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    dims = [int(d) for d in args.dims.split(",")]

    from embres.models import resolve

    warm_imports()
    texts = sentences()
    teacher_path = str(resolve(args.teacher))
    rows = []
    for d in dims:
        result = timed_distillations(args.teacher, teacher_path, d, args.repeats)
        m2v, ours = result["models"]["Model2Vec distill"], result["models"]["embres corpus-free"]
        for name, encode, save in (
            ("Model2Vec distill", m2v.encode, m2v.save_pretrained),
            ("embres corpus-free", ours.adapt, ours.save),
        ):
            times = result["seconds"][name]
            rows.append(
                {
                    "model": name,
                    "dims": d,
                    "distill_s": min(times),
                    "distill_runs_s": times,
                    **quality(encode),
                    "sent_per_s": rate(encode, texts),
                    "disk_bytes": disk_bytes(save),
                }
            )
    for path in args.trained:
        rows.extend(trained_rows(Path(path), dims, texts, args.teacher))
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def print_table(rows: list[dict]) -> None:
    """One line per model, with ratios against Model2Vec at the same width."""
    base = {r["dims"]: r for r in rows if r["model"] == "Model2Vec distill"}
    rows = [r for r in rows if r["dims"] in base]
    print(
        f"{'model':34} {'dims':>4} {'distill s':>9} {'x M2V':>6} {'STS-B dev':>9} {'vs M2V':>7} "
        f"{'STSb-TR dev':>11} {'SICK trial':>10} {'sent/s':>8} {'x M2V':>6} {'disk MB':>8} "
        f"{'x M2V':>6}"
    )
    for r in rows:
        b = base[r["dims"]]
        distill = (  # trained students were not distilled here: blank, not "nan"
            f"{r['distill_s']:9.2f} {r['distill_s'] / b['distill_s']:5.2f}x"
            if r["distill_s"] == r["distill_s"]
            else f"{'':9} {'':6}"
        )
        print(
            f"{r['model']:34} {r['dims']:4d} {distill} {r['stsb_dev']:9.2f} "
            f"{r['stsb_dev'] - b['stsb_dev']:+7.2f} {r['stsb_tr_dev']:11.2f} {r['sick_trial']:10.2f} "
            f"{r['sent_per_s']:8.0f} {r['sent_per_s'] / b['sent_per_s']:5.2f}x "
            f"{r['disk_bytes'] / 1e6:8.1f} {r['disk_bytes'] / b['disk_bytes']:5.2f}x"
        )


if __name__ == "__main__":
    main()
