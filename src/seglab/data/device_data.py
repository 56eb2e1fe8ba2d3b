"""Training data on the device: decoded once into tensors there, batched and augmented there (``loader=``).

A GPU trains small datasets (TGS: 4000 x 101 x 101 = 33 MB; CamVid at 480x360: 0.2 GB) faster than CPU workers
can decode and augment them one image at a time. When the decoded training set fits in ``DEVICE_SHARE`` of the
free GPU memory and every augment name has a batched version (``batch_augment``), ``DeviceData`` holds all training
pixels and labels on the GPU and ``DeviceLoader`` serves each epoch's batches from them: the same keys in the same
order as the CPU DataLoader (it walks that loader's own batch sampler: RandomSampler seeded per epoch, the
``balance`` WeightedEpochSampler, WindowSampler draws, rank shards), then one gather and the batched augmentation.
Larger data and augment names without a batched version keep the CPU DataLoader; ``choose_loader`` says which
and why (the start log line). The same code runs on CPU tensors (``loader=device`` on a CPU), which is how it is
tested; on a CPU ``auto`` keeps the DataLoader.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .batch_augment import BatchAugment, unbatched
from .windows import Window

DEVICE_SHARE = 0.25  # the share of free GPU memory the decoded training set may take (the rest: model, batches)
MemoryProbe = Callable[[torch.device], tuple[int, int]]  # device -> (free, total) bytes


def cuda_memory(device: torch.device) -> tuple[int, int]:
    """Free and total bytes of a CUDA device (``torch.cuda.mem_get_info``)."""
    return torch.cuda.mem_get_info(device)


def storage_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype pixels are kept in: uint8 and floats as they are; other integers (uint16) as int32 (which torch
    indexes on every device; the normaliser scales by the source dtype's range all the same)."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8 or np.issubdtype(dtype, np.floating):
        return dtype
    return np.dtype(np.int32)


def label_dtype(masks: Sequence[np.ndarray | None], ignore_index: int) -> np.dtype:
    """uint8 when every label and ignore_index fit in it (a quarter of int32's memory), else int64."""
    small = 0 <= ignore_index < 256 and all(m is None or m.dtype == np.uint8 or
                                            (m.size == 0 or (int(m.min()) >= 0 and int(m.max()) < 256))
                                            for m in masks)
    return np.dtype(np.uint8 if small else np.int64)


def decoded_bytes(sizes: Sequence[tuple[int, int]], channels: int, itemsize: int = 1) -> int:
    """Bytes of a training set of these image sizes on the device: pixels and one uint8 label per pixel."""
    return sum(h * w * (channels * itemsize + 1) for h, w in sizes)


class DeviceData:
    """Every training image and mask in flat tensors on ``device`` (image i: C x H_i x W_i pixels from
    ``starts[i]``, H_i x W_i labels from ``label_starts[i]``); no padding, so images of any sizes cost their pixels.

    ``gather`` reads a batch through per-sample row and column maps (``BatchAugment.spatial_maps``).
    """

    def __init__(self, pairs: Sequence[tuple[np.ndarray, np.ndarray | None]], ignore_index: int,
                 device: torch.device | str = "cpu"):
        if not pairs:
            raise ValueError("no training images to hold on the device")
        self.device, self.ignore_index = torch.device(device), int(ignore_index)
        self.channels = int(pairs[0][0].shape[2])
        self.source_dtype = pairs[0][0].dtype
        pixel_type, label_type = storage_dtype(self.source_dtype), label_dtype([m for _, m in pairs], ignore_index)
        sizes = np.array([img.shape[:2] for img, _ in pairs], dtype=np.int64)
        areas = sizes[:, 0] * sizes[:, 1]
        label_starts = np.concatenate([[0], np.cumsum(areas)])
        self.sizes = torch.from_numpy(sizes)  # CPU: what the index maps are built from
        self.pixels = torch.empty(int(label_starts[-1]) * self.channels,
                                  dtype=torch.from_numpy(np.zeros(0, pixel_type)).dtype, device=self.device)
        self.labels = torch.empty(int(label_starts[-1]), dtype=torch.from_numpy(np.zeros(0, label_type)).dtype,
                                  device=self.device)
        for i, (image, mask) in enumerate(pairs):  # one image at a time: no second full copy in host memory
            a, b = int(label_starts[i]), int(label_starts[i + 1])
            chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=pixel_type)
            self.pixels[a * self.channels: b * self.channels].copy_(torch.from_numpy(chw.ravel()))
            labels = np.full(image.shape[:2], ignore_index, label_type) if mask is None else mask.astype(label_type)
            self.labels[a:b].copy_(torch.from_numpy(np.ascontiguousarray(labels).ravel()))
        self.label_starts = torch.from_numpy(label_starts[:-1]).to(self.device)
        self.heights = self.sizes[:, 0].to(self.device)
        self.widths = self.sizes[:, 1].to(self.device)

    @classmethod
    def from_dataset(cls, ds, device: torch.device | str) -> "DeviceData":
        """A SegmentationDataset's training pairs (its RAM cache, else each pair decoded once)."""
        pairs = ds.cached_arrays()
        if pairs is None:
            pairs = [ds.load_pair(s) for s in ds.samples]
        return cls(pairs, ds.codec.ignore_index, device)

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def nbytes(self) -> int:
        """Device memory the pixels and labels take."""
        return self.pixels.numel() * self.pixels.element_size() + self.labels.numel() * self.labels.element_size()

    def gather(self, index: torch.Tensor, top: torch.Tensor, left: torch.Tensor, rows: torch.Tensor,
               cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch (image N,C,H,W in the stored dtype, mask N,H,W int64) of images ``index``: pixel (y, x) of sample
        n is stored pixel (top + rows[n, y], left + cols[n, x]); a FILL (negative) entry reads image 0 and
        mask ignore_index. All arguments on this data's device."""
        # Offsets are summed on the small (N, H) and (N, W) tensors and broadcast once to the batch's pixels, and
        # read with index_select (several times faster than advanced indexing on a CPU).
        n, h, w = len(index), rows.shape[1], cols.shape[1]
        width, start = self.widths[index], self.label_starts[index]
        row_offset = (top[:, None] + rows.clamp(min=0)) * width[:, None]  # (N, H)
        col_offset = left[:, None] + cols.clamp(min=0)  # (N, W)
        where = ((start[:, None] + row_offset)[:, :, None] + col_offset[:, None, :]).flatten()
        mask = self.labels.index_select(0, where).view(n, h, w).long()
        plane = torch.arange(self.channels, device=self.device)[None, :] * (self.heights[index] * width)[:, None]
        first = start[:, None] * self.channels + plane  # (N, C): where each channel plane of the image starts
        where = ((first[:, :, None] + row_offset[:, None, :])[..., None] + col_offset[:, None, None, :]).flatten()
        image = self.pixels.index_select(0, where).view(n, self.channels, h, w)
        if bool((rows < 0).any()) or bool((cols < 0).any()):  # FILL entries: padding without pixels
            outside = (rows < 0)[:, :, None] | (cols < 0)[:, None, :]
            mask.masked_fill_(outside, self.ignore_index)
            image.masked_fill_(outside[:, None], 0)
        return image, mask


def sample_boxes(keys: Sequence[Any], sizes: torch.Tensor) -> torch.Tensor:
    """(N, 5) image index, top, left, height, width of each key: a Window, or an image index (the whole image)."""
    boxes = []
    for key in keys:
        if isinstance(key, Window):
            boxes.append((key.index, key.y, key.x, key.h, key.w))
        else:
            h, w = sizes[int(key)].tolist()
            boxes.append((int(key), 0, 0, h, w))
    return torch.tensor(boxes, dtype=torch.long)


class DeviceLoader:
    """One epoch's training batches from DeviceData, in exactly the order of a CPU DataLoader's batch sampler.

    Iterates ``batch_sampler`` (the CPU loader's: the same keys, shards and drop_last), gathers each batch on the
    device and augments it with ``augment`` drawing from ``generator``. Yields the dicts pad_collate makes:
    image, mask, index and size (the image's size, or the window's).
    """

    def __init__(self, data: DeviceData, batch_sampler, augment: BatchAugment, generator: torch.Generator,
                 batch_size: int, drop_last: bool, sampler=None):
        self.data, self.batch_sampler, self.augment, self.generator = data, batch_sampler, augment, generator
        self.batch_size, self.drop_last, self.sampler = batch_size, drop_last, sampler

    @classmethod
    def like(cls, loader, data: DeviceData, augment: BatchAugment, seed: int) -> "DeviceLoader":
        """The device-resident twin of a (not yet iterated) CPU DataLoader, augmenting with a generator seeded by
        ``seed`` (a run passes its seed + epoch, so a resumed epoch draws what it would have drawn)."""
        return cls(data, loader.batch_sampler, augment, torch.Generator().manual_seed(int(seed)),
                   loader.batch_size, loader.drop_last, loader.sampler)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[dict]:
        for keys in self.batch_sampler:
            yield self.batch(keys)

    def batch(self, keys: Sequence[Any]) -> dict:
        """The augmented batch of these sampler keys."""
        data = self.data
        boxes = sample_boxes(keys, data.sizes)
        rows, cols = self.augment.spatial_maps(boxes[:, 3:], self.generator)
        on = boxes.to(data.device)
        image, mask = data.gather(on[:, 0], on[:, 1], on[:, 2], rows.to(data.device), cols.to(data.device))
        image, mask = self.augment.finish(image, mask, self.generator)
        sizes = [tuple(data.sizes[i].tolist()) for i in boxes[:, 0]] if not isinstance(keys[0], Window) else \
            [(int(b[3]), int(b[4])) for b in boxes]
        return {"image": image, "mask": mask, "index": boxes[:, 0], "size": sizes}


@dataclass
class LoaderChoice:
    """Which training data path a run takes (``device``: DeviceData + DeviceLoader; ``cpu``: the DataLoader),
    and the words the start log line gives for it."""

    path: str
    reason: str
    fallback: str = ""  # why loader=device was asked for but not taken (a note in the log)

    @property
    def on_device(self) -> bool:
        """True for the device-resident path."""
        return self.path == "device"


def _size(nbytes: float) -> str:
    """Bytes for the log: 33 MB, 1.5 GB, 139 GB."""
    if nbytes >= 10e9:
        return f"{nbytes / 1e9:.0f} GB"
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e9 else f"{max(1, round(nbytes / 1e6))} MB"


def choose_loader(mode: str, device: torch.device, names: Sequence[str], nbytes: int, square: bool = True,
                  memory_probe: MemoryProbe | None = None, share: float = DEVICE_SHARE) -> LoaderChoice:
    """``loader=auto|device|cpu`` for a training set of ``nbytes`` decoded on ``device`` with augment ``names``.

    auto takes the device only on CUDA, when the data fit in ``share`` of the free memory ``memory_probe`` reports
    (``torch.cuda.mem_get_info`` by default; tests inject one) and every augment has a batched version; a CPU keeps
    the DataLoader (not measured faster there). device takes it on any device, CPU included, unless an augment
    has no batched version (then the CPU loader, with a note).
    """
    if mode == "cpu":
        return LoaderChoice("cpu", "loader=cpu")
    if mode == "auto" and device.type != "cuda":
        return LoaderChoice("cpu", f"auto takes the device path on CUDA only; loader=device takes it on {device.type}")
    missing = unbatched(names, square)
    if missing:
        why = "; ".join(f"augment '{name}' {reason}" for name, reason in missing.items())
        return LoaderChoice("cpu", why, fallback=why if mode == "device" else "")
    if mode == "device":
        return LoaderChoice("device", f"{device.type}, {_size(nbytes)}, loader=device")
    free, _ = (memory_probe or cuda_memory)(device)
    if nbytes > share * free:
        return LoaderChoice("cpu", f"{_size(nbytes)} decoded exceed {share:.0%} of the {_size(free)} free on "
                                   f"{device.type}")
    return LoaderChoice("device", f"{device.type}, {_size(nbytes)} of {_size(free)} free")


def data_line(choice: LoaderChoice, augment: BatchAugment | None, workers: int) -> str:
    """The start log line: ``data: on the device (cuda, 33 MB of 139 GB free), batched augmentation: hflip`` or
    ``data: CPU loader, 4 workers (augment 'noise' has no batched version)``."""
    if choice.on_device:
        return f"data: on the device ({choice.reason}), batched augmentation: " \
               f"{augment.describe() if augment is not None else 'none'}"
    return f"data: CPU loader, {workers} worker{'s' if workers != 1 else ''} ({choice.reason})"
