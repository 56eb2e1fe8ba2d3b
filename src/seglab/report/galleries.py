"""Best and worst predictions side by side: image | label | prediction | overlay, one row per image."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from ..data.colors import colorize, overlay
from ..errors import ConfigError, DataError
from .images import default_load_mask, load_class_mask, resize_mask
from .plots import grid_axes, save_figure
from .run_folder import resolve_path
from .samples import MaskLoader, Sample, load_sample

GALLERY_COLUMNS = ("image", "label", "prediction", "overlay")


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


def plot_gallery(samples: Sequence[Sample], colors: np.ndarray, stem: str | Path, title: str = "") -> list[Path]:
    """One row per sample: image | label | prediction | overlay (prediction blended at alpha 0.5)."""
    if not samples:
        raise ValueError("gallery needs at least one sample")
    top = 0.7 if title else 0.35
    fig = Figure(figsize=(2.4 * len(GALLERY_COLUMNS) + 0.8, 2.45 * len(samples) + top))
    axes = grid_axes(fig, len(samples), len(GALLERY_COLUMNS), margins=(0.7, 0.1, top, 0.1), gaps=(0.1, 0.15))
    for row, sample in zip(axes, samples):
        pred_rgb = colorize(sample.pred, colors)
        tiles = (sample.image, colorize(sample.label, colors), pred_rgb, overlay(sample.image, pred_rgb, 0.5))
        for ax, tile in zip(row, tiles):
            ax.imshow(tile, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(f"{sample.name}\nIoU {sample.score:.3f}", fontsize="small")
    for ax, name in zip(axes[0], GALLERY_COLUMNS):
        ax.set_title(name)
    if title:
        fig.suptitle(title, y=1 - 0.2 / fig.get_size_inches()[1], va="top")
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


def best_worst_galleries(
    per_image: list[dict[str, Any]],
    bases: list[Path],
    colors: np.ndarray,
    stem_prefix: str | Path,
    k: int = 6,
    class_index: int | None = None,
    class_name: str | None = None,
    load_mask: MaskLoader = default_load_mask,
) -> dict[str, list[Path]]:
    """Write ``<prefix>_best`` and ``<prefix>_worst`` galleries of the k best / worst images.

    Ranked by per_image.csv's IoU, or by the IoU of ``class_index`` when a class is chosen.
    """
    if not per_image:
        raise DataError("per_image.csv is empty: run `seglab eval` to write per-image results")
    scores = image_scores(per_image, bases, class_index, len(colors), load_mask)
    best, worst = select_best_worst(scores, k)
    if not best:
        what = f"class {class_name or class_index!r}" if class_index is not None else "any class"
        raise ConfigError(f"no image contains {what}: choose a class present in the evaluation set")
    label = f" — {class_name or f'class {class_index}'} IoU" if class_index is not None else ""
    out = {}
    for kind, indices in (("best", best), ("worst", worst)):
        samples = [load_sample(per_image[i], bases, load_mask, score=scores[i]) for i in indices]
        out[kind] = plot_gallery(samples, colors, f"{stem_prefix}_{kind}", title=f"{kind.capitalize()} {len(samples)}{label}")
    return out
