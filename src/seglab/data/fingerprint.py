"""The dataset's fingerprint: the facts a training plan is derived from (after nnU-Net's dataset fingerprint).

Image count and sizes (read from file headers, so thousands of images cost a second), channels and views, and,
from an evenly spaced sample of decoded pairs, the pixel share of each class, per-channel intensity statistics, the
labels' layout (up/down) and how much of them survives halving the resolution.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np

from ..errors import DataError
from .dataset import dtype_scale
from .io import image_size

# Decoded pairs read for class shares and intensities when the dataset is not cached (sizes come from all headers).
MAX_READ = 32
# Orientation is judged only on this many labelled images or more, and when this share of them leans the same way
# as the whole set: a few images with one object near the top say nothing about the data's up and down.
MIN_ORIENTED_IMAGES = 4
CONSISTENT_SHARE = 0.75
MAX_LAYOUT = 128  # masks looked at for orientation and for detail at half resolution
GRIDS = (1, 2, 4)  # orientation is looked for in whole images and in their 2x2 and 4x4 tiles


@dataclass
class Fingerprint:
    """What a training set looks like: sizes (height, width), channels, classes and intensities."""

    images: int
    median_h: int
    median_w: int
    min_h: int
    min_w: int
    max_h: int
    max_w: int
    total_area: int  # pixels over all training images: how many windows cover them once
    channels: int
    num_classes: int
    class_shares: list[float] = field(default_factory=list)  # share of labelled pixels per class (ignore_index aside)
    views: int = 1
    dtype: str = "uint8"
    mean: list[float] = field(default_factory=list)  # per channel, in units of the dtype's full range
    std: list[float] = field(default_factory=list)
    p_low: list[float] = field(default_factory=list)  # 0.5 and 99.5 percentiles, as nnU-Net's intensity properties
    p_high: list[float] = field(default_factory=list)
    # How differently classes sit in the top and bottom halves (left and right halves) of the labelled images: the
    # total-variation distance of the two halves' class distributions, 0 = alike (micrographs, aerial tiles,
    # membrane 0.005, TGS 0.02), towards 1 = classes live in one half (street scenes: sky up, road down; CamVid 0.85).
    up_down: float = 0.0
    left_right: float = 0.0
    # The labels at half resolution (every 2x2 block takes its top-left pixel, then back up): the share of labelled
    # pixels that keep their class, and the lowest IoU of a class with itself. Thin structures lose most: membrane
    # (1-3 px cell walls) 0.965 and 0.85, CamVid street scenes 0.987 and 0.72 (poles), TGS 0.996, field tiles 0.9996.
    half_agreement: float = 1.0
    half_class_iou: float = 1.0

    @property
    def median_area(self) -> int:
        """Pixels of the median image (median height x median width)."""
        return self.median_h * self.median_w

    @property
    def rarest_share(self) -> float:
        """Pixel share of the rarest class that occurs at all (1.0 when nothing was counted)."""
        present = [s for s in self.class_shares if s > 0]
        return min(present) if present else 1.0

    def to_dict(self) -> dict:
        """Plain dict for plan.json."""
        return {**asdict(self), "median_area": self.median_area, "rarest_share": round(self.rarest_share, 6)}

    def describe(self) -> str:
        """``14 images 1600x1200, 6 channels (2 views), 5 classes (rarest 4%)`` (width x height)."""
        chans = f"{self.channels} channel{'s' if self.channels != 1 else ''}"
        if self.views > 1:
            chans += f" ({self.views} views)"
        rarest = f" (rarest {_percent(self.rarest_share)})" if self.class_shares else ""
        return f"{self.images} images {self.median_w}x{self.median_h}, {chans}, {self.num_classes} classes{rarest}"


def _percent(share: float) -> str:
    """0.04 -> ``4%``, 0.004 -> ``0.4%``, 0.00004 -> ``0.004%``: rare classes keep a significant digit."""
    pct = 100 * share
    return f"{pct:.0f}%" if pct >= 1 else f"{pct:.1g}%"


def fingerprint_arrays(sizes: Sequence[tuple[int, int]], masks: Iterable[np.ndarray | None],
                       images: Iterable[np.ndarray], num_classes: int, ignore_index: int, channels: int,
                       views: int = 1) -> Fingerprint:
    """Fingerprint from every image's (height, width), decoded masks (class shares) and images (intensities)."""
    if not sizes:
        raise DataError("no training images to fingerprint")
    hs = np.array([h for h, _ in sizes], dtype=np.int64)
    ws = np.array([w for _, w in sizes], dtype=np.int64)
    masks = list(masks)  # read twice: class shares and layout
    counts = np.zeros(num_classes, dtype=np.int64)
    for mask in masks:
        if mask is not None:
            valid = mask[(mask != ignore_index) & (mask >= 0) & (mask < num_classes)].astype(np.int64)
            counts += np.bincount(valid.ravel(), minlength=num_classes)[:num_classes]
    pixels: list[np.ndarray] = []
    dtype = None
    for image in images:
        dtype = dtype or image.dtype
        flat = image.reshape(-1, image.shape[-1])
        step = max(1, len(flat) // 65536)  # a subsample per image keeps percentiles cheap on big images
        pixels.append(flat[::step].astype(np.float64) / dtype_scale(image.dtype))
    up_down, left_right = layout_asymmetry(masks, num_classes, ignore_index)
    half_agreement, half_class_iou = half_resolution_detail(masks, num_classes, ignore_index)
    shares = (counts / counts.sum()).round(6).tolist() if counts.sum() else []
    stats: dict[str, list[float]] = {}
    if pixels:
        x = np.concatenate(pixels)
        stats = {"mean": x.mean(0), "std": x.std(0), "p_low": np.percentile(x, 0.5, axis=0),
                 "p_high": np.percentile(x, 99.5, axis=0)}
        stats = {k: [round(float(v), 6) for v in vals] for k, vals in stats.items()}
    return Fingerprint(images=len(sizes), median_h=int(np.median(hs)), median_w=int(np.median(ws)),
                       min_h=int(hs.min()), min_w=int(ws.min()), max_h=int(hs.max()), max_w=int(ws.max()),
                       total_area=int((hs * ws).sum()), channels=channels, num_classes=num_classes,
                       class_shares=shares, views=views, dtype=str(dtype or "uint8"), up_down=up_down,
                       left_right=left_right, half_agreement=half_agreement, half_class_iou=half_class_iou, **stats)


def _half_counts(mask: np.ndarray, num_classes: int, ignore_index: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Class pixel counts of the first and the second half of ``mask`` along ``axis`` (0 = rows, 1 = columns)."""
    n = mask.shape[axis]
    halves = (mask[: n // 2], mask[n - n // 2:]) if axis == 0 else (mask[:, : n // 2], mask[:, n - n // 2:])
    out = []
    for half in halves:
        valid = half[(half != ignore_index) & (half >= 0) & (half < num_classes)].astype(np.int64)
        out.append(np.bincount(valid.ravel(), minlength=num_classes)[:num_classes].astype(np.float64))
    return out[0], out[1]


def _asymmetry(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Total-variation distance between the summed first and second halves' class distributions, or 0 when fewer
    than ``CONSISTENT_SHARE`` of the images lean the same way (or too few images are labelled)."""
    pairs = [(a, b) for a, b in pairs if a.sum() > 0 and b.sum() > 0]
    if len(pairs) < MIN_ORIENTED_IMAGES:
        return 0.0
    first, second = sum(a for a, _ in pairs), sum(b for _, b in pairs)
    lean = first / first.sum() - second / second.sum()
    agree = sum(float(np.dot(a / a.sum() - b / b.sum(), lean)) > 0 for a, b in pairs)
    return round(float(0.5 * np.abs(lean).sum()), 4) if agree >= CONSISTENT_SHARE * len(pairs) else 0.0


def _tiles(mask: np.ndarray, grid: int) -> list[np.ndarray]:
    """``mask`` cut into grid x grid tiles (the last row and column take the remainder)."""
    h, w = mask.shape
    ys, xs = np.linspace(0, h, grid + 1).astype(int), np.linspace(0, w, grid + 1).astype(int)
    return [mask[ys[i]:ys[i + 1], xs[j]:xs[j + 1]] for i in range(grid) for j in range(grid)]


def label_sample(masks: Iterable[np.ndarray | None], min_side: int) -> list[np.ndarray]:
    """An even sample of at most about ``MAX_LAYOUT`` 2-D masks with both sides >= ``min_side``: plenty for the
    layout and detail measures, cheap on thousands of masks."""
    masks = [m for m in masks if m is not None and m.ndim == 2 and min(m.shape) >= min_side]
    return masks[:: max(1, len(masks) // MAX_LAYOUT)]


def layout_asymmetry(masks: Iterable[np.ndarray | None], num_classes: int, ignore_index: int) -> tuple[float, float]:
    """(up_down, left_right): how much the labels' class layout differs between the halves of the images, or of
    their tiles (2x2, 4x4: training sees windows, and a large image may be a mosaic of oriented scenes); the
    largest over the three scales (see Fingerprint)."""
    masks = label_sample(masks, min_side=16)
    best = [0.0, 0.0]
    for grid in GRIDS:
        for axis in (0, 1):
            pairs = []
            for mask in masks:
                halves = [_half_counts(tile, num_classes, ignore_index, axis) for tile in _tiles(mask, grid)]
                pairs.append((sum(a for a, _ in halves), sum(b for _, b in halves)))
            best[axis] = max(best[axis], _asymmetry(pairs))
    return best[0], best[1]


def half_resolution_detail(masks: Iterable[np.ndarray | None], num_classes: int,
                           ignore_index: int) -> tuple[float, float]:
    """(share of labelled pixels that keep their class, lowest class IoU) when the labels are halved in resolution
    and brought back (nearest): what a model working at half resolution could reach at best."""
    masks = label_sample(masks, min_side=2)
    inter = np.zeros(num_classes, dtype=np.int64)
    union = np.zeros(num_classes, dtype=np.int64)
    kept = total = 0
    for mask in masks:
        mask = mask[: mask.shape[0] // 2 * 2, : mask.shape[1] // 2 * 2]
        back = np.repeat(np.repeat(mask[::2, ::2], 2, axis=0), 2, axis=1)
        valid = (mask != ignore_index) & (back != ignore_index) & (mask >= 0) & (mask < num_classes) \
            & (back >= 0) & (back < num_classes)
        a, b = mask[valid].astype(np.int64), back[valid].astype(np.int64)
        same = a == b
        kept, total = kept + int(same.sum()), total + int(valid.sum())
        both = np.bincount(a[same], minlength=num_classes)[:num_classes]
        inter += both
        union += np.bincount(a, minlength=num_classes)[:num_classes] + \
            np.bincount(b, minlength=num_classes)[:num_classes] - both
    if not total:
        return 1.0, 1.0
    present = union > 0
    return round(kept / total, 4), round(float((inter[present] / union[present]).min()), 4)


def fingerprint_dataset(ds, views: int = 1, max_read: int = MAX_READ) -> Fingerprint:
    """Fingerprint of a SegmentationDataset (its cached arrays when decoded, else headers and a sample of pairs)."""
    cached = ds.cached_arrays()
    if cached is not None:  # every mask is at hand: exact class shares; intensities from a sample
        sizes = [img.shape[:2] for img, _ in cached]
        masks = [m for _, m in cached]
        images = [img for img, _ in cached[:: max(1, len(cached) // max_read)][:max_read]]
    else:
        sizes = [image_size(s.image) for s in ds.samples]
        pairs = [ds.load_pair(s) for s in ds.samples[:: max(1, len(ds.samples) // max_read)][:max_read]]
        masks, images = [m for _, m in pairs], [img for img, _ in pairs]
    return fingerprint_arrays(sizes, masks, images, ds.codec.num_classes, ds.codec.ignore_index, ds.in_channels,
                              views)
