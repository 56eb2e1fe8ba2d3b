"""Read images and raw masks from disk into numpy arrays, with errors that name the file.

Images come back as (H, W, C) uint8/uint16/float32; raw masks as (H, W) or (H, W, 3) arrays plus a
flag telling whether the file was a palette PNG (whose indices are class indices, as in PASCAL VOC).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
TIFF_EXTS = (".tif", ".tiff")
# Image formats seglab does not read (camera and phone formats, vector graphics): a folder source lists them so
# that they are reported as skipped ("unsupported format (.heic)") instead of vanishing without a word.
OTHER_IMAGE_EXTS = (".heic", ".heif", ".avif", ".jxl", ".jp2", ".j2k", ".dng", ".cr2", ".cr3", ".nef", ".arw",
                    ".raw", ".psd", ".svg", ".ico")

# Decompression-bomb guard off: huge micrographs and scenes are the point; tiled prediction bounds memory.
Image.MAX_IMAGE_PIXELS = None


def _read_tiff(path: Path) -> np.ndarray:
    """Read a TIFF with tifffile (16-bit, float and multi-channel stacks that PIL cannot)."""
    import tifffile

    try:
        arr = tifffile.imread(str(path))
    except Exception as e:  # tifffile raises many types for corrupt files
        raise DataError(f"{path}: cannot read TIFF ({type(e).__name__}: {e})") from None
    if arr.dtype.kind not in "biuf":  # complex or structured samples: no model input or mask means anything here
        raise DataError(f"{path}: unsupported TIFF pixel type {arr.dtype}; expected integer or float samples")
    if arr.ndim == 3 and arr.shape[0] < arr.shape[-1] and arr.shape[0] <= 16 and arr.shape[-1] > 16:
        arr = np.moveaxis(arr, 0, -1)  # planar (C, H, W) stacks -> (H, W, C)
    return arr


def unsupported_format(path: Path) -> DataError:
    """The error for an existing file whose format seglab cannot read, told apart from a missing or corrupt one."""
    suffix = path.suffix.lower() or "no extension"
    return DataError(f"{path}: unsupported format ({suffix}); seglab reads {', '.join(IMAGE_EXTS)}: "
                     "convert it (e.g. to PNG or TIFF)")


def _open_pil(path: Path) -> Image.Image:
    """Open and fully decode an image with PIL, turning every failure into a DataError."""
    try:
        img = Image.open(path)
        img.load()
        return img
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected an image file") from None
    except UnidentifiedImageError:
        if path.suffix.lower() not in IMAGE_EXTS:  # x.heic: a real photo, in a format PIL does not decode
            raise unsupported_format(path) from None
        raise DataError(f"{path}: not an image (unknown or corrupt format)") from None
    except OSError as e:
        if e.errno is not None:  # the OS refused (permissions, a symlink loop, a broken link), not the decoder
            raise DataError(f"{path}: cannot open ({e.strerror})") from None
        raise DataError(f"{path}: corrupt or truncated image ({e})") from None
    except MemoryError:
        raise DataError(f"{path}: the header claims more pixels than memory holds (corrupt file?)") from None
    except Exception as e:  # decoders given damaged bytes raise many types (SyntaxError, OverflowError, struct.error)
        raise DataError(f"{path}: corrupt or truncated image ({type(e).__name__}: {e})") from None


def _check_size(path: Path, arr: np.ndarray) -> np.ndarray:
    """Reject empty arrays (0-sized images) early."""
    if arr.ndim < 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{path}: image has no pixels (shape {arr.shape})")
    return arr


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as (H, W, C): gray -> C=1, RGBA -> RGB (alpha dropped), 16-bit kept as uint16."""
    path = Path(path)
    if path.suffix.lower() in TIFF_EXTS:
        arr = _read_tiff(path)
    else:
        img = _open_pil(path)
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        if img.mode in ("I;16", "I;16B", "I;16L"):
            arr = np.asarray(img, dtype=np.uint16)
        elif img.mode == "I":
            arr = np.asarray(img).astype(np.int64)
            arr = arr.astype(np.uint16) if arr.min() >= 0 and arr.max() < 65536 else arr.astype(np.float32)
        elif img.mode in ("1", "L", "LA", "RGB", "RGBA", "F"):
            arr = np.asarray(img)
        else:  # CMYK, YCbCr, ...: convert to RGB, which is what a user means by "the image"
            arr = np.asarray(img.convert("RGB"))
        if img.mode in ("RGBA", "LA"):
            arr = arr[..., :-1]  # alpha is transparency, not a measurement
    arr = _check_size(path, np.asarray(arr))
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise DataError(f"{path}: expected a 2-D image with channels, got shape {arr.shape}")
    return _writable(arr)


def _writable(arr: np.ndarray) -> np.ndarray:
    """A C-contiguous array that owns writable memory: ``np.asarray`` of a PIL image is a read-only view of its
    buffer, and ``torch.from_numpy`` of such an array warns (and shares memory it must not write)."""
    arr = np.ascontiguousarray(arr)
    return arr if arr.flags.writeable else arr.copy()


def read_mask_raw(path: str | Path) -> tuple[np.ndarray, bool]:
    """Read a mask as stored: (H, W) values or (H, W, 3) colours; the flag is True for palette PNGs."""
    path = Path(path)
    if path.suffix.lower() in TIFF_EXTS:
        arr = _read_tiff(path)
        palette = False
    else:
        img = _open_pil(path)
        palette = img.mode == "P"
        if img.mode in ("RGBA", "LA"):
            img = img.convert(img.mode[:-1])
        elif img.mode not in ("P", "L", "1", "RGB", "I", "I;16", "I;16B", "I;16L", "F"):
            img = img.convert("RGB")
        arr = np.asarray(img)
    arr = _check_size(path, np.asarray(arr))
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.ndim == 3 and arr.shape[2] == 3 and (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all():
        arr = arr[..., 0]  # gray saved as RGB
    if arr.ndim not in (2, 3):  # e.g. a multi-page TIFF stack
        raise DataError(f"{path}: a mask must be a 2-D image, got an array of shape {arr.shape}")
    if arr.ndim == 3 and arr.shape[2] != 3:
        raise DataError(f"{path}: a mask must be one channel or RGB colours, got {arr.shape[2]} channels")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
            raise DataError(f"{path}: mask holds non-integer values; save class indices as integers")
        arr = arr.astype(np.int64)
    return _writable(arr), palette


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image without decoding all its pixels when the format allows."""
    path = Path(path)
    if path.suffix.lower() in TIFF_EXTS:
        import tifffile

        try:
            with tifffile.TiffFile(str(path)) as tif:
                page = tif.pages[0]
                return int(page.imagelength), int(page.imagewidth)
        except Exception as e:
            raise DataError(f"{path}: cannot read TIFF ({type(e).__name__}: {e})") from None
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except Exception as e:  # as in _open_pil: a damaged header can make PIL raise any type
        raise DataError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
