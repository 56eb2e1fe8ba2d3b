"""One evaluated image with its label and prediction, loaded from a per_image.csv row."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DataError
from .images import default_load_mask, load_class_mask, load_display_image, resize_mask, shrink_image
from .run_folder import resolve_path

MaskLoader = Callable[[Path], np.ndarray]


@dataclass
class Sample:
    """Display-ready triple: RGB image, label and prediction as (H, W) class indices, plus a score."""

    name: str
    image: np.ndarray
    label: np.ndarray
    pred: np.ndarray
    score: float


def load_sample(
    row: dict[str, Any],
    bases: list[Path],
    load_mask: MaskLoader = default_load_mask,
    score: float | None = None,
    max_side: int | None = 256,
) -> Sample:
    """Load the image, label and prediction named by one per_image.csv row, all at one size.

    The image is shrunk to ``max_side`` for figures; label and prediction follow it with nearest
    resizing, so a prediction written at another resolution still lines up.
    """
    for column in ("image", "mask", "pred"):
        if not row.get(column):
            raise DataError(f"per_image.csv row has no {column!r} path: {row}")
    image_path = resolve_path(str(row["image"]), bases)
    image = load_display_image(image_path)
    if max_side is not None:
        image = shrink_image(image, max_side)
    shape = image.shape[:2]
    label = resize_mask(np.asarray(load_mask(resolve_path(str(row["mask"]), bases))), shape)
    pred = resize_mask(load_class_mask(resolve_path(str(row["pred"]), bases)), shape)
    value = score if score is not None else float(row.get("iou") if row.get("iou") is not None else np.nan)
    return Sample(name=image_path.name, image=image, label=label, pred=pred, score=value)
