"""The dataset's fingerprint: the facts a training plan is derived from (after nnU-Net's dataset fingerprint).

Image count and sizes (read from file headers, so thousands of images cost a second), channels and views, and,
from an evenly spaced sample of decoded pairs, the pixel share of each class and per-channel intensity statistics.
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
                       class_shares=shares, views=views, dtype=str(dtype or "uint8"), **stats)


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
