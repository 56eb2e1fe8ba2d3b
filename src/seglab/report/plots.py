"""Report figures: each function takes data and an output stem and writes ``stem.png`` and ``stem.svg``.

Figures are built with ``matplotlib.figure.Figure`` directly (never pyplot), so they render
headless with the Agg canvas and leave no global figure state behind.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from matplotlib.ticker import MaxNLocator

from ..errors import DataError
from ..metrics.names import split_metric
from ..data.labels import transparent_classes
from .overlays import class_legend, overlay_classes
from .run_folder import metric_series
from .samples import Sample

PRETTY_NAMES = {
    "loss": "Loss",
    "pixel_acc": "Pixel accuracy",
    "miou": "mIoU",
    "mpa": "mPA",
    "fg_iou": "Foreground IoU",
    "fwiou": "Frequency-weighted IoU",
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1",
    "dice": "Dice",
    "lr": "Learning rate",
    "epoch_time": "Epoch time (s)",
    "images_per_s": "Images per second",
    "tgs": "TGS metric",
}
FIRST_FAMILIES = ("loss", "pixel_acc", "miou")
LAST_FAMILIES = ("lr", "epoch_time")
# Scores within 0..1: their axes start at 0, so a change of 0.001 never looks like a jump.
FRACTION_FAMILIES = ("pixel_acc", "miou", "mpa", "fg_iou", "fwiou", "precision", "recall", "f1", "dice", "tgs", "acc",
                     "iou", "map")


def save_figure(fig: Figure, stem: str | Path, dpi: int = 100) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` (text kept as text, so names stay searchable); return both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")]
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "seglab"}):
        fig.savefig(paths[0], dpi=dpi)
        # The layout solved for the PNG holds for the SVG too (it is in figure fractions): freezing it
        # halves the SVG's cost. Switching to "none" keeps colorbar compatibility.
        fig.set_layout_engine("none")
        fig.savefig(paths[1], dpi=dpi)
    return paths


def grid_axes(
    fig: Figure, nrows: int, ncols: int, margins: tuple[float, float, float, float], gaps: tuple[float, float]
) -> np.ndarray:
    """(nrows, ncols) axes with margins (left, right, top, bottom) and gaps (between columns, rows) in inches.

    Used for regular grids instead of constrained layout, whose extra layout pass doubles the
    drawing time of many-panel figures.
    """
    width, height = fig.get_size_inches()
    left, right, top, bottom = margins
    wgap, hgap = gaps
    axis_w = (width - left - right - (ncols - 1) * wgap) / ncols
    axis_h = (height - top - bottom - (nrows - 1) * hgap) / nrows
    grid = fig.add_gridspec(
        nrows, ncols, left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height,
        wspace=wgap / axis_w, hspace=hgap / axis_h,
    )
    return grid.subplots(squeeze=False)


def pretty(name: str) -> str:
    """Display name of a metric family."""
    return PRETTY_NAMES.get(name, name.replace("_", " "))


def metric_families(columns: Iterable[str]) -> dict[str, list[str]]:
    """Group metrics.csv columns by metric (train_loss + val_loss -> "loss"); loss, acc, mIoU first, lr last."""
    groups: dict[str, list[str]] = {}
    for column in columns:
        if column == "epoch":
            continue
        family, _ = split_metric(column)
        groups.setdefault(family, []).append(column)
    order = [f for f in FIRST_FAMILIES if f in groups]
    order += [f for f in groups if f not in FIRST_FAMILIES and f not in LAST_FAMILIES]
    order += [f for f in LAST_FAMILIES if f in groups]
    return {family: groups[family] for family in order}


def set_y_floor(ax: Any, family: str, values: np.ndarray) -> None:
    """A y-axis a person reads right: scores (0..1) from 0 to at most 1, other non-negative series (loss, time,
    learning rate) from 0; never zoomed in so far that a flat line looks like a rise (a minimum span)."""
    values = values[np.isfinite(values)]
    if not values.size or ax.get_yscale() == "log":
        return
    low, high = float(values.min()), float(values.max())
    if family in FRACTION_FAMILIES and low >= 0 and high <= 1:
        ax.set_ylim(0, min(1.02, high + max(0.05, 0.1 * high)) if high > 0 else 1.0)  # 1.02: points at 1 stay whole
    elif low >= 0:
        ax.set_ylim(0, high * 1.08 if high > 0 else 1.0)
    else:  # values below zero: keep the data's range, but at least 10% of its size wide
        span = max(high - low, 0.1 * max(abs(low), abs(high)), 1e-12)
        middle = (high + low) / 2
        ax.set_ylim(middle - 0.55 * span, middle + 0.55 * span)


def plot_training_curves(rows: list[dict[str, Any]], stem: str | Path, best_epoch: int | None = None,
                         drop_families: Sequence[str] = (), best_metric: str | None = None) -> list[Path]:
    """One subplot per metric family of metrics.csv (train and val together), learning rate in its own subplot.

    Epochs are numbered from 1 (metrics.csv's ``epoch``, as the log lines and summary.json). ``best_epoch`` (from 1)
    draws a dotted line on every panel and a star on the ``best_metric`` column; ``drop_families`` are left out
    (the TGS metric on a task that is not TGS).
    """
    if not rows:
        raise DataError("metrics.csv has no rows: train at least one epoch before plotting curves")
    columns = list(dict.fromkeys(c for row in rows for c in row))
    families = {f: cols for f, cols in metric_families(columns).items()
                if f not in drop_families and any(metric_series(rows, c)[0].size for c in cols)}
    if not families:
        raise DataError(f"metrics.csv has no numeric columns to plot (columns: {columns})")
    ncols = min(3, len(families))
    nrows = math.ceil(len(families) / ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.4 * nrows))
    axes = grid_axes(fig, nrows, ncols, margins=(0.75, 0.2, 0.4, 0.55), gaps=(0.85, 0.95)).ravel()
    best_column = f"val_{best_metric}" if best_metric and not best_metric.startswith("val_") else best_metric
    for ax, (family, cols) in zip(axes, families.items()):
        shown = []
        for column in cols:
            epochs, values = metric_series(rows, column)
            shown.append(values)
            label = split_metric(column)[1] or column
            ax.plot(epochs, values, marker="o" if len(epochs) <= 30 else None, markersize=3, label=label)
            if best_epoch is not None and column == best_column and best_epoch in epochs:
                ax.plot([best_epoch], [values[list(epochs).index(best_epoch)]], marker="*", markersize=12,
                        color="tab:red", linestyle="none", label=f"best (epoch {best_epoch})")
        values = np.concatenate(shown) if shown else np.array([])
        if family == "lr" and values.size and values.min() > 0 and values.max() / values.min() >= 10:
            ax.set_yscale("log")
        set_y_floor(ax, family, values)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle=":", linewidth=1)
        split = split_metric(cols[0])[1] if len(cols) == 1 else None
        ax.set_title(pretty(family) + (f" ({split})" if split else ""))  # one curve: say whose it is
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if len(ax.get_legend_handles_labels()[0]) > 1:
            ax.legend(fontsize="small")
    for ax in axes[len(families):]:
        ax.set_visible(False)
    return save_figure(fig, stem)


def per_image_order(names: Sequence[str], ious: Sequence[float]) -> tuple[list[str], np.ndarray]:
    """Images sorted by IoU, worst first (NaN, no score, left out): the order of the per-image bars."""
    values = np.asarray(ious, dtype=float)
    scored = np.flatnonzero(~np.isnan(values))
    order = scored[np.argsort(values[scored], kind="stable")]
    return [str(names[i]) for i in order], values[order]


def plot_per_image_iou(names: Sequence[str], ious: Sequence[float], stem: str | Path, title: str = "Per-image IoU") -> list[Path]:
    """One bar per image, sorted from worst to best, with a dashed line at the mean (NaN = class absent, skipped).

    Images are unrelated to each other, so no line joins them; sorted bars show the spread and how many are poor.
    """
    values = np.asarray(ious, dtype=float)
    if values.size == 0 or np.all(np.isnan(values)):
        raise DataError("no per-image IoU values to plot: evaluate at least one image first")
    sorted_names, sorted_values = per_image_order(names, values)
    mean = float(np.nanmean(values))
    fig = Figure(figsize=(max(6.0, min(14.0, 0.18 * sorted_values.size + 4)), 3.8), layout="constrained")
    ax = fig.subplots()
    index = np.arange(sorted_values.size)
    ax.bar(index, sorted_values, width=0.85 if sorted_values.size <= 200 else 1.0, color="tab:blue",
           edgecolor="none", label="IoU of one image")
    ax.axhline(mean, color="black", linestyle="--", linewidth=1, label=f"mean = {mean:.4f}")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(-0.6, sorted_values.size - 0.4)
    ax.set_xlabel(f"image, sorted by IoU (worst left; {sorted_values.size} images)")
    ax.set_ylabel("IoU")
    ax.set_title(title, loc="left")
    if sorted_values.size <= 30:
        ax.set_xticks(index, sorted_names, rotation=60, ha="right", fontsize="x-small")
    else:
        ax.set_xticks([])
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize="small", frameon=False)  # off the bars
    return save_figure(fig, stem)


def _compact_count(value: float) -> str:
    """1234 -> "1.2k", 3_400_000 -> "3.4M"."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.1f}{suffix}"
    return f"{value:.0f}"


def normalize_confusion(confusion: np.ndarray) -> np.ndarray:
    """Row-normalise counts (each true class sums to 1; rows with no pixels stay 0)."""
    counts = np.asarray(confusion, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def plot_confusion_matrix(
    confusion: np.ndarray, class_names: Sequence[str], stem: str | Path, normalize: bool = False
) -> list[Path]:
    """Confusion matrix (rows = true, columns = predicted) with class names; raw counts or row-normalised."""
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {confusion.shape}")
    if len(class_names) != confusion.shape[0]:
        raise ValueError(f"{len(class_names)} class names for a {confusion.shape[0]}-class confusion matrix")
    values = normalize_confusion(confusion) if normalize else confusion.astype(float)
    size = max(4.5, 0.55 * len(class_names) + 3)
    fig = Figure(figsize=(size + 1, size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, shrink=0.8)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, list(class_names), rotation=45, ha="right")
    ax.set_yticks(ticks, list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (row-normalised)" if normalize else "Confusion matrix (pixels)")
    if len(class_names) <= 20:  # beyond that the numbers no longer fit in the cells
        threshold = values.max() / 2 if values.size else 0
        for (i, j), value in np.ndenumerate(values):
            text = f"{value:.2f}" if normalize else _compact_count(value)
            ax.text(j, i, text, ha="center", va="center", fontsize="small",
                    color="white" if value > threshold else "black")
    return save_figure(fig, stem)


def plot_per_class_iou(class_names: Sequence[str], ious: Sequence[float], stem: str | Path) -> list[Path]:
    """Horizontal bar per class with its IoU and a dashed mean line."""
    values = np.asarray(ious, dtype=float)
    if len(class_names) != values.size or values.size == 0:
        raise ValueError(f"need one IoU per class: {len(class_names)} names, {values.size} values")
    fig = Figure(figsize=(6.5, max(2.5, 0.35 * values.size + 1.2)), layout="constrained")
    ax = fig.subplots()
    positions = np.arange(values.size)
    bars = ax.barh(positions, np.nan_to_num(values), color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.3f}" if not np.isnan(v) else "n/a" for v in values], padding=2, fontsize="small")
    ax.axvline(float(np.nanmean(values)), color="tab:red", linestyle="--", label=f"mean = {np.nanmean(values):.4f}")
    ax.set_yticks(positions, list(class_names))
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("IoU")
    ax.set_title("Per-class IoU")
    ax.legend(loc="lower right", fontsize="small")
    return save_figure(fig, stem)


def class_pixel_counts(masks: Iterable[np.ndarray], num_classes: int) -> np.ndarray:
    """Pixels of each class over a set of class-index masks; labels outside 0..C-1 (ignore) are not counted."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for mask in masks:
        values = np.asarray(mask).ravel().astype(np.int64)
        values = values[(values >= 0) & (values < num_classes)]
        counts += np.bincount(values, minlength=num_classes)
    return counts


def plot_class_histogram(
    counts: Sequence[int], class_names: Sequence[str], stem: str | Path, title: str = "Class pixels"
) -> list[Path]:
    """Bar chart of each class's share of labelled pixels (log scale when shares differ by > 1000x)."""
    values = np.asarray(counts, dtype=float)
    if len(class_names) != values.size:
        raise ValueError(f"{len(class_names)} class names for {values.size} pixel counts")
    total = values.sum()
    if total <= 0:
        raise DataError("class pixel counts are all zero: no labelled pixels to plot")
    shares = values / total
    fig = Figure(figsize=(max(5.0, 0.6 * values.size + 2), 3.8), layout="constrained")
    ax = fig.subplots()
    positions = np.arange(values.size)
    bars = ax.bar(positions, shares, color="tab:green")
    ax.bar_label(bars, labels=[f"{s:.1%}" for s in shares], padding=2, fontsize="x-small")
    positive = shares[shares > 0]
    if positive.size and positive.max() / positive.min() > 1000:
        ax.set_yscale("log")
    crowded = values.size > 4
    ax.set_xticks(positions, list(class_names), rotation=45 if crowded else 0, ha="right" if crowded else "center")
    ax.set_ylabel("share of labelled pixels")
    ax.set_title(f"{title} ({_compact_count(total)} total)")
    return save_figure(fig, stem)


def plot_sample_grid(samples: Sequence[Sample], colors: np.ndarray, stem: str | Path, ncols: int = 4,
                     class_names: Sequence[str] | None = None) -> list[Path]:
    """Grid of predictions: each tile is the prediction overlaid on its image, titled with name and IoU; a legend
    of the class colours below."""
    if not samples:
        raise DataError("no samples to draw: the evaluation wrote no per-image predictions")
    names = list(class_names) if class_names else [f"class {i}" for i in range(len(colors))]
    skip = transparent_classes(names, colors)
    legend = [h for i, h in enumerate(class_legend(names, colors)) if i not in skip]
    ncols = min(ncols, len(samples))
    nrows = math.ceil(len(samples) / ncols)
    bottom = 0.25 + 0.25 * math.ceil(len(legend) / max(1, 2 * ncols))
    fig = Figure(figsize=(max(3.0 * ncols, 6.0), 3.2 * nrows + bottom))
    axes = grid_axes(fig, nrows, ncols, margins=(0.1, 0.1, 0.5, bottom), gaps=(0.15, 0.5)).ravel()
    for ax, sample in zip(axes, samples):
        ax.imshow(overlay_classes(sample.image, sample.pred, colors, skip))
        ax.set_title(f"{sample.name}\nIoU {sample.score:.3f}", fontsize="small")
    for ax in axes:
        ax.set_axis_off()
    if legend:
        fig.legend(handles=legend, loc="lower center", ncol=min(len(legend), 2 * ncols), fontsize="small",
                   frameon=False, title="predicted class", title_fontsize="small")
    return save_figure(fig, stem)
