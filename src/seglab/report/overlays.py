"""What the report paints on images: class colours that show on the image, overlays, error maps and their legends.

A binary task's foreground is drawn in a saturated colour (the run's own colour when it is saturated, else amber):
the built-in white of binary masks vanishes on grey micrographs. Background pixels of a binary task (and class 0
when it is black or named like a background) are left as the image is, so the overlay shows the objects only.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.patches import Patch

from ..data.colors import (FOREGROUND, IGNORED_COLOR, OVERLAY_ALPHA, chroma, overlay_classes,  # noqa: F401
                           palette)
from ..data.colors import display_colors as report_colors  # noqa: F401  (the report's name for them)

# Error colours kept apart from the foreground's (data.colors.FOREGROUND, amber).
FALSE_POSITIVE = (230, 25, 75)  # red: predicted where the label has none
FALSE_NEGATIVE = (0, 120, 255)  # blue: in the label, missed by the prediction
WRONG_CLASS = (255, 0, 255)  # magenta: both have a class, not the same one (multi-class tasks)
ERROR_LABELS = {FALSE_POSITIVE: "false positive (predicted, not in label)",
                FALSE_NEGATIVE: "false negative (in label, missed)", WRONG_CLASS: "wrong class"}


def error_map(image: np.ndarray, label: np.ndarray, pred: np.ndarray, num_classes: int,
              class_index: int | None = None, background: int | None = 0) -> tuple[np.ndarray, dict[str, int]]:
    """The image dimmed to grey with wrong pixels painted: false positives, false negatives (and, multi-class, a wrong
    class); correct and ignored pixels stay grey. With ``class_index`` the errors are those of that class alone.

    Returns the RGB map and the pixel count of each error kind.
    """
    grey = image.astype(np.float32).mean(-1, keepdims=True)
    out = np.repeat(0.35 * grey + 90, 3, axis=-1)  # dimmed and flattened, so the error colours stand out
    valid = (label >= 0) & (label < num_classes)
    if class_index is not None:
        fp = valid & (pred == class_index) & (label != class_index)
        fn = valid & (label == class_index) & (pred != class_index)
        wrong = np.zeros_like(fp)
    elif background is None:  # no background class: every disagreement is a wrong class
        fp = fn = np.zeros(label.shape, dtype=bool)
        wrong = valid & (pred != label)
    else:
        fp = valid & (label == background) & (pred != background)
        fn = valid & (label != background) & (pred == background)
        wrong = valid & (label != background) & (pred != background) & (pred != label)
    for where, color in ((fp, FALSE_POSITIVE), (fn, FALSE_NEGATIVE), (wrong, WRONG_CLASS)):
        out[where] = color
    out[~valid] = 0.5 * out[~valid] + 0.5 * IGNORED_COLOR
    counts = {"false positive": int(fp.sum()), "false negative": int(fn.sum()), "wrong class": int(wrong.sum())}
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), counts


def class_legend(names: Sequence[str], colors: np.ndarray, limit: int = 40) -> list[Patch]:
    """Legend patches of the class colours (at most ``limit``, the rest summed up in one entry)."""
    handles = [Patch(facecolor=np.asarray(c) / 255, edgecolor="black", linewidth=0.5, label=str(n))
               for n, c in zip(list(names)[:limit], colors)]
    if len(names) > limit:
        handles.append(Patch(facecolor="white", edgecolor="white", label=f"... {len(names) - limit} more classes"))
    return handles


def error_legend(multiclass: bool) -> list[Patch]:
    """Legend patches of the error-map colours."""
    kinds = (FALSE_POSITIVE, FALSE_NEGATIVE) + ((WRONG_CLASS,) if multiclass else ())
    return [Patch(facecolor=np.asarray(c) / 255, edgecolor="black", linewidth=0.5, label=ERROR_LABELS[c]) for c in kinds]


def distance_from_grey(painted: np.ndarray, where: np.ndarray) -> float:
    """Mean RGB distance (0..~208) of the painted pixels ``where`` from the nearest grey: how well an overlay shows on a
    grey image, whose own pixels are all grey (a white or grey overlay scores 0, however bright)."""
    if not where.any():
        return 0.0
    pixels = painted.astype(np.float32)[where]
    return float(np.linalg.norm(pixels - pixels.mean(-1, keepdims=True), axis=-1).mean())
