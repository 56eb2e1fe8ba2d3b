"""Window-by-window reading and writing of images too big for memory.

Readers expose ``.shape`` ((H, W) or (H, W, C)), ``.dtype``, ``.geo`` (``{"crs", "transform"}`` for
georeferenced files, else None) and ``read(y0, y1, x0, x1) -> ndarray``. Writers expose ``.shape``,
``.dtype`` and numpy-style window assignment ``writer[y0:y1, x0:x1] = block``, so an in-memory
array, a ``np.memmap`` or a writer from :func:`create_label_writer` are interchangeable outputs.

Formats: TIFF/BigTIFF through tifffile (uncompressed contiguous data is memory-mapped per window;
tiled or compressed data is decoded chunk by chunk through zarr), GeoTIFF through rasterio windows
(transform and CRS are kept), PNG/JPEG/BMP through PIL (read whole: such files are small).
"""
from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from ..errors import ConfigError, DataError

TIFF_SUFFIXES = (".tif", ".tiff")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# A PNG is encoded in one go, so its writer holds the whole label map: refuse sizes where that hurts.
PNG_MAX_PIXELS = 100_000_000
# tifffile axis orders that are one 2-D image, with or without a channel axis.
SUPPORTED_TIFF_AXES = ("YX", "YXS", "YXC", "SYX", "CYX")


class WindowReader(Protocol):
    """Anything that can hand out windows of an (H, W[, C]) image."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Return rows y0:y1 and columns x0:x1 (in-bounds) as (h, w[, C])."""


class _ClosingContext:
    """Context-manager boilerplate shared by readers and writers that own a file."""

    def close(self) -> None:
        """Release the underlying file (idempotent)."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# ----------------------------------------------------------------------------------------- readers
class ArrayReader(_ClosingContext):
    """Window reader over an array already in memory (or any numpy-sliceable array)."""

    def __init__(self, array: np.ndarray, geo: dict[str, Any] | None = None):
        if array.ndim not in (2, 3):
            raise ValueError(f"image must be (H, W) or (H, W, C), got shape {tuple(array.shape)}")
        self.array = array
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.geo = geo

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Return rows y0:y1 and columns x0:x1."""
        return np.asarray(self.array[y0:y1, x0:x1])


class _ChannelLastView:
    """Maps (h, w[, C]) window requests onto a tifffile series with axes YX, YXS/YXC or SYX/CYX."""

    def __init__(self, axes: str, series_shape: tuple[int, ...]):
        self.channels_first = axes in ("SYX", "CYX")
        if self.channels_first:
            c, h, w = series_shape
            self.shape = (h, w) if c == 1 else (h, w, c)
        else:
            self.shape = tuple(series_shape) if len(series_shape) == 2 or series_shape[2] > 1 \
                else tuple(series_shape[:2])

    def window(self, source: Any, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Slice ``source`` (the series array, in its own axis order) and return channels last."""
        if self.channels_first:
            block = np.moveaxis(np.asarray(source[:, y0:y1, x0:x1]), 0, -1)
        else:
            block = np.asarray(source[y0:y1, x0:x1])
        return block.reshape((y1 - y0, x1 - x0) + self.shape[2:])


class ContiguousTiffReader(_ClosingContext):
    """Uncompressed, contiguous TIFF read through a memory map of just the requested window.

    The map is opened per ``read`` and dropped afterwards because pages touched through a
    long-lived map count as this process's resident memory and would pile up to the file size
    over a whole-image pass; a fresh map per window keeps the footprint at the window.
    """

    def __init__(self, path: Path, offset: int, series_shape: tuple[int, ...], dtype: np.dtype,
                 axes: str):
        self.path = path
        self._offset = offset
        self._series_shape = series_shape
        self._view = _ChannelLastView(axes, series_shape)
        self.shape = self._view.shape
        self.dtype = np.dtype(dtype)
        self.geo = None

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Return rows y0:y1 and columns x0:x1 (a copy; the map is closed on return)."""
        mapped = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self._offset,
                           shape=self._series_shape)
        window = np.array(self._view.window(mapped, y0, y1, x0, x1))
        del mapped  # the last reference: the file is unmapped here, not at some later collection
        return window


