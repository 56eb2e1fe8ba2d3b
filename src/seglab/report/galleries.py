"""Best and worst predictions side by side: image | label | prediction | overlay | errors, one row per image, with a
legend of the class colours and of the error colours."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from ..data.colors import colorize
from ..errors import ConfigError, DataError
from .images import default_load_mask, load_class_mask, resize_mask
from ..data.labels import transparent_classes
from .overlays import class_legend, error_legend, error_map, overlay_classes
from .plots import grid_axes, save_figure
from .run_folder import resolve_path
from .samples import MaskLoader, Sample, load_sample

GALLERY_COLUMNS = ("image", "label", "prediction", "overlay", "errors")


def class_iou(label: np.ndarray, pred: np.ndarray, class_index: int, num_classes: int | None = None) -> float:
    """IoU of one class in one image; NaN when the class is in neither label nor prediction.

    Pixels whose label is outside 0..num_classes-1 (ignore labels) are left out.
    """
    if label.shape != pred.shape:
        raise DataError(f"label {label.shape} and prediction {pred.shape} differ in size")
    valid = np.ones(label.shape, dtype=bool) if num_classes is None else (label >= 0) & (label < num_classes)
    truth = (label == class_index) & valid
    guess = (pred == class_index) & valid
    union = np.count_nonzero(truth | guess)
    return float(np.count_nonzero(truth & guess) / union) if union else float("nan")


def select_best_worst(scores: Sequence[float], k: int = 6) -> tuple[list[int], list[int]]:
    """Indices of the k highest scores (best first) and the k lowest (worst first); NaN scores are skipped.

    With fewer than 2k scored images the two lists overlap: both are still the true top and bottom k.
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    values = np.asarray(scores, dtype=float)
    scored = np.flatnonzero(~np.isnan(values))
    worst = scored[np.argsort(values[scored], kind="stable")][:k].tolist()
    best = scored[np.argsort(-values[scored], kind="stable")][:k].tolist()
    return best, worst


def plot_gallery(samples: Sequence[Sample], colors: np.ndarray, stem: str | Path, title: str = "",
                 class_names: Sequence[str] | None = None, class_index: int | None = None) -> list[Path]:
    """One row per sample: image | label | prediction | overlay (prediction on the image) | errors (false positives
    and false negatives, of ``class_index`` when given), then a legend of the class and error colours."""
    if not samples:
        raise ValueError("gallery needs at least one sample")
    names = list(class_names) if class_names else [f"class {i}" for i in range(len(colors))]
    skip = transparent_classes(names, colors)
    multiclass = len(colors) > 2 and class_index is None
    background = 0 if 0 in skip or len(colors) == 2 else None  # None: no background class, every error a wrong class
    errors_shown = error_legend(multiclass)
    if multiclass and background is None:
        errors_shown = errors_shown[-1:]
    handles = class_legend(names, colors) + errors_shown
    ncols_legend = 3
    legend_h = 0.3 + 0.24 * math.ceil(len(handles) / ncols_legend)
    top = 0.7 if title else 0.35
    fig = Figure(figsize=(2.4 * len(GALLERY_COLUMNS) + 0.8, 2.45 * len(samples) + top + legend_h))
    axes = grid_axes(fig, len(samples), len(GALLERY_COLUMNS), margins=(0.7, 0.1, top, legend_h), gaps=(0.1, 0.15))
    for row, sample in zip(axes, samples):
        errors, counts = error_map(sample.image, sample.label, sample.pred, len(colors), class_index, background)
        tiles = (sample.image, colorize(sample.label, colors), colorize(sample.pred, colors),
                 overlay_classes(sample.image, sample.pred, colors, skip), errors)
        for ax, tile in zip(row, tiles):
            ax.imshow(tile, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(f"{sample.name}\nIoU {sample.score:.3f}", fontsize="small")
        wrong = counts["false positive"] + counts["false negative"] + counts["wrong class"]
        row[-1].set_xlabel(f"{wrong / max(1, sample.label.size):.1%} of pixels wrong", fontsize="x-small", labelpad=2)
    for ax, name in zip(axes[0], GALLERY_COLUMNS):
        ax.set_title(name)
    if title:
        fig.suptitle(title, y=1 - 0.2 / fig.get_size_inches()[1], va="top")
    fig.legend(handles=handles, loc="lower center", ncol=ncols_legend, fontsize="small", frameon=False)
    return save_figure(fig, stem)


def image_scores(
    per_image: list[dict[str, Any]],
    bases: list[Path],
    class_index: int | None = None,
    num_classes: int | None = None,
    load_mask: MaskLoader = default_load_mask,
) -> list[float]:
    """Score of each per_image.csv row: its ``iou`` column, or the IoU of ``class_index`` recomputed from files."""
    if class_index is None:
        return [float(r["iou"]) if isinstance(r.get("iou"), (int, float)) else float("nan") for r in per_image]
    scores = []
    for row in per_image:
        pred = load_class_mask(resolve_path(str(row["pred"]), bases))
        label = resize_mask(np.asarray(load_mask(resolve_path(str(row["mask"]), bases))), pred.shape)
        scores.append(class_iou(label, pred, class_index, num_classes))
    return scores


def gallery_title(kind: str, shown: int, k: int, scored: int, label: str = "") -> str:
    """"Best 6 of 40 images", or, with fewer scored images than asked for, "Worst 4 (only 4 images scored; k=6)"."""
    if shown < k:
        return f"{kind.capitalize()} {shown} (only {scored} image{'s' if scored != 1 else ''} scored; asked for {k}){label}"
    return f"{kind.capitalize()} {shown} of {scored} images{label}"


def best_worst_galleries(
    per_image: list[dict[str, Any]],
    bases: list[Path],
    colors: np.ndarray,
    stem_prefix: str | Path,
    k: int = 6,
    class_index: int | None = None,
    class_name: str | None = None,
    load_mask: MaskLoader = default_load_mask,
    class_names: Sequence[str] | None = None,
) -> dict[str, list[Path]]:
    """Write ``<prefix>_best`` and ``<prefix>_worst`` galleries of the k best / worst images (k rows each, or every
    scored image when there are fewer, which the title says).

    Ranked by per_image.csv's IoU, or by the IoU of ``class_index`` when a class is chosen.
    """
    if not per_image:
        raise DataError("per_image.csv is empty: run `seglab eval` to write per-image results")
    scores = image_scores(per_image, bases, class_index, len(colors), load_mask)
    best, worst = select_best_worst(scores, k)
    if not best:
        what = f"class {class_name or class_index!r}" if class_index is not None else "any class"
        raise ConfigError(f"no image contains {what}: choose a class present in the evaluation set")
    scored = int(np.count_nonzero(~np.isnan(np.asarray(scores, dtype=float))))
    label = f" — {class_name or f'class {class_index}'} IoU" if class_index is not None else ""
    out = {}
    for kind, indices in (("best", best), ("worst", worst)):
        samples = [load_sample(per_image[i], bases, load_mask, score=scores[i]) for i in indices]
        out[kind] = plot_gallery(samples, colors, f"{stem_prefix}_{kind}",
                                 title=gallery_title(kind, len(samples), k, scored, label),
                                 class_names=class_names, class_index=class_index)
    return out
