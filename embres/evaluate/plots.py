"""Report plots: headless matplotlib figures with plain numbers and labels that overlap nothing.

Every figure is drawn on its own Agg canvas (no pyplot state, no display needed). Axes carry
units in their titles (MiB, sentences/s, ms) and plain tick labels (20, 30, 60; no
exponents); each point is labelled where its label overlaps no other label, point or legend,
or, when crowded, numbered with its name in a legend beside the axes (:func:`place_labels`).

* :func:`tradeoff_figure` / :func:`plot_tradeoff`: quality against size or speed (log x), with
  the Pareto frontier (:func:`pareto_front`);
* :func:`language_figure` / :func:`plot_languages`: STS-B and STSb-TR side by side per model
  (grouped bars);
* :func:`plot_training_curves`: metrics JSONL files (:func:`read_jsonl`) against step.

:mod:`embres.evaluate.report` decides which plots a report gets, and re-exports these names.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embres.evaluate.common import DataFormatError
from embres.files import atomic_path


def save_figure(fig: Any, path: str | os.PathLike, **options: Any) -> Path:
    """Saves ``fig`` atomically (temp file, then rename): no reader sees a half-written plot.

    The format follows the file's suffix (``.png`` when it has none), as ``savefig`` does.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **options)
    return path


def pareto_front(points: Sequence[tuple[float, float]], smaller_x_better: bool) -> list[int]:
    """Indices of points not dominated in (x, quality), ordered along x."""
    order = sorted(range(len(points)), key=lambda i: points[i][0], reverse=not smaller_x_better)
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return sorted(front, key=lambda i: points[i][0])


DPI = 100
AXIS_TITLES = {
    "memory/resident_bytes": "resident size (MiB)",
    "memory/table_bytes": "embedding table (MiB)",
    "memory/param_bytes": "parameters (MiB)",
    "memory/disk_bytes": "size on disk (MiB)",
    "speed/sentences_per_s": "throughput (sentences/s)",
    "speed/tokens_per_s": "throughput (tokens/s)",
    "speed/latency_p50_ms": "median latency (ms)",
    "speed/latency_p99_ms": "99th-percentile latency (ms)",
    "sts/stsb_dev": "STS-B dev (Spearman ×100)",
    "sts/stsb_tr_dev": "STSb-TR dev (Spearman ×100)",
    "sts/sick_dev": "SICK trial (Spearman ×100)",
    "bitext/tr_to_en_r@1": "TR→EN translation R@1 (STS-B dev)",
    "bitext/en_to_tr_r@1": "EN→TR translation R@1 (STS-B dev)",
}
# Log-axis tick mantissas, coarse to fine (see log_ticks).
LOG_LADDERS = (
    (1,),
    (1, 2, 5),
    (1, 2, 3, 5),
    (1, 1.5, 2, 3, 4, 5, 6, 8),
    (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9),
)
MARKER_PT = 6.0  # scatter marker diameter, points
# Label offsets tried in order: directions (right first), then farther out with a leader line.
LABEL_DIRECTIONS = ((1, 0.4), (1, -1), (1, 1), (-1, 0.4), (-1, -1), (-1, 1), (0, 1), (0, -1))
LABEL_DISTANCES = (5.0, 12.0, 22.0, 34.0)
LABEL_GID = "point-label"
LABEL_FONTSIZE = 8


def axis_title(metric: str) -> str:
    """An axis title with its unit: ``memory/resident_bytes`` -> ``resident size (MiB)``."""
    if metric in AXIS_TITLES:
        return AXIS_TITLES[metric]
    group, _, name = metric.partition("/")
    if metric.endswith("_bytes"):
        return f"{name.removesuffix('_bytes').replace('_', ' ')} (MiB)"
    if metric.endswith("_ms"):
        return f"{name.removesuffix('_ms').replace('_', ' ')} (ms)"
    if group == "sts":
        return f"{name} (Spearman ×100)"
    return metric


