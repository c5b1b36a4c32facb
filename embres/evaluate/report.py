"""Reports: ``report.json``, ``report.md`` (rows = models, columns = metrics) and PNG plots.

Plots (drawn by :mod:`embres.evaluate.plots`; their names are importable from here too):
``quality_vs_size.png`` and ``quality_vs_speed.png`` (the Pareto view, frontier drawn; at
least two models carry the values), ``sts_tr_vs_en.png`` (STS-B and STSb-TR side by side per
model, grouped bars; any model with both) and ``training_curves.png`` from metrics JSONL files
(one ``{"step": .., "loss": ..}`` per line). Axes carry units in their titles (MiB,
sentences/s, ms) and plain tick labels (20, 30, 60; no exponents); each point is labelled
where its label overlaps no other label, point or legend, or, when crowded, numbered with its
name in a legend beside the axes.

Each file is written atomically (a temporary file, then ``os.replace``), so a report read
at any moment is whole; ``python -m embres.evaluate`` rewrites it after every model. A model
record may carry ``errors`` (task -> type and message): report.md lists them under "Failed"
and marks them in the table. When no plot could be drawn, :func:`plot_notes` says why.

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

from embres.cli import join_lines
from embres.evaluate.common import DataFormatError, is_non_finite
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
    save_figure,
    short_name,
    short_names,
    tradeoff_figure,
)
from embres.files import atomic_write_text

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
    "atomic_write_text",
    "compare",
    "format_summary",
    "format_value",
    "headline_columns",
    "keep_previous",
    "labelled_scatter",
    "language_figure",
    "language_metrics",
    "load_records",
    "log_ticks",
    "markdown",
    "merge_records",
    "new_figure",
    "pareto_front",
    "place_labels",
    "plain_number",
    "plot_languages",
    "plot_notes",
    "plot_tradeoff",
    "plot_training_curves",
    "quality_metric",
    "read_jsonl",
    "report_curves",
    "save_figure",
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
# The files of one report in its folder: the two reports, then the plots it may have.
REPORT_FILES = ("report.json", "report.md")
PLOT_FILES = (
    "quality_vs_size.png",
    "quality_vs_speed.png",
    "sts_tr_vs_en.png",
    "training_curves.png",
)
COMPARE_TITLE = "embres comparison"
# Quality axes of the trade-off plots, in the order quality_metric tries them.
QUALITY_PREFIXES = ("sts/", "probe/", "retrieval/")
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


def _cell(text: Any) -> str:
    """Text safe inside a markdown table cell: one line, ``|`` escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def headline_table(records: Sequence[dict[str, Any]]) -> list[str]:
    """The table (a model per row, a headline metric per column), or a sentence instead.

    Every row has as many cells as the header. A ``failed`` column lists the tasks that
    raised; with neither metrics nor failures (every task skipped) a sentence replaces the
    table, since a table without columns is not valid markdown.
    """
    if not records:
        return ["No model in this report."]
    columns = headline_columns(records)
    failed = any(r.get("errors") for r in records)
    if not columns and not failed:
        return ["No metric was computed: every task was skipped (the reasons are listed below)."]
    header = ["model", *columns] + (["failed"] if failed else [])
    lines = [_row(header), "|---|" + "---:|" * len(columns) + ("---|" if failed else "")]
    for record in records:
        cells = [record["name"]]
        cells += [
            format_value(c, record["metrics"][c]) if c in record["metrics"] else "–"
            for c in columns
        ]
        if failed:
            cells.append(", ".join(record.get("errors", {})) or "–")
        lines.append(_row(cells))
    return lines


