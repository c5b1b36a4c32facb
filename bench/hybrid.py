"""Hybrid students: quality against cost for the teacher and every student, in one run.

    EMBRES_DATA_DIR=../shared/data python bench/hybrid.py --teacher all-MiniLM-L6-v2 \\
        --student static=runs/static_en --student conv=runs/hybrid_conv ... \\
        [--out bench/results/hybrid] [--repeats 5] [--sentences 5000] [--no-teacher]

Each ``--student NAME=PATH`` is an embres export directory or a training workdir holding
``export/``. For the teacher and each student the table gives: STS-B dev, SICK trial and
STSb-TR dev Spearman (x100); FLOPs per token of one forward at the mean token count of the
speed sentences (the teacher counts its special tokens, students tokenise without them, as
each does when it embeds) and the share of the teacher's; parameters, bytes held in memory
and bytes of the weight files on disk; CPU sentences/s on ``--sentences`` distinct STS-B
train+dev sentences (one untimed pass each, then the best of ``--repeats`` rounds that time
every model once: the machine's drift meets all models alike) and the ratio to the embres
teacher. The teacher's FLOPs are its family's ``flops_per_token(config, L)``; a
student's are its adapter's ``flops_per_token(params, L)``, and 0 for a table lookup
(static, projection, lowrank, table: the mean pooling is not counted). When
sentence-transformers is installed, its copy of the teacher is timed too, as a speed peer
(same weights, so quality and FLOPs are not repeated).

Writes ``hybrid.md``, ``hybrid.json`` and ``hybrid.png`` (Spearman against FLOPs per token,
log scale, STS-B dev and SICK trial panels, a line at 10% of the teacher's FLOPs; a static
student costs 0 FLOPs and is drawn at a floor value, marked as such) under ``--out``.
``--no-teacher`` leaves the teacher (and its peer) out: no teacher row, ratios or 10% line;
for quick trials of the script on small exports.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.static import quality, sentences, timed  # noqa: E402

PANELS = (("stsb_dev", "STS-B dev"), ("sick_trial", "SICK trial"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teacher", default="all-MiniLM-L6-v2", help="name or HF directory")
    parser.add_argument(
        "--student",
        action="append",
        default=[],
        type=student_spec,
        metavar="NAME=PATH",
        help="a student's label and its export (or workdir); repeat for each student",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "hybrid")
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed rounds over every model; the best counts"
    )
    parser.add_argument("--sentences", type=int, default=5000, help="sentences timed")
    parser.add_argument("--no-teacher", action="store_true", help="leave the teacher out")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.sentences < 1:
        parser.error("--repeats and --sentences must be positive")
    if not args.student and args.no_teacher:
        parser.error("nothing to measure: give --student NAME=PATH or drop --no-teacher")
    return args


def student_spec(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` as (name, path); argparse reports a malformed one."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=PATH")
    return name, Path(path)


def interleaved_speeds(encoders: list, texts: list[str], repeats: int) -> list[float]:
    """Sentences/s of each encoder: one full untimed pass each first (a bucketed model
    compiles each padded length it meets, and that belongs to no timed pass), then
    ``repeats`` rounds that time every encoder once, the best pass counting.

    Rounds rather than one model's passes after another: this machine's speed drifts by
    several percent over minutes, and a drift between the teacher's passes and a student's
    would move their ratio; within a round every model meets the same machine.
    """
    for encode in encoders:
        encode(texts)
    best = [float("inf")] * len(encoders)
    for _ in range(repeats):
        for i, encode in enumerate(encoders):
            best[i] = min(best[i], timed(encode, texts))
    return [len(texts) / b for b in best]


def _mean_tokens(ids: list[list[int]]) -> float:
    return sum(map(len, ids)) / max(len(ids), 1)


def _array_stats(arrays) -> tuple[int, int]:
    """(scalars, bytes) of an iterable of arrays."""
    arrays = list(arrays)
    return int(sum(a.size for a in arrays)), int(sum(a.nbytes for a in arrays))


def teacher_row(name: str, texts: list[str]) -> tuple[dict, Any]:
    """The embres teacher: (quality, FLOPs at its mean token count, sizes; its encode)."""
    import jax

    from embres.extract import EmbeddingExtractor

    extractor = EmbeddingExtractor(name)
    model = extractor.model
    encode = lambda t: extractor.extract_embeddings(t, progress=False)  # noqa: E731
    ids = model.tokenizer(texts, truncation=True, max_length=extractor.max_length)["input_ids"]
    mean = _mean_tokens(ids)
    scalars, nbytes = _array_stats(jax.tree.leaves(model.params))
    return {
        "model": f"teacher {Path(name).name}",
        "kind": model.family.__name__.rsplit(".", 1)[-1],
        **quality(encode),
        "mean_tokens": mean,
        "flops_per_token": int(model.family.flops_per_token(model.config, length=round(mean))),
        "params": scalars,
        "memory_bytes": nbytes,
        "disk_bytes": int(sum(f.stat().st_size for f in Path(model.path).glob("*.safetensors"))),
    }, encode


def peer_row(name: str, teacher: dict) -> tuple[dict, Any] | None:
    """sentence-transformers' copy of the teacher (row, encode), timed only; None (said why)
    if unavailable."""
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        print("sentence-transformers is not installed: no peer row")
        return None
    from embres.evaluate.models import load_sentence_transformer

    try:
        encode, info = load_sentence_transformer(name)
    except (FileNotFoundError, OSError, ValueError) as error:
        print(f"sentence-transformers cannot load {name!r}: no peer row ({error})")
        return None
    scalars, nbytes = _array_stats(t.detach().numpy() for t in info["params"].values())
    return {
        "model": f"sentence-transformers {Path(name).name}",
        "kind": "peer",
        "stsb_dev": None,
        "sick_trial": None,
        "stsb_tr_dev": None,
        "mean_tokens": teacher["mean_tokens"],
        "flops_per_token": teacher["flops_per_token"],
        "params": scalars,
        "memory_bytes": nbytes,
        "disk_bytes": info["disk_bytes"],
    }, encode


def student_row(name: str, path: Path, texts: list[str]) -> tuple[dict, Any]:
    """One student export: (quality, FLOPs at its mean token count, sizes; its encode)."""
    from embres import adapters
    from embres.export import load_student

    student = load_student(path)
    mean = _mean_tokens(student.token_ids(texts))
    adapter = None if student.kind == "static" else adapters.get(student.kind)
    count = getattr(adapter, "flops_per_token", None)  # a table lookup has none: 0
    scalars, nbytes = _array_stats(student.params.values())
    return {
        "model": name,
        "kind": student.kind,
        **quality(student.encode),
        "mean_tokens": mean,
        "flops_per_token": int(count(student.params, length=round(mean))) if count else 0,
        "params": scalars,
        "memory_bytes": nbytes,
        "disk_bytes": int(student.disk_bytes),
    }, student.encode


def add_ratios(rows: list[dict], teacher: dict | None) -> None:
    """Each row's share of the teacher's FLOPs (%) and speed ratio to it (None: no teacher)."""
    for row in rows:
        row["flops_pct_teacher"] = (
            100 * row["flops_per_token"] / teacher["flops_per_token"] if teacher else None
        )
        row["speed_vs_teacher"] = row["sent_per_s"] / teacher["sent_per_s"] if teacher else None


def _cell(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


COLUMNS = (  # header, row key, format
    ("model", "model", ""),
    ("kind", "kind", ""),
    ("STS-B dev", "stsb_dev", ".2f"),
    ("SICK trial", "sick_trial", ".2f"),
    ("STSb-TR dev", "stsb_tr_dev", ".2f"),
    ("tokens", "mean_tokens", ".1f"),
    ("FLOPs/token", "flops_per_token", ",d"),
    ("% teacher", "flops_pct_teacher", ".2f"),
    ("params", "params", ",d"),
    ("memory MB", "memory_mb", ".1f"),
    ("disk MB", "disk_mb", ".1f"),
    ("sent/s", "sent_per_s", ",.0f"),
    ("x teacher", "speed_vs_teacher", ".2f"),
)


def markdown(rows: list[dict], settings: dict) -> str:
    """The table as markdown, preceded by how it was measured."""
    lines = [
        "# Hybrid students: quality against cost",
        "",
        f"Speed: {settings['sentences']} STS-B train+dev sentences on CPU, best of "
        f"{settings['repeats']} interleaved rounds after a warm-up pass. FLOPs per token at each model's mean token "
        "count on those sentences (multiply-add = 2; 0 for a table lookup). Spearman x100.",
        "",
        "| " + " | ".join(h for h, _, _ in COLUMNS) + " |",
        "|" + "|".join("---" if k in ("model", "kind") else "---:" for _, k, _ in COLUMNS) + "|",
    ]
    for row in rows:
        shown = {**row, "memory_mb": row["memory_bytes"] / 1e6, "disk_mb": row["disk_bytes"] / 1e6}
        lines.append("| " + " | ".join(_cell(shown[k], f) for _, k, f in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], teacher: dict | None, path: Path) -> None:
    """Spearman against FLOPs per token (log x), one panel per dataset; every point named in
    one legend below (labels beside the points overlap where variants cluster)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["kind"] != "peer"]  # the peer repeats the teacher's point
    positive = [r["flops_per_token"] for r in rows if r["flops_per_token"] > 0]
    # 0 FLOPs has no place on a log axis: a decade below the cheapest contextual model.
    floor = 10 ** (math.floor(math.log10(min(positive))) - 1) if positive else 1e3
    colors = plt.get_cmap("tab20").colors  # up to 20 models, each its own colour
    fig, axes = plt.subplots(1, len(PANELS), figsize=(6 * len(PANELS), 5.5), squeeze=False)
    for ax, (key, title) in zip(axes[0], PANELS, strict=True):
        for i, r in enumerate(rows):
            x = r["flops_per_token"] or floor
            label = r["model"] if r["flops_per_token"] else f"{r['model']} (0 FLOPs, at floor)"
            marker = "s" if r is teacher else ("v" if not r["flops_per_token"] else "o")
            first = ax is axes[0][0]
            ax.scatter(
                [x],
                [r[key]],
                marker=marker,
                color=colors[i % len(colors)],
                label=label if first else None,
            )
        if teacher:
            line = "10% of the teacher's FLOPs" if ax is axes[0][0] else None
            ax.axvline(teacher["flops_per_token"] / 10, ls="--", c="grey", label=line)
        ax.set_xscale("log")
        ax.set_xlim(floor / 2, max([floor, *positive]) * 3)
        ax.margins(y=0.08)
        ax.set_xlabel(f"FLOPs per token (static: 0, drawn at {floor:.0e})")
        ax.set_ylabel("Spearman x100")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    fig.legend(loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.15, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    texts = sentences(args.sentences)
    built, teacher = [], None
    if not args.no_teacher:
        built.append(teacher_row(args.teacher, texts))
        teacher = built[0][0]
        peer = peer_row(args.teacher, teacher)
        built.extend([peer] if peer else [])
    for name, path in args.student:
        built.append(student_row(name, path, texts))
    rows = [row for row, _ in built]
    rates = interleaved_speeds([encode for _, encode in built], texts, args.repeats)
    for row, rate in zip(rows, rates, strict=True):
        row["sent_per_s"] = rate
    add_ratios(rows, teacher)
    settings = {
        "teacher": None if args.no_teacher else args.teacher,
        "sentences": len(texts),
        "repeats": args.repeats,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows, settings)
    print(table)
    (args.out / "hybrid.md").write_text(table)
    (args.out / "hybrid.json").write_text(json.dumps({**settings, "rows": rows}, indent=2) + "\n")
    plot(rows, teacher, args.out / "hybrid.png")
    print(f"wrote {args.out / 'hybrid.md'}, hybrid.json, hybrid.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