def axis_value(metric: str, value: float) -> float:
    """A value in its axis unit (bytes in MiB)."""
    return float(value) / 2**20 if metric.endswith("_bytes") else float(value)


def plain_number(value: float) -> str:
    """A tick label without exponents: 0.25, 20, 1,500."""
    text = np.format_float_positional(float(f"{value:.6g}"), trim="-")
    whole, dot, frac = text.partition(".")
    return f"{int(whole):,}{dot}{frac}" if abs(value) >= 1000 else text


def log_ticks(lo: float, hi: float, max_ticks: int = 7) -> list[float]:
    """Round tick values in [lo, hi] for a log axis: the coarsest of :data:`LOG_LADDERS` giving
    at least 4 (a coarser one with 3 rather than one with over ``max_ticks``), evenly spaced
    round values when even the finest gives under 3."""
    if not 0 < lo <= hi:
        raise ValueError(f"log ticks need 0 < lo <= hi, got {lo}, {hi}")
    exponents = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    ticks: list[float] = []
    for ladder in LOG_LADDERS:
        coarser = ticks
        ticks = [float(f"{m * 10.0**e:.12g}") for e in exponents for m in ladder]
        ticks = [t for t in ticks if lo <= t <= hi]
        if len(ticks) > max_ticks and len(coarser) >= 3:  # 10, 100, 1000 over 10, 50, 200, ...
            ticks = coarser
        if len(ticks) >= 4 or ticks is coarser:
            break
    if len(ticks) < 3:  # under a factor of ~1.2: evenly spaced round values
        from matplotlib.ticker import MaxNLocator

        found = MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
        ticks = [float(t) for t in found if lo <= t <= hi and t > 0]
    return ticks[:: math.ceil(len(ticks) / max_ticks)] if ticks else ticks


def _padded(values: Sequence[float], log: bool) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if log:
        pad = max(0.1 * math.log10(hi / lo), 0.05)
        return lo / 10**pad, hi * 10**pad
    pad = 0.1 * (hi - lo) if hi > lo else max(abs(hi) * 0.05, 0.5)
    return lo - pad, hi + pad


