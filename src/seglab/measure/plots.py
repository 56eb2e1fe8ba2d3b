"""Figures for grain measurements: size-distribution histogram and outlined grains."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from skimage.segmentation import find_boundaries

from ..errors import DataError
from .grains import GrainTable
from .units import display_unit

# Small masks are upscaled so label numbers stay legible next to the grains.
_MIN_OUTLINE_SIDE_PX = 800
_DPI = 100
_LEFT_OUT_GREY = (0.5, 0.5, 0.5)


def class_colour(class_id: int, run_colors: dict[int, Sequence[int]] | None = None) -> tuple[float, float, float]:
    """A class's colour: the run's own (classes.csv, the masks' colours; as in legend.png and the overlays) when it
    is saturated enough to read on an image, else a stable tab10 colour (class 1 gets the first)."""
    own = (run_colors or {}).get(class_id)
    if own is not None and max(own) - min(own) >= 80:  # black, white and greys vanish on micrographs
        return own[0] / 255, own[1] / 255, own[2] / 255
    red, green, blue, _ = matplotlib.colormaps["tab10"]((class_id - 1) % 10)
    return red, green, blue


def _save(figure: Figure, path: Path) -> Path:
    """Render a figure with the Agg canvas (no pyplot, no GUI backend) and write it as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=_DPI)
    return path


def plot_size_distribution(table: GrainTable, path: str | Path) -> Path:
    """Write a histogram of equivalent diameters (physical units when calibrated), one colour per class."""
    column = f"equivalent_diameter_{table.unit}"
    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    class_ids = [class_id for class_id in table.class_names if len(table.values(column, class_id))]
    if class_ids:
        samples = [table.values(column, class_id) for class_id in class_ids]
        edges = np.histogram_bin_edges(np.concatenate(samples), bins="auto")
        if len(edges) > 51:  # "auto" can produce hundreds of bins for thousands of grains
            edges = np.histogram_bin_edges(np.concatenate(samples), bins=50)
        axes.hist(
            samples,
            bins=edges,
            histtype="stepfilled",
            alpha=0.55,
            color=[class_colour(class_id, table.colors) for class_id in class_ids],
            edgecolor="black",
            linewidth=0.6,
            label=[f"{table.class_names[class_id]} (n={len(sample)})" for class_id, sample in zip(class_ids, samples)],
        )
        axes.legend()
    else:
        axes.text(0.5, 0.5, "no objects found", ha="center", va="center", transform=axes.transAxes)
    axes.set_xlabel(f"Equivalent diameter ({display_unit(table.unit)})")
    axes.set_ylabel("Count")
    # the classes' own names (grains, pores, cells), not "grains" for every task
    what = ", ".join(table.class_names.values()) if 0 < len(table.class_names) <= 3 else "all classes"
    axes.set_title(f"Size distribution: {what} ({len(table.rows)} object{'s' if len(table.rows) != 1 else ''})")
    figure.text(0.01, 0.01, _counted_note(table), fontsize=8, color="0.3", ha="left", va="bottom", wrap=True)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    return _save(figure, Path(path))


def _counted_note(table: GrainTable) -> str:
    """What the statistics count: the rule, and what it left out."""
    border = "border objects kept" if table.keep_border else "objects touching the border left out"
    rule = f"objects of at least {table.min_grain_text()}; {border}"
    return f"{rule}\n{table.left_out_note()}" if table.left_out else f"{rule}; nothing left out"


def outline_overlay(table: GrainTable, image: np.ndarray | None = None) -> np.ndarray:
    """Return an RGB float image (the micrograph, or pale class fills) with grain outlines in class colours."""
    labels = table.labels
    # Palette index = class id + 1: index 0 (white) is "no grain", so a measured class 0 keeps a colour of its own.
    grain_class = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    for row in table.rows:
        grain_class[int(row["label"])] = int(row["class_id"]) + 1
    pixel_class = grain_class[labels]
    palette = np.array(
        [(1.0, 1.0, 1.0)] + [class_colour(class_id, table.colors) for class_id in range(int(grain_class.max()) + 1)]
    )
    if image is None:
        # Pale fills keep the outlines readable while still showing which class each grain is.
        canvas = 0.65 * np.ones(labels.shape + (3,)) + 0.35 * palette[pixel_class]
        canvas[pixel_class == 0] = 1.0
    else:
        if image.shape[:2] != labels.shape:
            raise DataError(
                f"image shape {image.shape[:2]} does not match mask shape {labels.shape}; pass the matching image"
            )
        canvas = np.array(image, dtype=np.float64, copy=True)
    boundaries = find_boundaries(labels, mode="inner")
    canvas[boundaries] = palette[pixel_class[boundaries]]
    if table.left_out_labels is not None and table.left_out_labels.any():
        # Left-out objects (specks, border objects) are filled grey, so it is plain what was not counted.
        dropped = table.left_out_labels > 0
        canvas[dropped] = 0.45 * canvas[dropped] + 0.55 * np.array(_LEFT_OUT_GREY)
        edges = find_boundaries(table.left_out_labels, mode="inner")
        canvas[edges] = _LEFT_OUT_GREY
    return canvas


def plot_outlines(
    table: GrainTable, path: str | Path, image: np.ndarray | None = None, draw_labels: bool = True
) -> Path:
    """Write the outlined-grains PNG, optionally numbering each grain with its CSV label."""
    canvas = outline_overlay(table, image)
    height, width = table.labels.shape
    scale = max(1.0, _MIN_OUTLINE_SIDE_PX / max(height, width))
    figure = Figure(figsize=(width * scale / _DPI, height * scale / _DPI))
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    axes.imshow(canvas, interpolation="nearest")
    axes.set_axis_off()
    if draw_labels:
        for row in table.rows:
            axes.text(
                float(row["centroid_col_px"]),
                float(row["centroid_row_px"]),
                str(row["label"]),
                fontsize=7,
                ha="center",
                va="center",
                color="black",
                bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "alpha": 0.6, "linewidth": 0},
            )
    measured = sorted({int(row["class_id"]) for row in table.rows})
    if measured:  # which outline colour is which class
        handles = [Patch(facecolor=(1, 1, 1, 0.6), edgecolor=class_colour(class_id, table.colors), linewidth=2,
                         label=str(table.class_names.get(class_id, class_id))) for class_id in measured]
        axes.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.8, title="outline colour",
                    title_fontsize=8)
    if table.left_out:
        axes.text(0.01, 0.99, f"grey: {table.left_out_note().split(' (to keep')[0]}", transform=axes.transAxes,
                  fontsize=9, ha="left", va="top", color="black",
                  bbox={"boxstyle": "round,pad=0.3", "facecolor": "white", "alpha": 0.8, "linewidth": 0})
    return _save(figure, Path(path))