class ChunkedTiffReader(_ClosingContext):
    """Tiled or compressed TIFF read through tifffile's zarr store: only touched chunks are decoded."""

    def __init__(self, path: Path, tiff: Any, axes: str):
        try:
            import zarr
        except ImportError as err:
            raise ImportError(f"{path} is compressed or tiled; reading it window by window needs "
                              f"zarr: pip install zarr") from err
        self.path = path
        self._tiff = tiff
        self._store = tiff.series[0].aszarr(level=0)  # full resolution of a pyramid
        self._array = zarr.open(self._store, mode="r")
        self._view = _ChannelLastView(axes, tuple(self._array.shape))
        self.shape = self._view.shape
        self.dtype = np.dtype(self._array.dtype)
        self.geo = None

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Return rows y0:y1 and columns x0:x1."""
        return self._view.window(self._array, y0, y1, x0, x1)

    def close(self) -> None:
        """Close the zarr store and the TIFF file."""
        self._store.close()
        self._tiff.close()


class RasterioReader(_ClosingContext):
    """GeoTIFF (or any GDAL raster) read through rasterio windows; keeps transform and CRS."""

    def __init__(self, path: Path):
        import rasterio

        try:
            self._dataset = rasterio.open(path)
        except rasterio.errors.RasterioIOError as err:
            raise DataError(f"cannot read {path} with rasterio: {err}") from err
        ds = self._dataset
        self.path = path
        self.shape = (ds.height, ds.width) if ds.count == 1 else (ds.height, ds.width, ds.count)
        self.dtype = np.dtype(ds.dtypes[0])
        self.geo = {"crs": ds.crs, "transform": ds.transform}

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Return rows y0:y1 and columns x0:x1 as (h, w[, C])."""
        from rasterio.windows import Window

        bands = self._dataset.read(window=Window(x0, y0, x1 - x0, y1 - y0))
        return bands[0] if self._dataset.count == 1 else np.moveaxis(bands, 0, -1)

    def close(self) -> None:
        """Close the dataset."""
        self._dataset.close()


def _rasterio_available() -> bool:
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return False
    return True


def _open_tiff_reader(path: Path) -> WindowReader:
    import tifffile

    try:
        tiff = tifffile.TiffFile(path)
    except (tifffile.TiffFileError, ValueError, OSError) as err:
        raise DataError(f"cannot read {path} as a TIFF file: {err}") from err
    if tiff.is_geotiff:
        tiff.close()
        if not _rasterio_available():
            raise ImportError(f"{path} is a GeoTIFF; reading it without dropping its georeferencing "
                              f"needs rasterio: pip install rasterio")
        return RasterioReader(path)
    series = tiff.series[0]
    if series.axes not in SUPPORTED_TIFF_AXES:
        tiff.close()
        raise DataError(f"{path} holds an image with axes {series.axes!r} and shape {series.shape}; "
                        f"tiled prediction takes one 2-D image (axes YX, YXS or SYX): "
                        f"save a single plane")
    if series.dataoffset is not None:  # uncompressed and contiguous: map it, no decoding needed
        reader = ContiguousTiffReader(path, series.dataoffset, tuple(series.shape),
                                      series.dtype, series.axes)
        tiff.close()
        return reader
    try:
        return ChunkedTiffReader(path, tiff, series.axes)
    except BaseException:
        tiff.close()
        raise


def _open_pil_reader(path: Path) -> ArrayReader:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            # Palette/CMYK/etc. carry no meaning as raw numbers: decode to plain RGB(A) pixels.
            if image.mode not in ("L", "RGB", "RGBA", "I;16", "I", "F"):
                image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
            return ArrayReader(np.asarray(image))
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"cannot read {path} as an image: {err}") from err


