"""The segmentation Dataset: decode (once, into RAM when small), augment, hand out uint8/uint16 tensors."""
from __future__ import annotations

import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DataError
from .formats import Sample
from .io import read_image, read_mask_raw
from .masks import MaskCodec
from .transforms import pad_for_eval


def is_gray_rgb(image: np.ndarray) -> bool:
    """True for 3-channel images whose channels are identical (gray saved as RGB, e.g. TGS)."""
    return image.shape[2] == 3 and (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()


def infer_in_channels(samples: Sequence[Sample], max_files: int = 16, view: int = 0) -> int:
    """Channels of the images (of view ``view``); gray-as-RGB counts as 1 (the model then sees the one real channel)."""
    step = max(1, len(samples) // max_files)
    chans: Counter = Counter()
    errors = []
    for s in list(samples)[::step][:max_files]:
        try:
            img = read_image(s.views[view])
        except DataError as e:  # reported with every other bad file when the dataset is decoded
            errors.append(e)
            continue
        chans[1 if is_gray_rgb(img) else img.shape[2]] += 1
    if not chans:
        raise errors[0] if errors else DataError("no images to inspect")
    if set(chans) == {1, 3}:
        return 3  # a few gray images among RGB ones: they are expanded to RGB when read
    # The majority wins; images with another channel count fail (or are skipped) by name when decoded.
    return chans.most_common(1)[0][0]


def load_image(path: Path, in_channels: int) -> np.ndarray:
    """Read an image and bring it to ``in_channels`` (RGB gray -> 1, gray -> RGB), or fail naming the file."""
    img = read_image(path)
    c = img.shape[2]
    if c == in_channels:
        return img
    if in_channels == 1 and c == 3 and is_gray_rgb(img):
        return img[..., :1].copy()
    if in_channels == 3 and c == 1:
        return np.repeat(img, 3, axis=2)
    raise DataError(f"{path}: image has {c} channels but the model expects in_channels={in_channels}")


def split_channels(in_channels: int, views: int) -> list[int]:
    """Channels per view when only the total is known: an even split (two RGB photographs: 6 -> [3, 3])."""
    if views == 1:
        return [in_channels]
    if in_channels % views:
        raise ConfigError(f"in_channels={in_channels} cannot be divided evenly over {views} views; leave "
                          "in_channels=0 to infer each view's channels from the images")
    return [in_channels // views] * views


def load_sample_image(sample: Sample, view_channels: Sequence[int]) -> np.ndarray:
    """Every view of a sample read to its channel count and stacked as channels: (H, W, sum(view_channels))."""
    views = sample.views
    if len(views) != len(view_channels):
        names = ", ".join(str(v) for v in views)
        raise DataError(f"{names}: {len(views)} view(s) given, but the model takes {len(view_channels)} per sample; "
                        f"name {len(view_channels)} image(s) per sample (list-file line or image_dirs)")
    arrays = [load_image(p, c) for p, c in zip(views, view_channels)]
    if len(arrays) == 1:
        return arrays[0]
    if len({a.shape[:2] for a in arrays}) > 1:
        sizes = ", ".join(f"{p} is {a.shape[1]}x{a.shape[0]}" for p, a in zip(views, arrays))
        raise DataError(f"views of sample {sample.id!r} differ in size: {sizes} (width x height); every view of a "
                        "sample must cover the same pixels: resize or crop them alike")
    if len({a.dtype for a in arrays}) > 1:
        types = ", ".join(f"{p} is {a.dtype}" for p, a in zip(views, arrays))
        raise DataError(f"views of sample {sample.id!r} differ in pixel type: {types}; convert them to one bit depth "
                        "(each is scaled by its type's range, so mixing would mis-scale one view)")
    return np.concatenate(arrays, axis=2)


def meta_view_channels(meta: dict) -> list[int]:
    """Channels per view of a checkpoint's meta (older checkpoints: one view of ``in_channels``)."""
    return list(meta.get("view_channels") or [meta["in_channels"]])


class SegmentationDataset(Dataset):
    """Image/mask pairs as tensors: image (C,H,W) in its stored dtype, mask (H,W) int64 class indices.

    Samples of several views are stacked as channels; ``view_channels`` gives each view's channels (default: one
    view of ``in_channels``, or ``in_channels`` split evenly over the views).
    """

    def __init__(self, samples: Sequence[Sample], codec: MaskCodec, in_channels: int,
                 transform: Callable | None = None, pad_to: int = 0, pad_mode: str = "reflect",
                 cache: bool = False, rle: dict[str, str] | None = None, on_error: str = "raise",
                 workers: int = 4, view_channels: Sequence[int] | None = None, split: str = ""):
        self.split = split  # "train", "val", "test": named in errors ("1 of the 1 val samples cannot be used")
        self.codec, self.in_channels, self.transform = codec, in_channels, transform
        self.view_channels = list(view_channels) if view_channels else None
        self.pad_to, self.pad_mode, self.rle = pad_to, pad_mode, rle
        self.samples = list(samples)
        self._cache: list[tuple[np.ndarray, np.ndarray | None]] | None = None
        if cache or on_error == "skip":
            self._decode_all(on_error, workers, keep=cache)

    def _decode_all(self, on_error: str, workers: int, keep: bool) -> None:
        """Decode every pair once (threads: PIL and numpy release the GIL); skip or raise on bad files."""
        with ThreadPoolExecutor(max(1, workers)) as pool:
            results = list(pool.map(self._try_load, self.samples))
        # Images are scaled by their dtype's range in training: a 16-bit image among 8-bit ones would be
        # silently mis-scaled, so the minority bit depth is refused by name.
        dtypes = Counter(r[0].dtype for r in results if not isinstance(r, DataError))
        if len(dtypes) > 1:
            main_dtype = dtypes.most_common(1)[0][0]
            results = [DataError(f"{smp.image}: pixel type {r[0].dtype} differs from the dataset's {main_dtype}; "
                                 "convert all images to one bit depth")
                       if not isinstance(r, DataError) and r[0].dtype != main_dtype else r
                       for smp, r in zip(self.samples, results)]
        bad = [(s, r) for s, r in zip(self.samples, results) if isinstance(r, DataError)]
        if bad and on_error != "skip":
            shown = "\n  ".join(str(e) for _, e in bad[:10])
            more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
            which = f"the {len(self.samples)} {self.split}" if self.split else str(len(self.samples))
            raise DataError(f"{len(bad)} of {which} samples cannot be used:\n  {shown}{more}\n"
                            "Fix or remove them, or pass on_error=skip to leave them out (`seglab data check` lists "
                            "every problem of the data at once)")
        for _, err in bad:
            warnings.warn(f"skipped: {err}", stacklevel=2)
        good = [(s, r) for s, r in zip(self.samples, results) if not isinstance(r, DataError)]
        if not good:
            raise DataError("no usable samples left after skipping unreadable ones")
        self.samples = [s for s, _ in good]
        self._cache = [r for _, r in good] if keep else None

    def _try_load(self, sample: Sample):
        try:
            return self.load_pair(sample)
        except DataError as e:
            return e

    def load_pair(self, sample: Sample) -> tuple[np.ndarray, np.ndarray | None]:
        """Decode one image and its mask (from file or run-length CSV), checking that their sizes agree."""
        image = load_sample_image(sample, self.view_channels or split_channels(self.in_channels, len(sample.views)))
        mask = None
        if sample.mask is not None:
            raw, _ = read_mask_raw(sample.mask)
            mask = self.codec.decode(raw, sample.mask)
            where = sample.mask
        elif self.rle is not None:
            from .rle import rle_decode

            if sample.id not in self.rle:
                raise DataError(f"{sample.image}: id {sample.id!r} has no row in the run-length CSV")
            mask = rle_decode(self.rle[sample.id] or "", image.shape[:2]).astype(np.int64)
            where = sample.image
        if mask is not None:
            if mask.shape != image.shape[:2]:
                raise DataError(f"{where}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {sample.image.name} is "
                                f"{image.shape[1]}x{image.shape[0]} (width x height); masks must match their images")
            mask = mask.astype(np.uint8 if mask.max(initial=0) < 256 and mask.min(initial=0) >= 0 else np.int64)
        return image, mask

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        image, mask = self._cache[i] if self._cache is not None else self.load_pair(self.samples[i])
        size = image.shape[:2]
        if mask is None:
            mask = np.full(image.shape[:2], self.codec.ignore_index, dtype=np.int64)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
            if image.ndim == 2:
                image = image[..., None]
        elif self.pad_to:
            image, mask, _ = pad_for_eval(image, mask, self.pad_to, self.pad_mode, self.codec.ignore_index)
        # np.require copies read-only cached arrays, which torch cannot wrap safely
        return {"image": torch.from_numpy(np.require(image.transpose(2, 0, 1), requirements=["C", "W"])),
                "mask": torch.from_numpy(np.require(mask, requirements=["C", "W"])).long(), "index": i, "size": size}

    def cached_arrays(self) -> list[tuple[np.ndarray, np.ndarray | None]] | None:
        """Decoded pairs when cached (for statistics), else None."""
        return self._cache


def pad_collate(batch: list[dict], ignore_index: int = 255) -> dict:
    """Stack a batch; differently sized items are padded (image 0, mask ignore_index) to the largest."""
    h = max(b["image"].shape[1] for b in batch)
    w = max(b["image"].shape[2] for b in batch)
    images, masks = [], []
    for b in batch:
        img, m = b["image"], b["mask"]
        dh, dw = h - img.shape[1], w - img.shape[2]
        if dh or dw:
            img = torch.nn.functional.pad(img, (0, dw, 0, dh))
            m = torch.nn.functional.pad(m, (0, dw, 0, dh), value=ignore_index)
        images.append(img)
        masks.append(m)
    return {"image": torch.stack(images), "mask": torch.stack(masks),
            "index": torch.tensor([b["index"] for b in batch]), "size": [tuple(b["size"]) for b in batch]}


def channel_stats(images: Sequence[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of images, in units of the dtype's full range (0..1)."""
    total, total_sq, count = None, None, 0
    for img in images:
        x = img.reshape(-1, img.shape[2]).astype(np.float64) / dtype_scale(img.dtype)
        total = x.sum(0) if total is None else total + x.sum(0)
        total_sq = (x**2).sum(0) if total_sq is None else total_sq + (x**2).sum(0)
        count += x.shape[0]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return [round(float(v), 6) for v in mean], [round(float(max(v, 1e-3)), 6) for v in std]


def dtype_scale(dtype: np.dtype) -> float:
    """Full-scale value of an image dtype (255 for uint8, 65535 for uint16, 1 for floats)."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0
