"""Reports: ``report.json``, ``report.md`` (rows = models, columns = metrics) and PNG plots.

Plots (matplotlib, Agg backend), written when at least two models carry the values:
``quality_vs_size.png`` and ``quality_vs_speed.png`` (the Pareto view, frontier drawn), and
``training_curves.png`` from metrics JSONL files (one ``{"step": .., "loss": ..}`` per line).

Example::

    write_report([record_a, record_b], "out/")           # records from evaluate_model
    compare(["runs/a", "runs/b"], "runs/compare")         # merge several report.json
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embres.evaluate.common import DataFormatError

# The size axis of quality_vs_size.png: the first of these the models carry. Resident bytes
# are what the loaded model holds in memory (an int8 export dequantised on load counts as
# float32); disk bytes, its weight files, stay a headline column. memory/param_bytes is the
# resident size under its old name, so reports written before the rename still plot.
SIZE_METRICS = ("memory/resident_bytes", "memory/table_bytes", "memory/param_bytes")
SPEED_METRIC = "speed/sentences_per_s"
# Breakdown metrics kept out of the headline table (they stay in report.json and the details).
DETAIL_PREFIXES = (
    "memory/resident_bytes_",
    "memory/param_bytes_",
    "memory/device_",
    "speed/batch_size",
)
DETAIL_NAMES = ("memory/table_dtype", "memory/table_dim", "memory/vocab_size", "memory/param_count")
SIZE_NOTE = (
    "resident_bytes: the arrays the loaded model holds in memory; disk_bytes: the weight files "
    "it was read from (an int8 export is small on disk but may hold a float32 table)."
)


def format_value(name: str, value: Any) -> str:
    """A table cell: bytes in MiB, large numbers with separators, others to 4 digits."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) and not name.endswith("_bytes") and "_bytes_" not in name:
        return f"{value:,}"
    if name.endswith("_bytes") or "_bytes_" in name:
        return f"{value / 2**20:,.1f} MiB"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def headline_columns(records: Sequence[dict[str, Any]]) -> list[str]:
    """Metric names in first-seen order, without the breakdown details."""
    columns: dict[str, None] = {}
    for record in records:
        for name in record["metrics"]:
            if not name.startswith(DETAIL_PREFIXES) and name not in DETAIL_NAMES:
                columns.setdefault(name, None)
    return list(columns)