def open_image_reader(path: str | Path) -> WindowReader:
    """Open an image file for window-by-window reading (TIFF/BigTIFF, GeoTIFF, PNG, JPEG, BMP)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return _open_tiff_reader(path)
    if suffix in PIL_SUFFIXES:
        return _open_pil_reader(path)
    raise DataError(f"unsupported image format {suffix!r} for {path}; use one of "
                    f"{', '.join(TIFF_SUFFIXES + PIL_SUFFIXES)}")


def as_window_reader(image: Any) -> WindowReader:
    """Return ``image`` itself when it is a window reader, else wrap an array in an ArrayReader."""
    if hasattr(image, "read") and hasattr(image, "shape") and hasattr(image, "dtype"):
        return image
    if isinstance(image, (str, Path)):
        raise TypeError(f"got a path ({image}); open it with open_image_reader() or use "
                        f"predict_large_file()")
    if all(hasattr(image, name) for name in ("shape", "dtype", "ndim", "__getitem__")):
        return ArrayReader(image)  # numpy, memmap, zarr, h5py...: sliced lazily, window by window
    return ArrayReader(np.asarray(image))


def reflect_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Indices start..stop-1 folded into [0, size) by mirror reflection without repeating the edge."""
    index = np.arange(start, stop)
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    index = index % period
    return np.where(index >= size, period - index, index)


def _mirror_axis(block: np.ndarray, axis: int, start: int, stop: int, first: int,
                 size: int) -> np.ndarray:
    """Extend ``block`` (image indices first.. along ``axis``) to the mirrored window start:stop."""
    before, after = max(0, -start), max(0, stop - size)
    if before == 0 and after == 0:
        return block if first == start and block.shape[axis] == stop - start else \
            block.take(np.arange(start - first, stop - first), axis=axis)
    if start < size and stop > 0 and before < size and after < size:
        # One reflection per side: np.pad copies contiguous runs, many times faster than a
        # gather, whose output would also come out column-major and slow every later copy.
        widths = [(0, 0)] * block.ndim
        widths[axis] = (before, after)
        padded = np.pad(block, widths, mode="reflect")
        offset = start + before - first
        return padded.take(np.arange(offset, offset + stop - start), axis=axis) \
            if offset or padded.shape[axis] != stop - start else padded
    # Several reflections (window much larger than the image): plain gather, rare and small.
    index = reflect_indices(start, stop, size) - first
    return np.ascontiguousarray(block.take(index, axis=axis))


def read_reflected(reader: WindowReader, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Read a window that may reach outside the image; outside pixels are mirrored. Returns (h, w, C)."""
    height, width = reader.shape[:2]
    rows = reflect_indices(y0, y1, height)
    cols = reflect_indices(x0, x1, width)
    r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    block = reader.read(r0, r1, c0, c1)
    if block.ndim == 2:
        block = block[:, :, None]
    block = _mirror_axis(block, 0, y0, y1, r0, height)
    return _mirror_axis(block, 1, x0, x1, c0, width)


# ----------------------------------------------------------------------------------------- writers
def _window(key: Any, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Turn ``writer[ys, xs]`` slices into (y0, y1, x0, x1), rejecting steps and fancy indexing."""
    if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, slice) for k in key)):
        raise ValueError(f"label writers take windows as writer[y0:y1, x0:x1], got {key!r}")
    (y0, y1, ystep), (x0, x1, xstep) = (k.indices(n) for k, n in zip(key, shape))
    if ystep != 1 or xstep != 1:
        raise ValueError("label writers take contiguous windows (no slice steps)")
    return y0, y1, x0, x1


def _checked_block(block: np.ndarray, window: tuple[int, int, int, int],
                   dtype: np.dtype) -> np.ndarray:
    y0, y1, x0, x1 = window
    block = np.asarray(block)
    if block.shape != (y1 - y0, x1 - x0):
        raise ValueError(f"window [{y0}:{y1}, {x0}:{x1}] needs a {(y1 - y0, x1 - x0)} block, "
                         f"got shape {block.shape}")
    return np.ascontiguousarray(block, dtype=dtype)


