"""Read masks and micrographs for measurement with seglab's own readers and mask codecs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.io import read_image as read_any_image
from ..data.io import read_mask_raw
from ..data.masks import infer_mask_codec
from ..errors import DataError


def read_mask(path: str | Path, ignore_index: int | None = None, colors: list | None = None) -> np.ndarray:
    """Read a mask as class indices: index/palette as stored, 0/255 binary -> 0/1 (unless 255 is ignore_index),
    RGB colour masks through ``colors`` (or, when not given, colours in order of pixel frequency)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"mask file {str(path)!r} does not exist (check the path)")
    ignore = 255 if ignore_index is None else ignore_index
    mode = "index" if ignore_index == 255 else "auto"  # 255 declared as ignore: not a binary foreground
    codec, _ = infer_mask_codec([path], mode=mode, ignore_index=ignore, colors=colors or ())
    raw, _ = read_mask_raw(path)
    return codec.decode(raw, path)


def read_image(path: str | Path) -> np.ndarray:
    """Read a micrograph as float RGB in [0, 1] for drawing outlines on."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file {str(path)!r} does not exist (check the path)")
    image = read_any_image(path)
    image = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[..., :3]
    if image.dtype == np.uint8:
        return image.astype(np.float64) / 255.0
    image = image.astype(np.float64)
    if image.min() >= 0.0 and image.max() <= 1.0:
        return image
    # 16-bit and unscaled float micrographs rarely use their full range; stretch so outlines have context.
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low) if high > low else np.zeros_like(image)
