"""Read class-index masks and micrographs from disk (PNG, TIFF and anything Pillow opens)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

_TIFF_SUFFIXES = {".tif", ".tiff"}


def _read_array(path: Path, what: str) -> np.ndarray:
    """Read an image file into a numpy array, raising a ValueError that names the file on failure."""
    if not path.is_file():
        raise ValueError(f"{what} file {str(path)!r} does not exist (check the path)")
    try:
        if path.suffix.lower() in _TIFF_SUFFIXES:
            # tifffile keeps 16-bit, float and multi-sample TIFFs intact where Pillow would convert or refuse them.
            return np.asarray(tifffile.imread(path))
        with Image.open(path) as image:
            # np.asarray on a palette ("P") image yields the palette indices, which is what class masks store.
            return np.asarray(image)
    except Exception as error:  # noqa: BLE001 -- Pillow and tifffile raise many unrelated types for unreadable files
        raise ValueError(f"cannot read {what} file {str(path)!r}: {error}") from None


def read_mask(path: str | Path, ignore_index: int | None = None) -> np.ndarray:
    """Read a class-index mask (2-D); 0/255 binary masks become 0/1 unless 255 is the ignore_index."""
    path = Path(path)
    mask = _read_array(path, "mask")
    if mask.ndim == 3 and mask.shape[-1] in (3, 4):
        colour = mask[..., :3]
        # Greyscale masks saved as RGB(A) carry the class index in every channel; a real colour mask does not.
        if not (np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 0], colour[..., 2])):
            raise ValueError(
                f"mask file {str(path)!r} is a colour image; seglab measure needs one class index per pixel "
                "(a greyscale or palette PNG/TIFF with values 0..C-1)"
            )
        mask = colour[..., 0]
    if mask.ndim != 2:
        raise ValueError(f"mask file {str(path)!r} has shape {mask.shape}; expected a single 2-D class-index image")
    if mask.dtype == bool:
        return mask.astype(np.uint8)
    values = np.unique(mask)
    if ignore_index != 255 and 255 in values and np.all(np.isin(values, (0, 255))):
        return (mask == 255).astype(np.uint8)
    return mask


def read_image(path: str | Path) -> np.ndarray:
    """Read a micrograph as float RGB in [0, 1] for drawing outlines on."""
    path = Path(path)
    image = _read_array(path, "image")
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image file {str(path)!r} has shape {image.shape}; expected a greyscale or RGB image")
    if image.dtype == np.uint8:
        return image.astype(np.float64) / 255.0
    image = image.astype(np.float64)
    if image.min() >= 0.0 and image.max() <= 1.0:
        return image
    # 16-bit and unscaled float micrographs rarely use their full range; stretch so outlines have context.
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low) if high > low else np.zeros_like(image)