class TiffLabelWriter(_ClosingContext):
    """Uncompressed (Big)TIFF label map whose windows are written in place.

    The empty image is laid out by tifffile (BigTIFF automatically above 4 GB); windows are then
    written with plain seek+write rather than through a memory map, because touched mapped pages
    count as resident memory and would grow to the file size. Uncompressed so that any window can
    be written in any order.
    """

    def __init__(self, path: Path, shape: tuple[int, int]):
        import tifffile

        self.path = path
        self.shape = tuple(shape)
        self.dtype = np.dtype(np.uint8)
        placement = tifffile.imwrite(path, shape=self.shape, dtype=self.dtype,
                                     photometric="minisblack", metadata=None, returnoffset=True)
        self._offset = placement[0]
        self._file = open(path, "r+b")  # noqa: SIM115 -- open for the writer's lifetime, closed in close()

    def __setitem__(self, key: Any, block: np.ndarray) -> None:
        window = _window(key, self.shape)
        y0, y1, x0, x1 = window
        data = _checked_block(block, window, self.dtype)
        row_bytes = self.shape[1] * self.dtype.itemsize
        if x0 == 0 and x1 == self.shape[1]:  # full-width rows are one contiguous run in the file
            self._file.seek(self._offset + y0 * row_bytes)
            self._file.write(data.tobytes())
            return
        for row, values in zip(range(y0, y1), data):
            self._file.seek(self._offset + row * row_bytes + x0 * self.dtype.itemsize)
            self._file.write(values.tobytes())

    def close(self) -> None:
        """Flush and close the file."""
        if not self._file.closed:
            self._file.close()


class PngLabelWriter(_ClosingContext):
    """PNG label map for small outputs: collected in memory, encoded on close."""

    def __init__(self, path: Path, shape: tuple[int, int]):
        if shape[0] * shape[1] > PNG_MAX_PIXELS:
            raise ConfigError(f"{path}: a {shape[0]}x{shape[1]} label map is too big for PNG "
                              f"(written in one piece); write a .tif instead")
        self.path = path
        self.shape = tuple(shape)
        self.dtype = np.dtype(np.uint8)
        self._labels = np.zeros(self.shape, self.dtype)
        self._closed = False

    def __setitem__(self, key: Any, block: np.ndarray) -> None:
        window = _window(key, self.shape)
        y0, y1, x0, x1 = window
        self._labels[y0:y1, x0:x1] = _checked_block(block, window, self.dtype)

    def close(self) -> None:
        """Encode the PNG (once)."""
        from PIL import Image

        if not self._closed:
            Image.fromarray(self._labels).save(self.path)
            self._closed = True


class GeoTiffLabelWriter(_ClosingContext):
    """Tiled, deflate-compressed GeoTIFF label map with a given CRS and affine transform."""

    def __init__(self, path: Path, shape: tuple[int, int], geo: dict[str, Any]):
        import rasterio

        self.path = path
        self.shape = tuple(shape)
        self.dtype = np.dtype(np.uint8)
        self._dataset = rasterio.open(
            path, "w", driver="GTiff", height=shape[0], width=shape[1], count=1, dtype="uint8",
            crs=geo["crs"], transform=geo["transform"], tiled=True, blockxsize=256,
            blockysize=256, compress="deflate", BIGTIFF="IF_SAFER")

    def __setitem__(self, key: Any, block: np.ndarray) -> None:
        from rasterio.windows import Window

        window = _window(key, self.shape)
        y0, y1, x0, x1 = window
        self._dataset.write(_checked_block(block, window, self.dtype), 1,
                            window=Window(x0, y0, x1 - x0, y1 - y0))

    def close(self) -> None:
        """Finish and close the GeoTIFF."""
        if not self._dataset.closed:
            self._dataset.close()


def create_label_writer(path: str | Path, shape: tuple[int, int],
                        like: WindowReader | str | Path | None = None) -> Any:
    """Create a uint8 class-index writer: GeoTIFF when ``like`` is georeferenced, else TIFF or PNG."""
    path = Path(path)
    shape = tuple(int(n) for n in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"label map shape must be (H, W) with positive sides, got {shape}")
    if isinstance(like, (str, Path)):
        with open_image_reader(like) as reader:
            geo = reader.geo
    else:
        geo = getattr(like, "geo", None)
    suffix = path.suffix.lower()
    if suffix not in TIFF_SUFFIXES + (".png",):
        raise ConfigError(f"unsupported output format {suffix!r} for {path}; use .tif, .tiff or .png")
    path.parent.mkdir(parents=True, exist_ok=True)
    if geo is not None:
        if suffix == ".png":
            raise ConfigError(f"{path}: the input is georeferenced; write a .tif to keep its "
                              f"transform and CRS")
        return GeoTiffLabelWriter(path, shape, geo)
    if suffix == ".png":
        return PngLabelWriter(path, shape)
    return TiffLabelWriter(path, shape)