def markdown(
    records: Sequence[dict[str, Any]],
    title: str = "embres evaluation",
    pending: Sequence[str] = (),
    plot_notes: Sequence[str] = (),
) -> str:
    """The report as markdown: headline table, failed and skipped tasks, full details.

    ``pending`` names models not evaluated yet (the report is partial, and says so first);
    ``plot_notes`` says why plots are missing.
    """
    lines = [f"# {title}", ""]
    if pending:
        lines += [
            f"**Incomplete**: {len(pending)} model(s) not evaluated yet: "
            + ", ".join(f"`{p}`" for p in pending)
            + " (the run is still going, or stopped early).",
            "",
        ]
    lines += headline_table(records)
    if any("memory/disk_bytes" in r["metrics"] for r in records):
        lines += ["", SIZE_NOTE]
    if len(records) > 1 and any("memory/peak_rss_bytes" in r["metrics"] for r in records):
        lines += [
            "",
            "peak_rss is the process high-water mark: models measured in one run share it.",
        ]
    if plot_notes:
        lines += ["", *(f"- {note}" for note in plot_notes)]
    failures = [(r["name"], task, e) for r in records for task, e in r.get("errors", {}).items()]
    if failures:
        lines += ["", "## Failed", ""]
        lines += [
            f"- **{name} · {task}**: {e.get('type', 'Error')}: {join_lines(e.get('message', ''))}"
            for name, task, e in failures
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
    for prefix in QUALITY_PREFIXES:
        found = [n for n in names if n.startswith(prefix) and not n.endswith("_macro_f1")]
        if found:
            return found[0]
    return None


def size_metric(records: Sequence[dict[str, Any]]) -> str | None:
    """The size axis: the first of :data:`SIZE_METRICS` some model carries."""
    return next((m for m in SIZE_METRICS if any(m in r["metrics"] for r in records)), None)


def _metric_list(record: dict[str, Any], most: int = 3) -> str:
    names = list(record["metrics"])
    shown = ", ".join(names[:most]) or "no metric"
    return shown + (f", +{len(names) - most} more" if len(names) > most else "")


def plot_notes(records: Sequence[dict[str, Any]]) -> list[str]:
    """Why ``quality_vs_size.png`` / ``quality_vs_speed.png`` are not drawn; [] when both are.

    Each needs two models carrying both the quality metric and its x metric; the note names
    what is missing, e.g. ``no plot: the models share no metric (a: sts/stsb_dev; b: ...)``.
    A report of one model gets no note: nobody expects it to plot a comparison.
    """
    if len(records) < 2:
        return []
    records = finite_records(records)  # as draw_plots sees them
    counts: dict[str, int] = {}
    for record in records:
        for name in record["metrics"]:
            counts[name] = counts.get(name, 0) + 1
    if not any(n >= 2 for n in counts.values()):
        each = "; ".join(f"{r['name']}: {_metric_list(r)}" for r in records)
        return [f"no plot: the models share no metric ({each})"]
    quality = quality_metric(records)
    if quality is None:
        return ["no plot: no model has a quality metric (a task among sts, probe, retrieval)"]
    notes = []
    axes = (("quality_vs_size.png", size_metric(records), "memory"),)
    axes += (("quality_vs_speed.png", SPEED_METRIC, "speed"),)
    for file, x_metric, task in axes:
        if x_metric is None or not any(x_metric in r["metrics"] for r in records):
            notes.append(f"no {file}: no model has the {task} task's metrics")
            continue
        both = [r["name"] for r in records if {quality, x_metric} <= set(r["metrics"])]
        if len(both) < 2:
            notes.append(
                f"no {file}: it needs two models with both {quality} and {x_metric}; "
                f"{len(both)} ha{'s' if len(both) == 1 else 've'} both"
                + (f" ({', '.join(both)})" if both else "")
            )
    return notes


def write_report(
    records: Sequence[dict[str, Any]],
    out_dir: str | os.PathLike,
    curves: Sequence[str | os.PathLike] = (),
    title: str = "embres evaluation",
    command: str | None = None,
    pending: Sequence[str] = (),
    plots: bool = True,
) -> dict[str, Path]:
    """Writes report.json, report.md and the plots that apply; returns what was written.

    Args:
      records: model records as :func:`embres.evaluate.evaluate_model` returns them.
      out_dir: the folder (created when absent); each file in it is replaced atomically.
      curves: metrics JSONL files for ``training_curves.png``.
      title: the markdown title.
      command: the command line, kept in report.json.
      pending: models still to evaluate: the report says it is partial.
      plots: False writes the two reports alone (the quick rewrite after each model); True
        also draws the plots, removes those of an earlier report that no longer apply, and
        records why any trade-off plot is missing (``plot_notes`` in report.json and .md).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    notes = plot_notes(records) if plots else []
    payload = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": command,
        "pending": list(pending),
        "plot_notes": notes,
        "models": list(records),
    }
    written = {"json": out / "report.json", "markdown": out / "report.md"}
    atomic_write_text(written["json"], json.dumps(payload, indent=2, default=str) + "\n")
    atomic_write_text(written["markdown"], markdown(records, title, pending, notes))
    if plots:
        written.update(draw_plots(records, out, curves))
        for name in PLOT_FILES:  # a plot of an earlier report would contradict this one
            if (out / name).is_file() and out / name not in written.values():
                (out / name).unlink()
    return written


def finite_records(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``records`` without NaN or infinite metrics (an older report.json may hold them)."""
    return [
        {**r, "metrics": {k: v for k, v in r["metrics"].items() if not is_non_finite(v)}}
        for r in records
    ]


def draw_plots(
    records: Sequence[dict[str, Any]], out: Path, curves: Sequence[str | os.PathLike] = ()
) -> dict[str, Path]:
    """Draws the plots that apply to ``records`` into ``out``; returns them by kind.

    A NaN or infinite metric is left out, as if the model lacked it.
    """
    records = finite_records(records)
    written = {}
    quality = quality_metric(records)
    if quality is not None:
        size = size_metric(records)
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


def previous_name(name: str) -> str:
    """``report.json`` -> ``report.prev.json``: where a replaced report file is kept."""
    path = Path(name)
    return f"{path.stem}.prev{path.suffix}"


def written_at(report_json: Path) -> str:
    """When a report was written: its ``created`` field, else the file's modification time."""
    try:
        created = json.loads(report_json.read_text(encoding="utf-8")).get("created")
    except (OSError, ValueError, AttributeError):
        created = None
    if isinstance(created, str) and created:
        return created
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(report_json.stat().st_mtime))


