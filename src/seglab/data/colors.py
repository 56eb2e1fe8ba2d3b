"""Class colours: a palette per task, class-index masks to RGB, and overlays on images."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from matplotlib.colors import to_rgb

from ..errors import ConfigError

# Pixels whose label is outside 0..C-1 (e.g. CamVid's "Unlabelled" 11, VOC's 255) are drawn in this grey.
IGNORED_COLOR = np.array([128, 128, 128], dtype=np.uint8)


def voc_palette(num_classes: int) -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved class index), the de-facto standard for label colours.

    Written by hand because it is a fixed six-line formula that no installed library exposes.
    """
    colors = np.zeros((num_classes, 3), dtype=np.uint8)
    for index in range(num_classes):
        c, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        colors[index] = (r, g, b)
    return colors


def _parse_color(value: Any, index: int) -> tuple[int, int, int]:
    """One config colour ([r, g, b] in 0..255, "#rrggbb" or a matplotlib name) -> RGB ints."""
    if isinstance(value, str):
        try:
            return tuple(int(round(255 * c)) for c in to_rgb(value))  # type: ignore[return-value]
        except ValueError as exc:
            raise ConfigError(f"colors[{index}]={value!r} is not a colour: use [r, g, b] or '#rrggbb'") from exc
    if isinstance(value, Sequence) and len(value) == 3 and all(isinstance(c, (int, float)) for c in value):
        if not all(0 <= c <= 255 for c in value):
            raise ConfigError(f"colors[{index}]={list(value)} has values outside 0..255")
        return tuple(int(c) for c in value)  # type: ignore[return-value]
    raise ConfigError(f"colors[{index}]={value!r} is not a colour: use [r, g, b] or '#rrggbb'")


def palette(num_classes: int, colors: Sequence[Any] | None = None) -> np.ndarray:
    """(C, 3) uint8 class colours: the config's ``colors`` when given, binary black/white, else VOC colours."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if colors:
        if len(colors) < num_classes:
            raise ConfigError(f"config has {len(colors)} colors for {num_classes} classes: give one colour per class")
        return np.array([_parse_color(c, i) for i, c in enumerate(colors[:num_classes])], dtype=np.uint8)
    if num_classes <= 2:
        return np.array([[0, 0, 0], [240, 240, 240]], dtype=np.uint8)[:num_classes]
    return voc_palette(num_classes)


def to_display_rgb(pixels: np.ndarray) -> np.ndarray:
    """Any image array (H, W), (H, W, C) in any dtype -> (H, W, 3) uint8 for display."""
    if pixels.ndim == 3 and pixels.shape[0] <= 4 and pixels.shape[-1] > 4:
        pixels = np.moveaxis(pixels, 0, -1)  # channels-first TIFF stacks
    if pixels.ndim == 3:
        pixels = pixels[..., :3] if pixels.shape[-1] >= 3 else pixels[..., 0]
    if pixels.dtype != np.uint8:
        # Stretch 16-bit / float data between robust percentiles so dim images stay visible.
        data = pixels.astype(np.float64)
        low, high = np.percentile(data, [0.5, 99.5])
        scale = (high - low) or 1.0
        pixels = (np.clip((data - low) / scale, 0.0, 1.0) * 255).round().astype(np.uint8)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    return np.ascontiguousarray(pixels)


def colorize(mask: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Class-index mask (H, W) -> RGB (H, W, 3) uint8; out-of-range labels become grey."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W) class indices, got shape {mask.shape}")
    index = mask.astype(np.int64)
    valid = (index >= 0) & (index < len(colors))
    rgb = np.empty(mask.shape + (3,), dtype=np.uint8)
    rgb[valid] = colors[index[valid]]
    rgb[~valid] = IGNORED_COLOR
    return rgb


def overlay(image: np.ndarray, color_mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Alpha-blend an RGB colour mask over an RGB image: ``(1-alpha)*image + alpha*mask``."""
    if image.shape != color_mask.shape:
        raise ValueError(f"image {image.shape} and colour mask {color_mask.shape} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be within 0..1, got {alpha}")
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * color_mask.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


# A binary task's object is drawn in a saturated colour that reads on grey, colour and dark images alike: the
# built-in white of binary masks vanishes on grey micrographs.
FOREGROUND = (255, 190, 0)  # amber
OVERLAY_ALPHA = 0.55


def chroma(color: Sequence[int]) -> int:
    """max - min of an RGB colour: 0 for greys, white and black; high for saturated colours."""
    return int(max(color)) - int(min(color))


def display_colors(num_classes: int, class_colors: Sequence[Any] | None = None) -> np.ndarray:
    """(C, 3) colours for predictions, overlays and the report: the run's class colours (data.json / checkpoint
    ``class_colors``, else the config's ``colors``, else the built-in palette), with a binary foreground that is not
    saturated made amber."""
    colors = None
    if class_colors and len(class_colors) >= num_classes:
        try:
            colors = palette(num_classes, list(class_colors))
        except ValueError:
            colors = None
    if colors is None:
        colors = palette(num_classes)
    colors = colors.copy()
    if num_classes == 2 and chroma(colors[1]) < 80:
        colors[1] = FOREGROUND
    return colors


def overlay_classes(image: np.ndarray, mask: np.ndarray, colors: np.ndarray, skip: set[int] = frozenset(),
                    alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """The image with each painted class blended in its colour; ``skip`` classes and ignore labels left as they are."""
    out = image.astype(np.float32).copy()
    index = mask.astype(np.int64)
    paint = (index >= 0) & (index < len(colors))
    for c in skip:
        paint &= index != c
    out[paint] = (1 - alpha) * out[paint] + alpha * colors[index[paint]].astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def write_legend(path: Any, names: Sequence[str], colors: np.ndarray, title: str = "classes") -> Any:
    """A small PNG of one colour swatch per class with its index and name (the key to colour masks and overlays)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    names = [str(n) for n in names] if names and len(names) >= len(colors) else [f"class {i}" for i in
                                                                                 range(len(colors))]
    handles = [Patch(facecolor=np.asarray(c) / 255, edgecolor="0.3", label=f"{i}: {names[i]}")
               for i, c in enumerate(colors)]
    fig = Figure(figsize=(3.2, 0.4 + 0.28 * len(handles)), dpi=100)
    fig.legend(handles=handles, loc="center", frameon=False, title=title)
    fig.savefig(path)
    return path