def _plain_axis(axis: Any, lo: float, hi: float, log: bool) -> None:
    """Limits, round ticks and plain-number labels of one axis (x or y)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

    (axis.axes.set_xlim if axis.axis_name == "x" else axis.axes.set_ylim)(lo, hi)
    ticks = log_ticks(lo, hi) if log else MaxNLocator(6, steps=[1, 2, 5, 10]).tick_values(lo, hi)
    axis.set_major_locator(FixedLocator([t for t in ticks if lo <= t <= hi]))
    axis.set_major_formatter(FuncFormatter(lambda v, _: plain_number(v)))
    axis.set_minor_locator(NullLocator())


def new_figure(width: float, height: float) -> Any:
    """A matplotlib Figure on its own Agg canvas (no pyplot, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _overlaps(a: Any, b: Any, pad: float = 1.0) -> bool:
    return a.x0 - pad < b.x1 and b.x0 - pad < a.x1 and a.y0 - pad < b.y1 and b.y0 - pad < a.y1


def place_labels(
    ax: Any,
    xy: Sequence[tuple[float, float]],
    texts: Sequence[str],
    obstacles: Sequence[Any] = (),
    strict: bool = True,
) -> list[Any] | None:
    """Labels points at offsets where a label overlaps no other label, point or obstacle.

    Deterministic: points with the most close neighbours choose first, each taking the first
    free offset of :data:`LABEL_DIRECTIONS` x :data:`LABEL_DISTANCES` that lies inside the
    axes and has no other point nearer than its own (failing that, the first free one); far
    offsets get a thin leader line. Axis limits and layout must be final.

    Args:
      ax: the axes; xy: points in data coordinates; texts: one label per point.
      obstacles: display-space Bboxes to keep clear of (e.g. a legend).
      strict: when some label finds no place, remove all and return None; else leave it out.

    Returns:
      The label annotations (gid ``point-label``), or None (see ``strict``).
    """
    from matplotlib.transforms import Bbox

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    centres = ax.transData.transform(np.asarray(xy, float).reshape(-1, 2))
    r = MARKER_PT / 2 * fig.dpi / 72
    taken = [Bbox.from_extents(x - r, y - r, x + r, y + r) for x, y in centres]
    taken += list(obstacles)
    frame = ax.get_window_extent(renderer)
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    crowd = (gaps < 40 * fig.dpi / 72).sum(axis=1)
    order = sorted(range(len(texts)), key=lambda i: (-crowd[i], centres[i][0], centres[i][1]))
    placed: list[Any] = []
    for i in order:
        label = None
        for own in (centres[i], None):  # an offset nearest its own point first, then any
            label = label or _place_one(ax, renderer, xy[i], texts[i], frame, taken, own, centres)
        if label is None and strict:
            for artist in placed:
                artist.remove()
            return None
        if label is not None:
            placed += label
            taken.append(label[0].get_window_extent(renderer))
    return [a for a in placed if a.get_gid() == LABEL_GID]


def _place_one(ax, renderer, point, text, frame, taken, own, centres) -> list[Any] | None:
    """The first free offset for one label (with ``own``: only where no other point is nearer)."""
    for distance in LABEL_DISTANCES:
        for dx, dy in LABEL_DIRECTIONS:
            offset = (dx * distance, dy * distance)
            label = ax.annotate(
                text,
                point,
                xytext=offset,
                textcoords="offset points",
                ha="left" if dx > 0 else "right" if dx < 0 else "center",
                va="bottom" if dy > 0 else "top",
                fontsize=LABEL_FONTSIZE,
                gid=LABEL_GID,
                annotation_clip=False,
            )
            box = label.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1
            inside = inside and frame.y0 <= box.y0 and box.y1 <= frame.y1
            free = inside and not any(_overlaps(box, other) for other in taken)
            if free and own is not None:  # the point nearest the label must be its own
                lo, hi = np.array([box.x0, box.y0]), np.array([box.x1, box.y1])
                gaps = np.linalg.norm(centres - np.clip(centres, lo, hi), axis=1)
                gap = np.linalg.norm(own - np.clip(own, lo, hi))
                free = gap <= gaps.min() + 1e-6
            if free:
                if distance == LABEL_DISTANCES[0]:
                    return [label]
                leader = ax.annotate(
                    "",
                    point,
                    xytext=offset,
                    textcoords="offset points",
                    arrowprops={"arrowstyle": "-", "color": "0.55", "lw": 0.6, "shrinkB": 3},
                    gid="leader",
                )
                return [label, leader]
            label.remove()
    return None


def labelled_scatter(
    ax: Any, xy: Sequence[tuple[float, float]], names: Sequence[str], handles: Sequence[Any]
) -> None:
    """Scatter with a label per point; a numbered legend beside the axes when crowded.

    ``handles`` (e.g. the frontier line) go in the legend. Call with limits and layout final.
    """
    scatter = ax.scatter(*zip(*xy, strict=True), s=MARKER_PT**2, zorder=3)
    legend, obstacles = None, []
    if handles:
        legend = ax.legend(handles=list(handles), loc="best", fontsize=8)
    ax.figure.canvas.draw()  # settles the aspect and the legend's "best" spot
    if legend is not None:  # and keeps the legend there
        box = legend.get_window_extent(ax.figure.canvas.get_renderer())
        legend.set_loc(tuple(ax.transAxes.inverted().transform((box.x0, box.y0))))
        obstacles.append(box)
    if not _markers_touch(ax, xy) and place_labels(ax, xy, short_names(names), obstacles):
        return
    # crowded (markers touch, or some name found no free place): number the points along x,
    # each with its own colour and marker, and name them in a legend beside the axes
    from matplotlib.lines import Line2D

    scatter.remove()
    if legend is not None:
        legend.remove()
    order = sorted(range(len(xy)), key=lambda i: (xy[i][0], xy[i][1]))
    labels = short_names(names)
    entries = list(handles)
    for number, i in enumerate(order, 1):
        style = {"color": f"C{(number - 1) % 10}", "marker": "osD^vPX*"[(number - 1) // 10 % 8]}
        ax.scatter([xy[i][0]], [xy[i][1]], s=MARKER_PT**2, zorder=3, **style)
        entries.append(Line2D([], [], ls="", ms=MARKER_PT, label=f"{number}  {labels[i]}", **style))
    numbers = [str(n) for n in range(1, len(xy) + 1)]
    place_labels(ax, [xy[i] for i in order], numbers, strict=False)  # those that fit
    ax.legend(
        handles=entries, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False
    )


def _markers_touch(ax: Any, xy: Sequence[tuple[float, float]]) -> bool:
    """Whether two markers overlap on screen (then a label could not tell them apart)."""
    centres = ax.transData.transform(np.asarray(xy, float).reshape(-1, 2))
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    np.fill_diagonal(gaps, np.inf)
    return bool(gaps.min() < MARKER_PT * ax.figure.dpi / 72) if len(xy) > 1 else False


def tradeoff_figure(
    records: Sequence[dict[str, Any]], x_metric: str, y_metric: str, smaller_x_better: bool
) -> Any | None:
    """The figure of :func:`plot_tradeoff` (None when fewer than two models have both)."""
    rows = [r for r in records if x_metric in r["metrics"] and y_metric in r["metrics"]]
    if len(rows) < 2:
        return None
    from matplotlib.lines import Line2D

    xy = [
        (axis_value(x_metric, r["metrics"][x_metric]), axis_value(y_metric, r["metrics"][y_metric]))
        for r in rows
    ]
    fig = new_figure(7, 4.5)
    ax = fig.add_subplot()
    ax.set_xscale("log")
    _plain_axis(ax.xaxis, *_padded([x for x, _ in xy], log=True), log=True)
    _plain_axis(ax.yaxis, *_padded([y for _, y in xy], log=False), log=False)
    front = pareto_front(xy, smaller_x_better)
    ax.plot([xy[i][0] for i in front], [xy[i][1] for i in front], "--", color="gray", zorder=2)
    ax.set_xlabel(axis_title(x_metric))
    ax.set_ylabel(axis_title(y_metric))
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    frontier = Line2D([], [], ls="--", color="gray", label="Pareto frontier")
    labelled_scatter(ax, xy, [r["name"] for r in rows], [frontier])
    return fig


def plot_tradeoff(
    records: Sequence[dict[str, Any]],
    x_metric: str,
    y_metric: str,
    path: Path,
    smaller_x_better: bool,
) -> Path | None:
    """Scatter of ``y_metric`` against ``x_metric`` (log x, plain ticks) with the Pareto frontier.

    Returns the path, or None when fewer than two models have both values.
    """
    fig = tradeoff_figure(records, x_metric, y_metric, smaller_x_better)
    if fig is None:
        return None
    return save_figure(fig, path, bbox_inches="tight")


def language_metrics(records: Sequence[dict[str, Any]]) -> tuple[str, str] | None:
    """(English, Turkish) STS metrics both present in some model: STS-B and STSb-TR, dev first."""
    found = [
        (f"sts/stsb_{s}", f"sts/stsb_tr_{s}")
        for s in ("dev", "train")
        if any({f"sts/stsb_{s}", f"sts/stsb_tr_{s}"} <= set(r["metrics"]) for r in records)
    ]
    return found[0] if found else None


def language_figure(records: Sequence[dict[str, Any]]) -> Any | None:
    """Grouped bars per model: STS-B (English) and STSb-TR (Turkish), values at the bar ends."""
    metrics = language_metrics(records)
    if metrics is None:
        return None
    rows = [r for r in records if set(metrics) <= set(r["metrics"])]
    split = metrics[0].removeprefix("sts/stsb_")
    values = np.array([[float(r["metrics"][m]) for m in metrics] for r in rows])
    fig = new_figure(7, 1.0 + 0.55 * len(rows))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]  # first model on top
    height = 0.38
    for k, (lang, shift) in enumerate((("STS-B (English)", 1), ("STSb-TR (Turkish)", -1))):
        bars = ax.barh(y + shift * height / 2, values[:, k], height, label=f"{lang} {split}")
        ax.bar_label(bars, [f"{v:.1f}" for v in values[:, k]], padding=3, fontsize=8)
    ax.set_yticks(y, short_names([r["name"] for r in rows]))
    lo = min(0.0, float(values.min()) * 1.1)
    _plain_axis(ax.xaxis, lo, max(float(values.max()) * 1.12, 1.0), log=False)
    ax.set_xlabel(f"STS {split} (Spearman ×100)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(0, 1.0), ncols=2, fontsize=8, frameon=False)
    ax.set_ylim(-0.7, len(rows) - 0.3 + 0.5)  # room above the top bars for the legend
    fig.tight_layout()
    return fig


def plot_languages(records: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path | None:
    """Writes :func:`language_figure` to ``path``; None when no model has both STS metrics."""
    fig = language_figure(records)
    if fig is None:
        return None
    return save_figure(fig, path, bbox_inches="tight")


def short_name(name: str) -> str:
    """A plot label: the last path component, keeping a ``kind:`` prefix."""
    return short_names([name])[0]


def short_names(names: Sequence[str]) -> list[str]:
    """Plot labels: each name's last path components, as few as keep the labels distinct.

    ``runs/en/static/export`` and ``runs/defaults/projection/export`` become
    ``static/export`` and ``projection/export``; a ``kind:`` prefix is kept.
    """
    split = []
    for name in names:
        prefix, sep, target = name.rpartition(":")
        split.append((prefix + sep, [p for p in Path(target).parts if p not in ("/", "")]))
    depth = [1] * len(names)

    def tail(i: int) -> str:
        return "/".join(split[i][1][-depth[i] :]) or names[i]

    while True:  # grow the tails that equal the tail of another path (prefixes aside)
        tails = [tail(i) for i in range(len(names))]
        clash = [
            i
            for i, (text, (_, parts)) in enumerate(zip(tails, split, strict=True))
            if depth[i] < len(parts)
            and any(t == text and q != parts for t, (_, q) in zip(tails, split, strict=True))
        ]
        if not clash:
            return [split[i][0] + tails[i] for i in range(len(names))]
        for i in clash:
            depth[i] += 1


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
    """One panel per numeric metric (default: all but ``step``) against step; one line per file.

    Points whose value is NaN or infinite are left out of the lines.
    """
    from matplotlib.ticker import FuncFormatter

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
    fig = new_figure(6, 2.5 * len(keys))
    axes = fig.subplots(len(keys), 1, squeeze=False, sharex=True)
    plain = FuncFormatter(lambda v, _: plain_number(v))
    for ax, key in zip(axes[:, 0], keys, strict=True):
        for label, rows in runs.items():
            pts = [  # a NaN or Inf (a diverged run's loss) has no place on an axis
                (r["step"], axis_value(key, r[key]))
                for r in rows
                if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])
            ]
            if pts:
                ax.plot(*zip(*pts, strict=True), label=Path(label).parent.name or label)
        ax.set_ylabel(axis_title(key))
        ax.xaxis.set_major_formatter(plain)
        ax.yaxis.set_major_formatter(plain)
        ax.grid(True, alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