def markdown(records: Sequence[dict[str, Any]], title: str = "embres evaluation") -> str:
    """The report as markdown: headline table, skipped tasks with reasons, full details."""
    columns = headline_columns(records)
    lines = [
        f"# {title}",
        "",
        "| model | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for record in records:
        cells = [
            format_value(c, record["metrics"][c]) if c in record["metrics"] else "–"
            for c in columns
        ]
        lines.append(f"| {record['name']} | " + " | ".join(cells) + " |")
    if any("memory/disk_bytes" in r["metrics"] for r in records):
        lines += ["", SIZE_NOTE]
    if len(records) > 1 and any("memory/peak_rss_bytes" in r["metrics"] for r in records):
        lines += [
            "",
            "peak_rss is the process high-water mark: models measured in one run share it.",
        ]
    skipped = [(r["name"], k, v) for r in records for k, v in r.get("skipped", {}).items()]
    if skipped:
        lines += ["", "## Skipped", ""]
        lines += [f"- {name} · {metric}: {reason}" for name, metric, reason in skipped]
    lines += ["", "## Details", ""]
    for record in records:
        info = ", ".join(f"{k}={v}" for k, v in record.get("info", {}).items())
        lines.append(f"- **{record['name']}** ({info})")
        lines += [f"  - {k}: {format_value(k, v)}" for k, v in record["metrics"].items()]
    return "\n".join(lines) + "\n"


def quality_metric(records: Sequence[dict[str, Any]]) -> str | None:
    """The quality axis: ``sts/stsb_dev`` if present, else the first sts, probe or retrieval."""
    names = [n for r in records for n in r["metrics"]]
    if "sts/stsb_dev" in names:
        return "sts/stsb_dev"
    for prefix in ("sts/", "probe/", "retrieval/"):
        found = [n for n in names if n.startswith(prefix) and not n.endswith("_macro_f1")]
        if found:
            return found[0]
    return None


def pareto_front(points: Sequence[tuple[float, float]], smaller_x_better: bool) -> list[int]:
    """Indices of points not dominated in (x, quality), ordered along x."""
    order = sorted(range(len(points)), key=lambda i: points[i][0], reverse=not smaller_x_better)
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return sorted(front, key=lambda i: points[i][0])


def plot_tradeoff(
    records: Sequence[dict[str, Any]],
    x_metric: str,
    y_metric: str,
    path: Path,
    smaller_x_better: bool,
) -> Path | None:
    """Scatter of ``y_metric`` against ``x_metric`` (log x) with the Pareto frontier.

    Returns the path, or None when fewer than two models have both values.
    """
    rows = [r for r in records if x_metric in r["metrics"] and y_metric in r["metrics"]]
    if len(rows) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    in_mib = "bytes" in x_metric
    points = [
        (float(r["metrics"][x_metric]) / (2**20 if in_mib else 1), float(r["metrics"][y_metric]))
        for r in rows
    ]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    ax.scatter([p[0] for p in points], [p[1] for p in points], zorder=3)
    seen: dict[tuple[float, float], int] = {}
    for r, (x, y) in zip(rows, points, strict=True):
        spot = (round(math.log10(max(x, 1e-12)), 1), round(y, 1))  # labels of equal points stack
        stacked = seen[spot] = seen.get(spot, -1) + 1
        ax.annotate(
            short_name(r["name"]),
            (x, y),
            textcoords="offset points",
            xytext=(5, 4 - 11 * stacked),
            fontsize=8,
        )
    front = pareto_front(points, smaller_x_better)
    ax.plot(
        [points[i][0] for i in front],
        [points[i][1] for i in front],
        "--",
        color="gray",
        label="Pareto frontier",
    )
    ax.set_xscale("log")
    ax.set_xlabel(x_metric.replace("_bytes", "") + " (MiB)" if in_mib else x_metric)
    ax.set_ylabel(y_metric)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def short_name(name: str) -> str:
    """A plot label: the last path component, keeping a ``kind:`` prefix."""
    prefix, sep, target = name.rpartition(":")
    return f"{prefix}{sep}{Path(target).name or target}"


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a metrics JSONL file; a bad line raises naming file and line."""
    rows = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{path}:{lineno}: not a JSON object ({e.msg})") from e
        if not isinstance(row, dict):
            raise DataFormatError(f"{path}:{lineno}: expected a JSON object, got {row!r}")
        rows.append(row)
    return rows


def plot_training_curves(
    jsonl_paths: Sequence[str | os.PathLike],
    path: str | os.PathLike,
    keys: Sequence[str] | None = None,
) -> Path:
    """One panel per numeric metric (default: all but ``step``) against step; one line per file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {str(p): [r for r in read_jsonl(p) if "step" in r] for p in jsonl_paths}
    if keys is None:
        found: dict[str, None] = {}
        for rows in runs.values():
            for row in rows:
                for k, v in row.items():
                    if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                        found.setdefault(k, None)
        keys = list(found)
    if not keys:
        raise ValueError(f"no numeric metrics with a 'step' in {list(runs)}")
    fig, axes = plt.subplots(len(keys), 1, figsize=(6, 2.5 * len(keys)), dpi=100, squeeze=False)
    for ax, key in zip(axes[:, 0], keys, strict=True):
        for label, rows in runs.items():
            pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if pts:
                ax.plot(*zip(*pts, strict=True), label=Path(label).parent.name or label)
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def write_report(
    records: Sequence[dict[str, Any]],
    out_dir: str | os.PathLike,
    curves: Sequence[str | os.PathLike] = (),
    title: str = "embres evaluation",
    command: str | None = None,
) -> dict[str, Path]:
    """Writes report.json, report.md and the plots that apply; returns what was written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": command,
        "models": list(records),
    }
    written = {"json": out / "report.json", "markdown": out / "report.md"}
    written["json"].write_text(json.dumps(payload, indent=2, default=str) + "\n")
    written["markdown"].write_text(markdown(records, title))
    quality = quality_metric(records)
    if quality is not None:
        size = next((m for m in SIZE_METRICS if any(m in r["metrics"] for r in records)), None)
        if size and plot_tradeoff(
            shipped_sizes(records, size), size, quality, out / "quality_vs_size.png", True
        ):
            written["quality_vs_size"] = out / "quality_vs_size.png"
        if plot_tradeoff(records, SPEED_METRIC, quality, out / "quality_vs_speed.png", False):
            written["quality_vs_speed"] = out / "quality_vs_speed.png"
    if curves:
        written["training_curves"] = plot_training_curves(curves, out / "training_curves.png")
    return written


def shipped_sizes(records: Sequence[dict[str, Any]], size: str) -> list[dict[str, Any]]:
    """Records whose ``size`` is the stored form: a compressed teacher ships its factors.

    A low-rank export is measured as the merged model (what loads everywhere), but what a
    user ships is the factored form, so the size axis uses ``factored_*`` when present.
    """
    factored = size.replace("memory/", "memory/factored_")
    out = []
    for r in records:
        if factored in r["metrics"]:
            r = {**r, "metrics": {**r["metrics"], size: r["metrics"][factored]}}
        out.append(r)
    return out


def load_records(report_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The model records of ``<report_dir>/report.json`` (or of that file itself)."""
    path = Path(report_dir)
    path = path / "report.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"expected a report at {path}; run python -m embres.evaluate first")
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise DataFormatError(f"{path}: expected {{'models': [...]}} as written by write_report")
    return data["models"]


def compare(
    report_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, command: str | None = None
) -> dict[str, Path]:
    """Merges several reports into one table and one set of plots under ``out_dir``.

    A metrics JSONL next to a report (``metrics.jsonl``) adds its run to the training curves.
    """
    records = []
    for directory in report_dirs:
        for record in load_records(directory):
            record = dict(record)
            if sum(r["name"] == record["name"] for r in records):  # same model in two runs
                record["name"] = f"{record['name']} ({Path(directory).name})"
            records.append(record)
    curves = [Path(d, "metrics.jsonl") for d in report_dirs if Path(d, "metrics.jsonl").is_file()]
    return write_report(records, out_dir, curves=curves, title="embres comparison", command=command)


def format_summary(rows: dict[str, dict]) -> str:
    """A markdown table, one column per model, then the table compression."""
    keys = sorted({k for r in rows.values() for k, v in r.items() if isinstance(v, (int, float))})
    lines = ["| metric | teacher | student |", "|---|---|---|"]
    for k in keys:
        cells = []
        for name in ("teacher", "student"):
            v = rows[name].get(k)
            if not isinstance(v, (int, float)):
                cells.append("-")
            else:
                cells.append(f"{v:,.0f}" if "bytes" in k else f"{v:.4g}")
        lines.append(f"| {k} | {cells[0]} | {cells[1]} |")
    t, s = rows["teacher"].get("table_bytes"), rows["student"].get("table_bytes")
    if t and s:
        lines.append(f"\ntable compression: {t / s:.2f}x ({t:,} -> {s:,} bytes)")
    return "\n".join(lines)
