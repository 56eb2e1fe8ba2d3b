"""Sliding-window prediction of images of any size, with memory bounded by the tile, not the image.

How it works:

* **Tiles and blending.** Square tiles of ``tile`` pixels overlap by ``overlap`` (a fraction of
  the tile); each tile's output is weighted by a Gaussian centred on the tile (sigma = tile / 8,
  as in nnU-Net, floored away from zero) and the weighted sum is divided by the summed weights.
  Tile edges, where a same-padding network sees no context, get almost no weight, so there are
  no seams.
* **Borders.** The image is virtually mirror-padded (reflection, edge not repeated) by half the
  overlap on every side, so border pixels sit as deep inside a tile as pixels at tile seams do,
  with mirrored context around them. Images smaller than a tile get one centred tile, mirror-padded
  up to the tile size.
* **Overlap-tile strategy for valid-convolution U-Nets** (Ronneberger et al. 2015). With
  ``margin > 0`` every tile is read with ``margin`` extra pixels of (mirrored where outside the
  image) context on each side, i.e. the network sees ``tile + 2 * margin`` pixels, and only the
  central ``tile`` pixels are kept: a valid-convolution network returns exactly those (output =
  input - 2 * margin; e.g. margin 92 for the paper's U-Net with tile 388, input 572), a
  same-size network returns the full input and the centre is cropped. When ``margin`` covers the
  receptive field, tiles agree exactly and the result equals a whole-image prediction.
* **Bounded memory.** Tiles are processed in horizontal strips; only the current strip's
  accumulators (``tile`` rows x image width) are kept. After a strip, the rows no later tile
  touches are finished, written to ``output`` and dropped; the overlap band moves up for the next
  strip. Peak memory is proportional to tile x image width, independent of the image height,
  when the image comes from a window reader and ``output`` is a label writer. (A ``np.memmap``
  output works too, but pages written through a map stay mapped and count as resident memory.)
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..errors import ConfigError
from ..runtime.progress import Progress
from .largeio import (
    WindowReader,
    as_window_reader,
    create_label_writer,
    open_image_reader,
    read_reflected,
)

Forward = Callable[[torch.Tensor], torch.Tensor]
Preprocess = Callable[[np.ndarray], torch.Tensor]

# Floor of the 1-D blending profile (relative to its peak): keeps every weight positive so a
# pixel seen by a single tile edge still gets its value. Non-binding for sigma = tile/8, whose
# edge value is exp(-8) = 3.4e-4; it guards against underflow if the profile is ever narrowed.
MIN_PROFILE_WEIGHT = 1e-4
# Tolerance when checking that forward really returns probabilities.
PROB_SLACK = 1e-3
# Finished rows are normalised and written this many at a time, so the temporaries of that step
# stay small next to the strip accumulator.
ROWS_PER_WRITE = 256


def gaussian_profile(tile: int) -> np.ndarray:
    """1-D nnU-Net blending profile: Gaussian with sigma = tile/8, peak 1, floored above zero."""
    # Written out rather than scipy.ndimage.gaussian_filter on a delta (nnU-Net's way): the closed
    # form is exact, and keeping the 2-D map an outer product makes weight sums separable.
    sigma = tile / 8
    offsets = np.arange(tile, dtype=np.float64) - (tile - 1) / 2
    profile = np.exp(-(offsets**2) / (2 * sigma**2))
    return np.maximum(profile / profile.max(), MIN_PROFILE_WEIGHT)


def gaussian_weight_map(tile: int) -> np.ndarray:
    """2-D blending weights of one tile: the outer product of :func:`gaussian_profile` with itself."""
    profile = gaussian_profile(tile)
    return np.outer(profile, profile).astype(np.float32)


def blend_weight_sums(length: int, tile: int, starts: list[int]) -> np.ndarray:
    """Summed 1-D profiles of all tiles along one axis, cropped to the image.

    The weight sum at (y, x) is rows[y] * cols[x] because every tile's map is an outer product
    and tiles form a grid; so no per-pixel weight accumulator is needed, which halves the strip
    memory and saves one pass over every tile.
    """
    profile = gaussian_profile(tile)
    sums = np.zeros(length, np.float64)
    for start in starts:
        lo, hi = max(start, 0), min(start + tile, length)
        sums[lo:hi] += profile[lo - start:hi - start]
    return sums.astype(np.float32)


def tile_stride(tile: int, overlap: float) -> int:
    """Largest step between tile starts that keeps at least ``overlap`` (fraction of a tile)."""
    return max(1, round(tile * (1 - overlap)))


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Tile start positions along one axis of ``length`` pixels (may be negative: mirrored area)."""
    if length <= tile:
        return [(length - tile) // 2]  # one tile, centred, mirror padding on both sides
    stride = tile_stride(tile, overlap)
    border = (tile - stride) // 2  # mirrored context: half the overlap, like any tile seam
    span = length + 2 * border
    if span <= tile:
        return [(length - tile) // 2]
    count = math.ceil((span - tile) / stride) + 1
    # Spread the tiles evenly over the span (as nnU-Net does) instead of a ragged last step.
    return [-border + round(i * (span - tile) / (count - 1)) for i in range(count)]


def _check_arguments(shape: tuple[int, ...], num_classes: int, tile: int, overlap: float,
                     batch_size: int, margin: int, outputs: str, return_probs: bool) -> None:
    if len(shape) not in (2, 3) or min(shape[:2]) < 1:
        raise ValueError(f"image must be (H, W) or (H, W, C) with positive sides, got shape {shape}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1 (1 = binary with one sigmoid channel), "
                         f"got {num_classes}")
    if not return_probs and num_classes > 256:
        raise ValueError(f"{num_classes} classes do not fit a uint8 label map; "
                         f"use return_probs=True")
    if tile < 1 or batch_size < 1 or margin < 0:
        raise ConfigError(f"need tile >= 1, batch_size >= 1 and margin >= 0, got tile={tile}, "
                          f"batch_size={batch_size}, margin={margin}")
    if not 0 <= overlap < 1:
        raise ConfigError(f"overlap is a fraction of the tile in [0, 1), got {overlap}")
    if outputs not in ("probs", "logits"):
        raise ValueError(f"outputs must be 'probs' or 'logits', got {outputs!r}")


def _as_probabilities(raw: torch.Tensor, num_classes: int, outputs: str) -> torch.Tensor:
    """Float32 CPU probabilities from what ``forward`` returned."""
    raw = raw.detach().float().cpu()
    if outputs == "logits":
        return torch.sigmoid(raw) if num_classes == 1 else torch.softmax(raw, dim=1)
    low, high = float(raw.min()), float(raw.max())
    if low < -PROB_SLACK or high > 1 + PROB_SLACK:
        raise ValueError(f"forward returned values in [{low:.3g}, {high:.3g}], not probabilities; "
                         f"pass outputs='logits' if it returns logits")
    return raw


def _central_tile(probs: torch.Tensor, tile: int, margin: int) -> torch.Tensor:
    """Keep the central ``tile`` pixels of a same-size output; take a valid-conv output as it is."""
    size = tile + 2 * margin
    height, width = probs.shape[-2:]
    if (height, width) == (tile, tile):
        return probs
    if (height, width) == (size, size):
        return probs[..., margin:margin + tile, margin:margin + tile]
    hint = f" or {tile}x{tile} (valid convolutions, margin={margin})" if margin else ""
    raise ValueError(f"forward returned {height}x{width} outputs for {size}x{size} input tiles; "
                     f"expected {size}x{size} (same-size network){hint}. For a valid-convolution "
                     f"network set margin to (input - output) / 2")


def _preprocess_tile(preprocess: Preprocess, pixels: np.ndarray) -> torch.Tensor:
    tensor = preprocess(pixels)
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3 or \
            tuple(tensor.shape[1:]) != pixels.shape[:2]:
        got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise ValueError(f"preprocess must turn an HxWxC array into a CxHxW tensor of the same "
                         f"size; got {got} for a {pixels.shape} tile")
    return tensor


def _tile_batches(band: np.ndarray, band_x0: int, col_starts: list[int], tile: int, margin: int,
                  batch_size: int, preprocess: Preprocess):
    """Yield (tile x positions, preprocessed (N, C, tile+2m, tile+2m) batch) along one strip."""
    size = tile + 2 * margin
    for first in range(0, len(col_starts), batch_size):
        xs = col_starts[first:first + batch_size]
        lefts = [x - margin - band_x0 for x in xs]
        yield xs, torch.stack([_preprocess_tile(preprocess, band[:, left:left + size])
                               for left in lefts])


def _forward_probs(forward: Forward, batch: torch.Tensor, num_classes: int, tile: int,
                   margin: int, outputs: str) -> torch.Tensor:
    """Run ``forward`` on a batch and return (N, K, tile, tile) float32 CPU probabilities."""
    with torch.inference_mode():
        raw = forward(batch)
    if raw.ndim != 4 or tuple(raw.shape[:2]) != (len(batch), num_classes):
        raise ValueError(f"forward returned shape {tuple(raw.shape)} for a batch of {len(batch)}; "
                         f"expected ({len(batch)}, {num_classes}, H, W) with "
                         f"num_classes={num_classes}")
    return _central_tile(_as_probabilities(raw, num_classes, outputs), tile, margin)


def _check_output(output: Any, expected: tuple[int, ...]) -> None:
    shape = tuple(getattr(output, "shape", ()))
    if shape != expected:
        raise ValueError(f"output has shape {shape}, expected {expected} "
                         f"(H, W for labels; H, W, num_classes for probabilities)")


class _StripAccumulator:
    """Weighted sums of probabilities for ``tile`` image rows starting at ``top``."""

    def __init__(self, num_classes: int, tile: int, width: int, top: int,
                 row_weights: torch.Tensor, col_weights: torch.Tensor):
        self.tile, self.width, self.top = tile, width, top
        self.probs = torch.zeros((num_classes, tile, width))
        self.row_weights, self.col_weights = row_weights, col_weights

    def add(self, probs: torch.Tensor, weights: torch.Tensor, height: int, x: int) -> None:
        """Blend one (K, tile, tile) output whose top-left is at (self.top, x), cropped to the image."""
        r0, r1 = max(0, -self.top), min(self.tile, height - self.top)
        c0, c1 = max(0, x), min(self.width, x + self.tile)
        tile_cols = slice(c0 - x, c1 - x)
        self.probs[:, r0:r1, c0:c1].addcmul_(probs[:, r0:r1, tile_cols], weights[r0:r1, tile_cols])

    def finished(self, y0: int, y1: int, return_probs: bool) -> np.ndarray:
        """Image rows y0:y1 as labels (uint8) or probabilities (float32, H x W x K)."""
        probs = self.probs[:, y0 - self.top:y1 - self.top]
        rows = self.row_weights[y0:y1, None]
        if return_probs:
            return (probs / self.col_weights / rows).permute(1, 2, 0).numpy()
        if probs.shape[0] == 1:  # p > 0.5  <=>  weighted sum > half the weight sum
            return (probs[0] / self.col_weights > 0.5 * rows).numpy().astype(np.uint8)
        return probs.argmax(dim=0).numpy().astype(np.uint8)  # the weight sum is the same per class

    def move_to(self, top: int) -> None:
        """Slide down to start at ``top``: keep the overlap band, zero the rows below it."""
        shift = top - self.top
        keep = self.tile - shift
        if shift and keep > 0:
            self.probs[:, :keep] = self.probs[:, shift:].clone()
        if shift:
            self.probs[:, max(keep, 0):] = 0
        self.top = top


def predict_tiled(forward: Forward, image: np.ndarray | WindowReader, *, num_classes: int,
                  tile: int = 512, overlap: float = 0.25, batch_size: int = 4,
                  preprocess: Preprocess, margin: int = 0, output: Any = None,
                  return_probs: bool = False, progress: bool = True,
                  outputs: Literal["probs", "logits"] = "probs") -> Any:
    """Predict an image of any size tile by tile with Gaussian blending; returns labels or probs.

    ``forward`` maps an (N, C, h, w) batch to (N, num_classes, h', w') probabilities (or logits with
    ``outputs='logits'``: sigmoid for one channel, softmax otherwise); ``preprocess`` maps an
    HxWxC tile (grayscale gets C=1) to a CxHxW tensor; batches are built on the CPU and
    ``forward`` moves them to its device. The result is an (H, W) uint8 class-index
    map (one channel: p > 0.5) or, with ``return_probs``, (H, W, num_classes) float32
    probabilities; it is written into ``output`` (array, memmap or label writer) when given, and
    ``output`` is returned.
    """
    reader = as_window_reader(image)
    shape = tuple(reader.shape)
    _check_arguments(shape, num_classes, tile, overlap, batch_size, margin, outputs, return_probs)
    height, width = shape[:2]
    expected = (height, width, num_classes) if return_probs else (height, width)
    if output is None:
        output = np.empty(expected, np.float32 if return_probs else np.uint8)
    _check_output(output, expected)

    row_starts, col_starts = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    weights = torch.from_numpy(gaussian_weight_map(tile))
    strip = _StripAccumulator(num_classes, tile, width, row_starts[0],
                              torch.from_numpy(blend_weight_sums(height, tile, row_starts)),
                              torch.from_numpy(blend_weight_sums(width, tile, col_starts)))
    band_x0 = col_starts[0] - margin
    written = 0
    # a bar on a terminal, a heartbeat line every 30 s in a log file (tqdm's bar would fill it with \r updates)
    with Progress(len(row_starts) * len(col_starts), "tiled prediction", unit="tile", enabled=progress) as bar:
        for index, top in enumerate(row_starts):
            strip.move_to(top)
            # One read per strip: chunked files decode each chunk once per strip, not per tile.
            band = read_reflected(reader, top - margin, top + tile + margin,
                                  band_x0, col_starts[-1] + tile + margin)
            for xs, batch in _tile_batches(band, band_x0, col_starts, tile, margin, batch_size,
                                           preprocess):
                probs = _forward_probs(forward, batch, num_classes, tile, margin, outputs)
                for x, tile_probs in zip(xs, probs):
                    strip.add(tile_probs, weights, height, x)
                bar.update(len(xs))
            # Rows above the next strip's first row get no more contributions: write and drop them.
            done = height if index + 1 == len(row_starts) else min(row_starts[index + 1], height)
            for y in range(written, done, ROWS_PER_WRITE):
                rows_end = min(y + ROWS_PER_WRITE, done)
                output[y:rows_end, 0:width] = strip.finished(y, rows_end, return_probs)
            written = max(written, done)
    return output


def predict_large_file(forward: Forward, in_path: str | Path, out_path: str | Path, *,
                       num_classes: int, tile: int = 512, overlap: float = 0.25,
                       batch_size: int = 4, preprocess: Preprocess, margin: int = 0,
                       outputs: Literal["probs", "logits"] = "probs",
                       progress: bool = True) -> Path:
    """Predict an image file window by window into a label file (GeoTIFF keeps transform and CRS)."""
    out_path = Path(out_path)
    with open_image_reader(in_path) as reader:
        writer = create_label_writer(out_path, reader.shape[:2], like=reader)
        try:
            predict_tiled(forward, reader, num_classes=num_classes, tile=tile, overlap=overlap,
                          batch_size=batch_size, preprocess=preprocess, margin=margin,
                          output=writer, progress=progress, outputs=outputs)
        except BaseException:
            writer.close()
            out_path.unlink(missing_ok=True)  # a half-written label map looks valid: remove it
            raise
        writer.close()
    return out_path


def tiled_batch_probs(forward: Forward, images: torch.Tensor, sizes: list[tuple[int, int]] | torch.Tensor, *,
                      num_classes: int, tile: int, overlap: float = 0.25, margin: int = 0, batch_size: int = 4,
                      outputs: Literal["probs", "logits"] = "logits") -> torch.Tensor:
    """Probabilities of a collated batch of whole images, each predicted by sliding windows.

    For validating and evaluating large images at full resolution: ``images`` is the (N, C, H, W)
    raw batch a loader yields (images padded to the batch's largest), ``sizes`` each image's true
    (h, w). Each image's own (h, w) area is predicted with :func:`predict_tiled`, so the model only
    ever sees ``tile + 2 * margin`` pixels at a time; padding beyond an image stays 0. Returns
    (N, num_classes, H, W) float32 probabilities on the CPU, the shape whole-image validation has.
    """
    n, _, height, width = images.shape
    out = torch.zeros((n, num_classes, height, width), dtype=torch.float32)
    for i in range(n):
        h, w = (int(v) for v in sizes[i])
        pixels = images[i, :, :h, :w].permute(1, 2, 0).numpy()  # HxWxC, the layout predict_tiled reads
        probs = predict_tiled(forward, pixels, num_classes=num_classes, tile=tile, overlap=overlap,
                              batch_size=batch_size, margin=margin, return_probs=True, progress=False,
                              outputs=outputs,
                              preprocess=lambda t: torch.from_numpy(np.ascontiguousarray(t.transpose(2, 0, 1))))
        out[i, :, :h, :w] = torch.from_numpy(probs).permute(2, 0, 1)
    return out