def keep_previous(out_dir: str | os.PathLike) -> str | None:
    """Moves an earlier report in ``out_dir`` aside; returns the line that says so, or None.

    report.json, report.md and the plots become report.prev.json, report.prev.md,
    quality_vs_size.prev.png, ... (one generation: an older ``.prev`` set is replaced whole,
    so the kept files always belong together). Nothing happens without a report.json or
    report.md in ``out_dir``.
    """
    out = Path(out_dir)
    present = [out / name for name in REPORT_FILES if (out / name).is_file()]
    if not present:
        return None
    when = written_at(present[0])
    for name in REPORT_FILES + PLOT_FILES:
        kept = out / previous_name(name)
        if (out / name).is_file():
            os.replace(out / name, kept)
        else:
            kept.unlink(missing_ok=True)
    return (
        f"replacing the report in {out}/ (written {when}); "
        f"the previous one is kept as {previous_name(present[0].name)}"
    )


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
    """The model records of ``<report_dir>/report.json`` (or of that file itself).

    Raises:
      FileNotFoundError: naming the path when there is no report there.
      DataFormatError: naming the file when it is not a report written by write_report.
    """
    path = Path(report_dir)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist (expected a folder with report.json from "
            "python -m embres.evaluate)"
        )
    path = path / "report.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(
            f"no report in {path.parent}: expected {path}, written by python -m embres.evaluate"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DataFormatError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise DataFormatError(f"{path}: expected {{'models': [...]}} as written by write_report")
    return data["models"]


def merge_records(report_dirs: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """The records of several reports, in order; a model in two runs gets the run's name.

    Every folder is read before anything is returned, so all unreadable ones are named at
    once.

    Raises:
      FileNotFoundError: when a report is missing (DataFormatError when one is unreadable),
        naming every folder that failed.
    """
    records, problems, missing_only = [], [], True
    for directory in report_dirs:
        try:
            loaded = load_records(directory)
        except (OSError, DataFormatError) as e:
            problems.append(str(e))
            missing_only = missing_only and isinstance(e, OSError)
            continue
        for record in loaded:
            record = dict(record)
            if sum(r["name"] == record["name"] for r in records):  # same model in two runs
                record["name"] = f"{record['name']} ({Path(directory).name})"
            records.append(record)
    if problems:
        raise (FileNotFoundError if missing_only else DataFormatError)("; ".join(problems))
    return records


def report_curves(report_dirs: Sequence[str | os.PathLike]) -> list[Path]:
    """The ``metrics.jsonl`` files next to the reports (training curves of their runs)."""
    return [Path(d, "metrics.jsonl") for d in report_dirs if Path(d, "metrics.jsonl").is_file()]


def compare(
    report_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, command: str | None = None
) -> dict[str, Path]:
    """Merges several reports into one table and one set of plots under ``out_dir``.

    A metrics JSONL next to a report (``metrics.jsonl``) adds its run to the training curves.
    """
    records = merge_records(report_dirs)
    curves = report_curves(report_dirs)
    return write_report(records, out_dir, curves=curves, title=COMPARE_TITLE, command=command)


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
