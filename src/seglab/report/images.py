"""Read images and masks for display: any bit depth or channel count -> RGB uint8; masks -> class indices."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..data.colors import to_display_rgb
from ..errors import DataError


def _read_array(path: Path) -> np.ndarray:
    """Pixels of an image file; TIFF stacks PIL cannot open go through tifffile."""
    if not path.is_file():
        raise DataError(f"image file {str(path)!r} does not exist: check the paths in per_image.csv")
    try:
        with Image.open(path) as img:
            return np.array(img)
    except (OSError, ValueError) as exc:
        if path.suffix.lower() not in (".tif", ".tiff"):
            raise DataError(f"cannot read image {str(path)!r}: {exc}") from exc
        import tifffile  # only TIFFs that PIL cannot read (multi-channel, float) need it

        try:
            return tifffile.imread(path)
        except (OSError, ValueError) as tiff_exc:  # tifffile.TiffFileError is a ValueError
            raise DataError(f"cannot read image {str(path)!r}: {tiff_exc}") from tiff_exc


def load_display_image(path: str | Path) -> np.ndarray:
    """Image file -> (H, W, 3) uint8 for display."""
    return to_display_rgb(_read_array(Path(path)))


def default_load_mask(path: str | Path) -> np.ndarray:
    """Simple label reader: indexed/grey PNG -> (H, W) ints; a 0/255 mask becomes 0/1.

    RGB colour masks need the dataset's decoder: pass ``load_mask=`` instead.
    """
    path = Path(path)
    pixels = _read_array(path)
    if pixels.ndim == 3:
        if pixels.shape[-1] in (3, 4) and np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(
            pixels[..., 0], pixels[..., 2]
        ):
            pixels = pixels[..., 0]  # grey stored as RGB
        else:
            raise DataError(
                f"mask {str(path)!r} is an RGB colour mask: pass load_mask= with the dataset's colour decoder"
            )
    values = np.unique(pixels)
    if values.size and set(values.tolist()) <= {0, 255} and 255 in values:
        pixels = (pixels == 255)
    return pixels.astype(np.int64)


def load_class_mask(path: str | Path) -> np.ndarray:
    """Predicted class-index PNG (written by ``seglab eval``) -> (H, W) ints, values as stored."""
    pixels = _read_array(Path(path))
    if pixels.ndim != 2:
        raise DataError(f"prediction {str(path)!r} must be a single-channel class-index image, got {pixels.shape}")
    return pixels.astype(np.int64)


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a class mask (classes must not be interpolated)."""
    if mask.shape[:2] == tuple(shape):
        return mask
    # PIL's 32-bit integer mode resizes class indices without scipy's import cost.
    resized = Image.fromarray(mask.astype(np.int32)).resize((shape[1], shape[0]), Image.Resampling.NEAREST)
    return np.array(resized).astype(mask.dtype)


def shrink_image(image: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale an RGB image so its longer side is at most ``max_side`` (keeps figures small)."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.array(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
