"""Reports: ``report.json``, ``report.md`` (rows = models, columns = metrics) and PNG plots.

Plots (drawn by :mod:`embres.evaluate.plots`; their names are importable from here too):
``quality_vs_size.png`` and ``quality_vs_speed.png`` (the Pareto view, frontier drawn; at
least two models carry the values), ``sts_tr_vs_en.png`` (STS-B and STSb-TR side by side per
model, grouped bars; any model with both) and ``training_curves.png`` from metrics JSONL files
(one ``{"step": .., "loss": ..}`` per line). Axes carry units in their titles (MiB,
sentences/s, ms) and plain tick labels (20, 30, 60; no exponents); each point is labelled
where its label overlaps no other label, point or legend, or, when crowded, numbered with its
name in a legend beside the axes.

Example::

    write_report([record_a, record_b], "out/")           # records from evaluate_model
    compare(["runs/a", "runs/b"], "runs/compare")         # merge several report.json
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embres.evaluate.common import DataFormatError
from embres.evaluate.plots import (
    AXIS_TITLES,
    DPI,
    LABEL_DIRECTIONS,
    LABEL_DISTANCES,
    LABEL_FONTSIZE,
    LABEL_GID,
    LOG_LADDERS,
    MARKER_PT,
    axis_title,
    axis_value,
    labelled_scatter,
    language_figure,
    language_metrics,
    log_ticks,
    new_figure,
    pareto_front,
    place_labels,
    plain_number,
    plot_languages,
    plot_tradeoff,
    plot_training_curves,
    read_jsonl,
    short_name,
    short_names,
    tradeoff_figure,
)

__all__ = [
    "AXIS_TITLES",
    "DETAIL_NAMES",
    "DETAIL_PREFIXES",
    "DPI",
    "LABEL_DIRECTIONS",
    "LABEL_DISTANCES",
    "LABEL_FONTSIZE",
    "LABEL_GID",
    "LOG_LADDERS",
    "MARKER_PT",
    "SIZE_METRICS",
    "SIZE_NOTE",
    "SPEED_METRIC",
    "axis_title",
    "axis_value",
    "compare",
    "format_summary",
    "format_value",
    "headline_columns",
    "labelled_scatter",
    "language_figure",
    "language_metrics",
    "load_records",
    "log_ticks",
    "markdown",
    "new_figure",
    "pareto_front",
    "place_labels",
    "plain_number",
    "plot_languages",
    "plot_tradeoff",
    "plot_training_curves",
    "quality_metric",
    "read_jsonl",
    "shipped_sizes",
    "short_name",
    "short_names",
    "tradeoff_figure",
    "write_report",
]

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
    if plot_languages(records, out / "sts_tr_vs_en.png"):
        written["sts_tr_vs_en"] = out / "sts_tr_vs_en.png"
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
